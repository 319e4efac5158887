"""Error classes of qmarginal.

Every error the library raises on purpose derives from :class:`QMarginalError`:

- :class:`MarginalError` (also a ``ValueError``): invalid input or options (exit status 2);
- :class:`IncompatibleMarginalsError`: no state has the marginals, proved by a verified
  certificate (exit status 1);
- :class:`NotCertifiedError` (also a ``RuntimeError``): a certifying method found neither a
  certified state nor a verified certificate of incompatibility (time limit, iteration limit,
  stall, undetermined compatibility); it carries the best iterate (exit status 3).
"""

from __future__ import annotations

__all__ = ["QMarginalError", "MarginalError", "IncompatibleMarginalsError", "NotCertifiedError",
           "InsufficientMemoryError", "OutputPathError"]


class QMarginalError(Exception):
    """Base class of the errors qmarginal raises on purpose."""


class MarginalError(QMarginalError, ValueError):
    """Invalid input: a marginal, a subset of sites, dimensions, a tolerance or an option.

    The message names what was wrong, which marginal (by its subset of sites) and the value.
    """


class IncompatibleMarginalsError(MarginalError):
    """No global state has the given marginals, and a certificate proves it.

    Raised only when a certificate of incompatibility (a local Hamiltonian W whose ground
    energy exceeds the energy the marginals would give it) has been verified independently.

    Attributes:
        result: the :class:`~qmarginal.CompatibilityResult` (certificate, nearest compatible
            marginals, a state with them).
        index: the batch index of the element, for an element of a batch (else ``()``).
    """

    def __init__(self, message: str, result=None, index: tuple = ()):
        super().__init__(message)
        self.result = result
        self.index = tuple(index)


class NotCertifiedError(QMarginalError, RuntimeError):
    """A certifying method returned no certified state and incompatibility was not proved.

    Attributes:
        reason: why, in words ("time limit", "iteration limit", "stalled", "undetermined
            compatibility", ...).
        reconstruction: the best iterate as a :class:`~qmarginal.Reconstruction` (its report
            says how far from certified it is; ``report.certified`` is False).
        compatibility: the :class:`~qmarginal.CompatibilityResult` of the check that ran
            (None when none ran).
        index: the batch index of the element, for an element of a batch (else ``()``).
    """

    def __init__(self, message: str, *, reason: str = "", reconstruction=None,
                 compatibility=None, index: tuple = ()):
        super().__init__(message)
        self.reason = reason
        self.reconstruction = reconstruction
        self.compatibility = compatibility
        self.index = tuple(index)


class InsufficientMemoryError(MarginalError):
    """The requested path cannot fit in memory; refused before anything large is allocated.

    The message gives the bytes the path needs, the bytes available and what would fit (the
    matrix-free factored path at a rank, or a smaller problem). Exit status 2, like other
    input the request cannot serve.

    Attributes:
        needed, available: bytes.
    """

    def __init__(self, message: str, *, needed: int = 0, available: int = 0):
        super().__init__(message)
        self.needed = int(needed)
        self.available = int(available)


class OutputPathError(MarginalError):
    """An output file that cannot or may not be written (exit status 2).

    Raised before any work when the path is an input, a folder, an existing file that may not be
    replaced, or in a missing or read-only folder; and when writing fails (disk full, file-size
    limit), in which case the previous file under that name is left intact.

    Attributes:
        path: the output path.
    """

    def __init__(self, message: str, *, path=None):
        super().__init__(message)
        self.path = path
