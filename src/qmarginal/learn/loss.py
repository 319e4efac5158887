"""The training loss of Eq. (6) and a polar factor with gradients that stay finite.

For the network output Z (a complex matrix) with polar decomposition Z = U P (U unitary, P PSD),

    L = w_psd [ MSE(Re U, 1) + MSE(Im U, 0) ] + w_marg sum_J MSE(tr_{J^c} Z, sigma_J)
        + w_trace |tr Z - 1|^2                                                      (6)

"model1" is the full Eq. (6), "model2" drops the marginal term; the trace term is optional
(weight 0 by default, as the paper). MSE is the mean over matrix entries (and over the batch);
for the complex marginals it is the mean of |z_J - sigma_J|^2 = (Re)^2 + (Im)^2. If Z is PSD and
nonsingular, U = 1 and the two PSD terms vanish.

Beyond the paper, an optional term (weight 0 by default)

    w_neg sum_i min(0, D lambda_i(herm Z) - m)^2,   herm Z = (Z + Z^dagger)/2,

the squared Frobenius distance of D herm(Z) - m to the PSD cone, pushes each negative eigenvalue
up in proportion to how negative it is; its gradient V diag(2 D min(0, D lambda - m)) V^dagger
involves no eigenvalue differences. The polar terms cannot do this: at a Hermitian Z,
U = sign(Z) and W^dagger G V is real diagonal for G = dL/dU, so Omega = 0 and their gradient
vanishes exactly, however negative Z's eigenvalues (tested); they act only through Z's
non-Hermitian part. The margin m >= 0 (``negative_margin``) asks for eigenvalues of at least
m / D, so that outputs pass the strict validity test lambda_min >= -1e-10 rather than hovering
just below zero.

Polar factor and its gradient. With the SVD Z = W S V^dagger, U = W V^dagger. Its differential
is dU = W Omega V^dagger with Omega_ij = (M - M^dagger)_ij / (s_i + s_j), M = W^dagger dZ V
(from Omega P + P Omega = U^dagger dZ - dZ^dagger U). Only sums s_i + s_j appear, never the
differences s_i - s_j that make the generic SVD backward blow up for (nearly) degenerate singular
values. The backward pass (the adjoint for the real inner product Re tr(A^dagger B), torch's
convention for complex tensors) is

    grad_Z = W [ ((W^dagger G V) - (W^dagger G V)^dagger) o K ] V^dagger,
    K_ij = 1 / max(s_i + s_j, eps * s_max, machine epsilon),

implemented in :class:`PolarFactor`. The clamp ``eps`` (relative to the largest singular value)
only acts when two singular values are both (nearly) zero, where the polar factor is not unique
and its derivative is unbounded: the gradient is then finite, of size at most 1/eps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..errors import MarginalError
from ..partial_trace import partial_trace
from .encoding import from_channels

__all__ = ["polar_unitary", "PolarFactor", "CDAELoss", "LOSSES"]

LOSSES = ("model1", "model2")


class PolarFactor(torch.autograd.Function):
    """U = W V^dagger from Z = W S V^dagger, with the backward of the module docstring."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, eps: float):
        w, s, vh = torch.linalg.svd(z)
        u = w @ vh
        ctx.save_for_backward(w, s, vh)
        ctx.eps = eps
        return u

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        w, s, vh = ctx.saved_tensors
        v = vh.mH
        # s is sorted descending: s[..., :1] is the largest singular value
        floor = (ctx.eps * s[..., :1]).clamp_min(torch.finfo(s.dtype).eps)
        k = 1.0 / torch.maximum(s[..., :, None] + s[..., None, :], floor[..., None])
        a = w.mH @ g @ v
        omega = (a - a.mH) * k.to(a.dtype)
        return w @ omega @ vh, None


