"""Error classes of qmarginal."""

from __future__ import annotations

__all__ = ["MarginalError", "IncompatibleMarginalsError"]


class MarginalError(ValueError):
    """Invalid input: a marginal, a subset of sites, dimensions or a tolerance.

    The message names what was wrong, which marginal (by its subset of sites) and the value.
    """


class IncompatibleMarginalsError(MarginalError):
    """No global state has the given marginals.

    Attributes:
        result: the compatibility result (certificate and least-squares answer), when one was
            computed.
    """

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result
