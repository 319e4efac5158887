"""Index-cached marginal maps for the inner loops of the exact solver (torch only).

The solver applies the same partial traces, embeddings and MIO projection thousands of times to
matrices of one shape. :class:`MarginalMaps` builds, once per problem structure, the flat
indices of the entries that each partial trace sums (taken from the core's strided view
:func:`qmarginal.partial_trace.traced_diagonal` applied to ``arange``, so the site convention is
the core's), and then evaluates

    tr_{J^c} X            = gather + sum          (all subsets of one size in one call)
    sum_J Delta_J (x) 1   = one scatter-add       (the adjoint of the partial traces)
    Q_J (the MIO step)    = gather + sum + scatter-add, composed over J (== ``impose``)

with a handful of torch calls per group of equally sized subsets. Results agree with
``partial_trace`` / ``embed`` / ``impose`` to rounding (tested in tests/test_exact.py).
"""

from __future__ import annotations

import math

from ..partial_trace import site_tensor, traced_diagonal
from .._sites import complement, subset_dim


class MarginalMaps:
    """Partial traces, their adjoint and the MIO projection for fixed dims and subsets.

    Args:
        dims: local dimensions, one per site.
        subsets: the sorted subsets J.
        sigmas: the marginals as torch tensors ``(B, d_J, d_J)`` (one per subset, same order).
        torch: the torch module; device and complex dtype follow ``sigmas``.
    """

    def __init__(self, dims, subsets, sigmas, torch):
        self.torch = torch
        self.dims = tuple(dims)
        self.D = math.prod(self.dims)
        n = len(self.dims)
        D = self.D
        s0 = sigmas[0]
        self.device = s0.device
        self.B = s0.shape[0]
        ar = torch.arange(D * D, device=self.device).reshape(D, D)
        t = site_tensor(ar, self.dims)
        self.items = []  # per subset: (J, idx (dJ*dJ, dc), sigma (B, dJ*dJ), dc)
        for J, sig in zip(subsets, sigmas):
            traced = complement(J, n)
            dJ = subset_dim(J, self.dims)
            dc = D // dJ
            if traced:
                v, _, _ = traced_diagonal(t, traced, n)
                idx = v.reshape(dJ * dJ, dc).contiguous()
            else:
                idx = ar.reshape(D * D, 1)
            self.items.append((J, idx, sig.reshape(self.B, dJ * dJ), dc))
        groups: dict = {}
        for J, idx, sig, dc in self.items:
            groups.setdefault(idx.shape, []).append((idx, sig, J))
        # equally sized subsets stacked: idx (M, dJ*dJ, dc), sigma (B, M, dJ*dJ)
        self.groups = [(torch.stack([i for i, _, _ in g]), torch.stack([s for _, s, _ in g], 1))
                       for g in groups.values()]
        #: the subsets of each group, in the order of its stacked axis
        self.group_subsets = [[J for _, _, J in g] for g in groups.values()]

    def select(self, keep) -> "MarginalMaps":
        """The same maps for the batch elements ``keep`` (index tensor)."""
        out = object.__new__(MarginalMaps)
        out.__dict__.update(self.__dict__)
        out.B = len(keep)
        out.items = [(J, idx, sig[keep], dc) for J, idx, sig, dc in self.items]
        out.groups = [(idx, sig[keep]) for idx, sig in self.groups]
        return out

    # ------------------------------------------------------------------ all subsets at once
    def ptrace(self, x):
        """[(B, M_g, dJ*dJ) partial traces of x (B, D, D)] per group."""
        flat = x.reshape(x.shape[0], -1)
        return [flat[:, idx].sum(-1) for idx, _ in self.groups]

    def residual(self, x):
        """[tr_{J^c} x - sigma_J] per group."""
        return [p - sig for p, (_, sig) in zip(self.ptrace(x), self.groups)]

    def adjoint(self, deltas):
        """sum_J Delta_J (x) 1_{J^c} as (B, D, D) (the adjoint of the stacked partial traces)."""
        torch = self.torch
        Bn = deltas[0].shape[0]
        out = torch.zeros((Bn, self.D * self.D), dtype=deltas[0].dtype, device=self.device)
        for dlt, (idx, _) in zip(deltas, self.groups):
            src = dlt[..., None].expand(dlt.shape + (idx.shape[-1],)).reshape(Bn, -1)
            out.index_add_(1, idx.reshape(-1), src)
        return out.reshape(Bn, self.D, self.D)

    # ------------------------------------------------------------------ the MIO projection
    def _compose(self, x, with_sigma: bool):
        out = x.clone().reshape(x.shape[0], -1)
        Bn = out.shape[0]
        for _, idx, sig, dc in self.items:
            v = out[:, idx].sum(-1)
            if with_sigma:
                v = v - sig
            v = v * (1.0 / dc)
            out.index_add_(1, idx.reshape(-1), -v[..., None].expand(Bn, idx.shape[0], dc)
                           .reshape(Bn, -1))
        return out.reshape(x.shape)

    def project(self, x):
        """P_A(x): the MIO composition (same as ``impose(x, problem)``)."""
        return self._compose(x, True)

    def tangent(self, x):
        """P_T(x) = P_A(x) - P_A(0): the projection onto {X : every tr_{J^c} X = 0}."""
        return self._compose(x, False)

    def deviation(self, x):
        """max_J max |tr_{J^c} x - sigma_J| per batch element, (B,)."""
        devs = [r.abs().amax(dim=(-2, -1)) for r in self.residual(x)]
        return self.torch.stack(devs).amax(0)