def polar_unitary(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The unitary polar factor U of Z = U P, batched, with gradients finite for any spectrum.

    Args:
        z: complex tensor ``(*batch, D, D)``.
        eps: smallest value of s_i + s_j in the backward, relative to the largest singular value.

    Example:
        >>> z = torch.diag(torch.tensor([2.0, -1.0], dtype=torch.complex128))
        >>> polar_unitary(z).real
        tensor([[ 1.,  0.],
                [ 0., -1.]], dtype=torch.float64)
    """
    return PolarFactor.apply(z, eps)


class CDAELoss(torch.nn.Module):
    """Eq. (6): PSD terms through the polar factor, the marginal term, an optional trace term.

    Args:
        subsets: the subsets J whose marginals enter the marginal term.
        dims: local dimensions (int or one per site).
        kind: "model1" (with the marginal term) or "model2" (without).
        weights: per-term weights, keys "psd_re", "psd_im", "marginals", "trace", "negative"
            (defaults 1, 1, 1, 0, 0).
        eps: the polar factor's gradient floor (see :func:`polar_unitary`).
        negative_margin: the margin m of the "negative" term.
        dtype: complex dtype the loss is computed in (complex64 by default; the network's output
            is float32).

    ``forward(z, sigma)`` takes the network output ``z`` ``(B, 2, D, D)`` and the target marginals
    ``sigma`` ``(B, M, d_J, d_J)`` (in the order of ``subsets``) or a dict {J: (B, d_J, d_J)}, and
    returns ``(total, terms)``: the scalar loss and a dict of the detached weighted terms.

    Raises:
        MarginalError: unknown kind or weight name.
    """

    TERMS = ("psd_re", "psd_im", "marginals", "trace", "negative")

    def __init__(self, subsets: Sequence[Sequence[int]], dims=2, *, kind: str = "model1",
                 weights: Mapping[str, float] | None = None, eps: float = 1e-6,
                 negative_margin: float = 0.0, dtype: torch.dtype = torch.complex64):
        super().__init__()
        if kind not in LOSSES:
            raise MarginalError(f"loss must be one of {LOSSES}, got {kind!r}")
        w = {"psd_re": 1.0, "psd_im": 1.0, "marginals": 1.0, "trace": 0.0, "negative": 0.0}
        for key, val in (weights or {}).items():
            if key not in w:
                raise MarginalError(f"unknown loss term {key!r}; terms are {self.TERMS}")
            w[key] = float(val)
        if kind == "model2":
            w["marginals"] = 0.0
        self.subsets = [tuple(J) for J in subsets]
        self.dims, self.kind, self.weights, self.eps, self.dtype = dims, kind, w, eps, dtype
        self.negative_margin = float(negative_margin)

    def forward(self, z: torch.Tensor, sigma) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        Z = from_channels(z).to(self.dtype)
        D = Z.shape[-1]
        terms: dict[str, torch.Tensor] = {}
        if self.weights["psd_re"] or self.weights["psd_im"]:
            U = polar_unitary(Z, self.eps)
            eye = torch.eye(D, dtype=U.real.dtype, device=U.device)
            terms["psd_re"] = self.weights["psd_re"] * (U.real - eye).square().mean()
            terms["psd_im"] = self.weights["psd_im"] * U.imag.square().mean()
        if self.weights["marginals"]:
            total = Z.real.new_zeros(())
            for i, J in enumerate(self.subsets):
                s = sigma[J] if isinstance(sigma, Mapping) else sigma[:, i]
                diff = partial_trace(Z, J, self.dims) - s.to(Z.dtype)
                total = total + (diff.real.square() + diff.imag.square()).mean()
            terms["marginals"] = self.weights["marginals"] * total
        if self.weights["trace"]:
            tr = Z.diagonal(dim1=-2, dim2=-1).sum(-1)
            terms["trace"] = self.weights["trace"] * ((tr.real - 1).square() + tr.imag.square()).mean()
        if self.weights["negative"]:
            lam = torch.linalg.eigvalsh(0.5 * (Z + Z.mH)) * D
            neg = (lam - self.negative_margin).clamp_max(0)
            terms["negative"] = self.weights["negative"] * neg.square().sum(-1).mean()
        loss = sum(terms.values())
        return loss, {k: v.detach() for k, v in terms.items()}
