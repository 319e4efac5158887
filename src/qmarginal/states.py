"""Random quantum states: Haar pure states, the paper's rank-r mixtures, Hilbert-Schmidt and
Bures random density matrices.

Every function takes ``seed: int | numpy.random.Generator | torch.Generator | None``, normalised
once by :func:`rng_from_seed`. A numpy seed gives numpy arrays; a ``torch.Generator`` gives torch
tensors on the generator's device. ``batch`` prepends batch axes; ``dtype`` picks the complex
precision (complex128 by default, complex64 accepted).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _backend as B
from .errors import MarginalError

__all__ = [
    "rng_from_seed",
    "haar_ket",
    "haar_pure_state",
    "haar_unitary",
    "hilbert_schmidt_state",
    "bures_state",
    "rank_mixture_state",
]


def rng_from_seed(seed: Any = None):
    """One random generator from ``seed``: int / None / numpy Generator -> numpy Generator;
    a ``torch.Generator`` is returned as it is.

    Raises:
        MarginalError: any other type.
    """
    if seed is None or isinstance(seed, (int, np.integer)):
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    if type(seed).__module__.startswith("torch") and type(seed).__name__ == "Generator":
        return seed
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    raise MarginalError(
        f"seed must be an int, None, a numpy Generator or a torch Generator, got {type(seed).__name__}"
    )


def _is_torch_rng(rng) -> bool:
    return not isinstance(rng, np.random.Generator)


def _batch(batch) -> tuple[int, ...]:
    if batch is None:
        return ()
    if isinstance(batch, (int, np.integer)):
        return (int(batch),)
    return tuple(int(b) for b in batch)


def _complex_dtype(rng, dtype):
    if _is_torch_rng(rng):
        torch = B.torch_module()
        if dtype is None:
            return torch.complex128
        if isinstance(dtype, torch.dtype):
            return dtype
        return {np.dtype(np.complex64): torch.complex64,
                np.dtype(np.complex128): torch.complex128}[np.dtype(dtype)]
    if dtype is None:
        return np.dtype(np.complex128)
    if B.is_torch(dtype) or type(dtype).__module__.startswith("torch"):
        return np.dtype(str(dtype).replace("torch.", ""))
    dt = np.dtype(dtype)
    if dt not in (np.complex64, np.complex128):
        raise MarginalError(f"dtype must be complex64 or complex128, got {dt}")
    return dt


def _ginibre(shape, rng, dtype):
    """Matrix of iid standard complex Gaussians (E|g|^2 = 1)."""
    if _is_torch_rng(rng):
        torch = B.torch_module()
        return torch.randn(shape, generator=rng, dtype=dtype, device=rng.device)
    real = np.float32 if dtype == np.complex64 else np.float64
    g = rng.standard_normal(shape + (2,), dtype=real)
    return ((g[..., 0] + 1j * g[..., 1]) / np.sqrt(2)).astype(dtype)


def _check_dim(dim: int, rank: int | None = None) -> tuple[int, int]:
    dim = int(dim)
    if dim < 1:
        raise MarginalError(f"dimension must be >= 1, got {dim}")
    r = dim if rank is None else int(rank)
    if not 1 <= r <= dim:
        raise MarginalError(f"rank must be between 1 and the dimension {dim}, got {rank}")
    return dim, r


def _normalize_trace(m):
    tr = B.real(B.trace(m))
    return m / tr[..., None, None]


def haar_ket(dim: int, *, batch=None, seed=None, dtype=None):
    """Haar-random unit vectors |psi> in C^dim, shape ``(*batch, dim)``."""
    dim, _ = _check_dim(dim)
    rng = rng_from_seed(seed)
    g = _ginibre(_batch(batch) + (dim,), rng, _complex_dtype(rng, dtype))
    norm = (g.abs() ** 2).sum(-1, keepdim=True).sqrt() if B.is_torch(g) else \
        np.linalg.norm(g, axis=-1, keepdims=True)
    return g / norm


def haar_pure_state(dim: int, *, batch=None, seed=None, dtype=None):
    """Haar-random pure states |psi><psi|, shape ``(*batch, dim, dim)``."""
    psi = haar_ket(dim, batch=batch, seed=seed, dtype=dtype)
    return psi[..., :, None] * psi.conj()[..., None, :]


def haar_unitary(dim: int, *, batch=None, seed=None, dtype=None):
    """Haar-random unitaries (QR of a Ginibre matrix with the phases of R's diagonal fixed)."""
    dim, _ = _check_dim(dim)
    rng = rng_from_seed(seed)
    g = _ginibre(_batch(batch) + (dim, dim), rng, _complex_dtype(rng, dtype))
    if B.is_torch(g):
        torch = B.torch_module()
        q, r = torch.linalg.qr(g)
        d = r.diagonal(dim1=-2, dim2=-1)
    else:
        q, r = np.linalg.qr(g)
        d = np.diagonal(r, axis1=-2, axis2=-1)
    return q * (d / B.abs_(d))[..., None, :]


def hilbert_schmidt_state(dim: int, rank: int | None = None, *, batch=None, seed=None, dtype=None):
    """Hilbert-Schmidt random density matrix of the given rank: G G^dagger / tr(G G^dagger),
    G a dim x rank Ginibre matrix (the induced measure; rank = dim gives the HS measure)."""
    dim, r = _check_dim(dim, rank)
    rng = rng_from_seed(seed)
    g = _ginibre(_batch(batch) + (dim, r), rng, _complex_dtype(rng, dtype))
    return _normalize_trace(g @ B.dagger(g))


def bures_state(dim: int, rank: int | None = None, *, batch=None, seed=None, dtype=None):
    """Bures random density matrix: (1 + U) G G^dagger (1 + U)^dagger, normalised, with U Haar
    and G a dim x rank Ginibre matrix (rank = dim gives the Bures measure)."""
    dim, r = _check_dim(dim, rank)
    rng = rng_from_seed(seed)
    dt = _complex_dtype(rng, dtype)
    u = haar_unitary(dim, batch=batch, seed=rng, dtype=dt)
    g = _ginibre(_batch(batch) + (dim, r), rng, dt)
    a = (u + B.eye(dim, like=u)) @ g
    return _normalize_trace(a @ B.dagger(a))


def rank_mixture_state(dim: int, rank: int | None = None, *, r_min: int = 1, batch=None,
                       seed=None, dtype=None, return_rank: bool = False):
    """The paper's random states (Section IV A): rho = sum_{i=1}^r p_i |psi_i><psi_i|.

    i) r uniform in {r_min, ..., dim} (unless ``rank`` is given); ii) p uniform on the
    probability simplex (a flat Dirichlet draw); iii) r independent Haar pure states.
    The states |psi_i> are almost surely linearly independent, so rho has rank r.

    Args:
        dim: Hilbert-space dimension (2**N for N qubits).
        rank: fixed rank, or None to draw it per sample.
        r_min: smallest rank drawn when ``rank`` is None.
        return_rank: also return the ranks, an int array of shape ``batch``.

    Raises:
        MarginalError: rank or r_min outside 1..dim.
    """
    dim, _ = _check_dim(dim, rank)
    _check_dim(dim, r_min)
    rng = rng_from_seed(seed)
    dt = _complex_dtype(rng, dtype)
    bshape = _batch(batch)
    if _is_torch_rng(rng):
        torch = B.torch_module()
        if rank is None:
            ranks = torch.randint(r_min, dim + 1, bshape, generator=rng, device=rng.device)
        else:
            ranks = torch.full(bshape, int(rank), device=rng.device)
        rdt = torch.float32 if dt == torch.complex64 else torch.float64
        e = torch.empty(bshape + (dim,), dtype=rdt, device=rng.device).exponential_(generator=rng)
        idx = torch.arange(dim, device=rng.device)
        e = torch.where(idx < ranks[..., None], e, torch.zeros_like(e))
    else:
        ranks = rng.integers(r_min, dim + 1, size=bshape) if rank is None else \
            np.full(bshape, int(rank))
        rdt = np.float32 if dt == np.complex64 else np.float64
        e = rng.standard_exponential(bshape + (dim,)).astype(rdt)
        e = np.where(np.arange(dim) < np.asarray(ranks)[..., None], e, 0.0)
    p = e / e.sum(-1, keepdims=True) if not B.is_torch(e) else e / e.sum(-1, keepdim=True)
    psi = haar_ket(dim, batch=bshape + (dim,), seed=rng, dtype=dt)  # (*batch, r_max, dim)
    psi_t = B.dagger(psi).conj()  # columns are the kets: (*batch, dim, r_max)
    rho = (psi_t * p[..., None, :].to(dt) if B.is_torch(p) else psi_t * p[..., None, :]) @ B.dagger(psi_t)
    rho = B.hermitian_part(rho)
    return (rho, ranks) if return_rank else rho
