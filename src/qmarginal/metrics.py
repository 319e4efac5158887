"""Distances between states and the paper's validity (success) test.

All functions are batched over leading axes and keep the input's library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backend as B

__all__ = ["fidelity", "trace_distance", "state_report", "StateReport", "psd_sqrt",
           "nearest_density_matrix", "mean_marginal_fidelity"]

#: The paper's success threshold: minimum eigenvalue >= -1e-10 after hermitising and
#: normalising the trace.
VALIDITY_ATOL = 1e-10


def psd_sqrt(rho):
    """Square root of the PSD part of the Hermitian part of ``rho``: V sqrt(max(L, 0)) V^dagger."""
    w, v = B.eigh(B.hermitian_part(B.to_complex(rho)))
    s = B.sqrt(B.clip_min(w, 0.0))
    return (v * s[..., None, :].to(v.dtype) if B.is_torch(v) else v * s[..., None, :]) @ B.dagger(v)


def fidelity(rho, sigma):
    """Uhlmann fidelity F(rho, sigma) = (tr sqrt(sqrt(rho) sigma sqrt(rho)))^2.

    Computed as the squared nuclear norm ||sqrt(rho) sqrt(sigma)||_1^2 (the singular values of
    the product of the square roots), which stays accurate for rank-deficient and nearly pure
    inputs where sqrt(sqrt(rho) sigma sqrt(rho)) loses half the digits. Both inputs are
    hermitised and their negative eigenvalues clipped; the trace is not renormalised. The result
    is clipped to [0, 1]: never NaN, never above 1.

    Args:
        rho, sigma: arrays ``(*batch, d, d)`` (batch shapes broadcast).

    Returns:
        Real array of shape ``batch`` (a float for unbatched numpy inputs).

    Example:
        >>> import numpy as np
        >>> round(float(fidelity(np.diag([1.0, 0.0]), np.eye(2) / 2)), 12)
        0.5
    """
    prod = psd_sqrt(rho) @ psd_sqrt(sigma)
    f = B.svdvals(prod).sum(-1) ** 2
    f = B.clip(B.real(f), 0.0, 1.0)
    return f if B.is_torch(f) or np.ndim(f) else float(f)


def trace_distance(rho, sigma):
    """Trace distance T = ||rho - sigma||_1 / 2 (of the Hermitian parts), batched."""
    w = B.eigvalsh(B.hermitian_part(B.to_complex(rho) - B.to_complex(sigma)))
    t = 0.5 * B.abs_(w).sum(-1)
    return t if B.is_torch(t) or np.ndim(t) else float(t)


@dataclass(frozen=True)
class StateReport:
    """The paper's validity test and the negative part of a (batch of) matrix(es).

    Attributes:
        valid: min eigenvalue >= -atol after hermitising and trace-normalising.
        min_eigenvalue: smallest eigenvalue after hermitising and trace-normalising.
        negative_count: number of eigenvalues below -atol.
        negative_sum: sum of the eigenvalues below -atol (<= 0).
        trace: real part of the trace before normalising.
        atol: the tolerance used.
    """

    valid: Any
    min_eigenvalue: Any
    negative_count: Any
    negative_sum: Any
    trace: Any
    atol: float


def state_report(rho, atol: float = VALIDITY_ATOL) -> StateReport:
    """The paper's success test: hermitise, divide by the trace, and require
    lambda_min >= -atol (default 1e-10); also count and sum the eigenvalues below -atol.

    A matrix whose trace is not positive is reported invalid (its trace is stated).
    """
    h = B.hermitian_part(B.to_complex(rho))
    tr = B.real(B.trace(h))
    safe = B.clip_min(tr, 1e-300) if not B.is_torch(tr) else tr.clamp_min(1e-30)
    w = B.eigvalsh(h) / safe[..., None]
    neg = w < -atol
    wmin = w.min(-1).values if B.is_torch(w) else w.min(-1)
    count = neg.sum(-1)
    nsum = (w * neg).sum(-1)
    valid = (wmin >= -atol) & (tr > 0)
    to = (lambda a: a) if B.is_torch(w) or np.ndim(wmin) else (lambda a: a.item())
    return StateReport(to(valid), to(wmin), to(count), to(nsum), to(tr), float(atol))


def nearest_density_matrix(x):
    """The Frobenius-closest density matrix to the Hermitian part of ``x`` after dividing by its
    trace: argmin_{rho >= 0, tr rho = 1} ||rho - X||_F, by projecting the eigenvalues onto the
    probability simplex (Smolin, Gambetta and Smith, PRL 108, 070502 (2012)).
    """
    h = B.hermitian_part(B.to_complex(x))
    tr = B.real(B.trace(h))
    h = h / tr[..., None, None]
    w, v = B.eigh(h)
    p = _simplex_projection(w)
    return (v * (p[..., None, :].to(v.dtype) if B.is_torch(v) else p[..., None, :])) @ B.dagger(v)


def _simplex_projection(w):
    """Euclidean projection of each row of w onto {p >= 0, sum p = 1} (sort-based)."""
    if B.is_torch(w):
        torch = B.torch_module()
        u = torch.sort(w, dim=-1, descending=True).values
        css = u.cumsum(-1) - 1.0
        k = torch.arange(1, w.shape[-1] + 1, device=w.device, dtype=w.dtype)
        cond = u - css / k > 0
        r = cond.sum(-1, keepdim=True) - 1  # cond holds on a prefix of the sorted values
        theta = css.gather(-1, r) / (r + 1).to(w.dtype)
        return (w - theta).clamp_min(0.0)
    u = -np.sort(-w, axis=-1)
    css = np.cumsum(u, axis=-1) - 1.0
    k = np.arange(1, w.shape[-1] + 1)
    cond = u - css / k > 0
    r = cond.sum(-1, keepdims=True) - 1  # cond holds on a prefix of the sorted values
    theta = np.take_along_axis(css, r, axis=-1) / (r + 1)
    return np.maximum(w - theta, 0.0)


def mean_marginal_fidelity(rho, problem_marginals: dict, dims=2):
    """Mean over J of F(sigma_J, tr_{J^c} rho): the paper's per-sample F-bar (Section V)."""
    from .partial_trace import partial_trace

    fs = [fidelity(sig, partial_trace(rho, J, dims)) for J, sig in problem_marginals.items()]
    if B.is_torch(fs[0]):
        torch = B.torch_module()
        return torch.stack(fs).mean(0)
    return np.mean(np.stack([np.asarray(f) for f in fs]), axis=0)
