"""Factored states rho = V V^dagger / tr(V V^dagger), V of D x r, without the D x D matrix.

A factored state is positive semidefinite by construction, so its certificate is its trace and
its marginals, both computed from V: tr_{J^c}(V V^dagger) = V~_J V~_J^dagger with V~_J the
d_J x (d_{J^c} r) regrouping of V (sites J first). Memory O(D r + d_J^2), time O(D r d_J) per
marginal: at N = 20 qubits and r = 1, V holds 16 MiB where rho would hold 16 TiB.

:func:`factor_marginal` contracts V with its conjugate over the complement of J by
``numpy.tensordot`` on the site tensor: an implementation independent of the solver's
regroup-and-multiply (:class:`qmarginal.solvers.matrix_free.FactorMaps`), used to certify.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._sites import complement, normalize_dims, subset_dim
from .errors import MarginalError

__all__ = ["factor_marginal", "regrouped", "regroup_order", "FactoredState", "DENSE_MAX_BYTES"]

#: The largest dense state :meth:`FactoredState.state` materialises by default (1 GiB:
#: D = 8192 in complex128).
DENSE_MAX_BYTES = 1 << 30


def _dims_of(v, dims) -> tuple:
    shape = np.shape(v)
    if len(shape) not in (1, 2):
        raise MarginalError(f"a factor must have shape (D,) or (D, r), got {shape}")
    try:
        return tuple(normalize_dims(dims, total_dim=shape[0]))
    except MarginalError as exc:
        raise MarginalError(f"a factor of shape {shape} does not fit dims {dims}: {exc}") from None


def _site_tensor(v: np.ndarray, dims: tuple) -> np.ndarray:
    D = math.prod(dims)
    v = np.asarray(v)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2 or v.shape[0] != D:
        raise MarginalError(f"a factor must have shape (D, r) with D = {D} for dims {dims}, "
                            f"got {v.shape}")
    return v.reshape(dims + (v.shape[1],))


def factor_marginal(v, keep: Sequence[int], dims) -> np.ndarray:
    """tr_{J^c}(V V^dagger) for J = ``keep`` (sorted sites, the core's ordering), from V alone.

    Args:
        v: the factor, ``(D,)`` (a vector) or ``(D, r)``, numpy.
        keep: the sites J kept.
        dims: site dimensions (their product is D).

    Returns:
        ``(d_J, d_J)`` complex128 (not normalised: its trace is ||V||_F^2).
    """
    dims = _dims_of(v, dims)
    t = _site_tensor(np.asarray(v, dtype=np.complex128), dims)
    n = len(dims)
    J = tuple(sorted(int(s) for s in keep))
    traced = tuple(complement(J, n)) + (n,)  # the complement and the column index
    m = np.tensordot(t, t.conj(), axes=(traced, traced))  # axes: J (row), J (column)
    dJ = subset_dim(J, dims)
    return m.reshape(dJ, dJ)


def regroup_order(keep: Sequence[int], n: int) -> tuple:
    """Axis order of the site tensor of V (N site axes, then the column axis) that puts the
    sites J first: V~_J = V.reshape(dims + (r,)).transpose(order).reshape(d_J, -1)."""
    J = tuple(sorted(int(s) for s in keep))
    return J + tuple(complement(J, n)) + (n,)


def regrouped(v, keep: Sequence[int], dims) -> np.ndarray:
    """V as the d_J x (d_{J^c} r) matrix A with tr_{J^c}(V V^dagger) = A A^dagger."""
    dims = _dims_of(v, dims)
    t = _site_tensor(np.asarray(v, dtype=np.complex128), dims)
    return t.transpose(regroup_order(keep, len(dims))).reshape(subset_dim(keep, dims), -1)


@dataclass
class FactoredState:
    """rho = V V^dagger / ||V||_F^2 held as its factor.

    Attributes:
        factor: V, ``(D, r)`` numpy complex128.
        dims: site dimensions.
    """

    factor: np.ndarray
    dims: tuple
    _trace: float | None = field(default=None, repr=False)

    def __post_init__(self):
        self.dims = _dims_of(self.factor, self.dims)
        self.factor = np.asarray(self.factor, dtype=np.complex128)
        if self.factor.ndim == 1:
            self.factor = self.factor[:, None]
        _site_tensor(self.factor, self.dims)

    @property
    def dim(self) -> int:
        return self.factor.shape[0]

    @property
    def rank(self) -> int:
        """Columns of V (an upper bound on the rank of rho)."""
        return self.factor.shape[1]

    @property
    def trace(self) -> float:
        """tr(V V^dagger) = ||V||_F^2 (before normalising)."""
        if self._trace is None:
            self._trace = float(np.vdot(self.factor, self.factor).real)
        return self._trace

    def marginal(self, keep: Sequence[int]) -> np.ndarray:
        """tr_{J^c} rho (normalised to trace 1)."""
        return factor_marginal(self.factor, keep, self.dims) / self.trace

    def state(self, max_bytes: int = DENSE_MAX_BYTES) -> np.ndarray:
        """The dense rho, ``(D, D)``, only within ``max_bytes`` (complex128)."""
        need = 16 * self.dim * self.dim
        if need > max_bytes:
            raise MarginalError(
                f"the dense state needs {need / 2**30:.3g} GiB (D = {self.dim}), above "
                f"max_bytes = {max_bytes / 2**30:.3g} GiB; use .factor (D x {self.rank}) or "
                f".marginal(J), or pass a larger max_bytes")
        v = self.factor
        return (v @ v.conj().T) / self.trace
