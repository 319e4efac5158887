"""Shared test settings: the tolerance table per dtype (one place for every test)."""

import numpy as np
import pytest

#: absolute tolerances keyed by complex dtype name (numpy and torch names alike).
TOL = {
    "complex128": 1e-12,
    "complex64": 1e-5,
    "float64": 1e-12,
    "float32": 1e-5,
}


def tol_for(x) -> float:
    """The tolerance for an array or dtype (numpy or torch)."""
    name = str(getattr(x, "dtype", x)).replace("torch.", "")
    return TOL[name]


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
