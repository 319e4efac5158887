"""Index-cached marginal maps for the inner loops of the exact solver (torch only).

The solver applies the same partial traces, embeddings and MIO projection thousands of times to
matrices of one shape. :class:`MarginalMaps` builds, once per problem structure (cached), the
flat indices of the entries that each partial trace sums
(:func:`qmarginal.partial_trace.trace_indices`, the core's convention), and then evaluates

    tr_{J^c} X            = gather + sum          (all subsets of one size in one call)
    sum_J Delta_J (x) 1   = one scatter-add       (the adjoint of the partial traces)
    Q_J (the MIO step)    = gather + sum + scatter-add, composed over J (== ``impose``),
                            or, when cheaper, the same projection in its Moebius form (one
                            gather and one scatter per subset size; see ``_mobius_groups``)

with a handful of torch calls per group of equally sized subsets. Results agree with
``partial_trace`` / ``embed`` / ``impose`` to rounding (tested in tests/test_exact.py and tests/test_gauss_newton.py).
"""

from __future__ import annotations

import functools
import math

from ..._sites import subset_dim
from ...partial_trace import trace_indices


class _Structure:
    """The index tensors of one (dims, subsets, device): built once, shared by every problem
    with that structure (see :func:`structure`)."""

    def __init__(self, dims, subsets, torch, device, mobius_entries: int):
        self.torch = torch
        self.mobius_entries = mobius_entries
        self.dims = tuple(dims)
        self.D = math.prod(self.dims)
        self.device = device
        self._index: dict = {}
        self.items = []  # per subset: (J, idx (dJ*dJ, dc), dc)
        for J in subsets:
            idx = self.trace_index(J)
            self.items.append((J, idx, idx.shape[-1]))
        groups: dict = {}
        for pos, (J, idx, dc) in enumerate(self.items):
            groups.setdefault(idx.shape, []).append(pos)
        #: positions (in ``subsets``) of the members of each group of equally sized subsets
        self.group_positions = list(groups.values())
        # equally sized subsets stacked: idx (M, dJ*dJ, dc)
        self.group_idx = [torch.stack([self.items[i][1] for i in g]) for g in groups.values()]
        self.group_subsets = [[self.items[i][0] for i in g] for g in groups.values()]
        self._subsets = subsets
        self._mobius = None  # built on first use (see ``mobius``)

    @property
    def mobius_built(self) -> bool:
        return self._mobius is not None

    @property
    def mobius(self):
        """The Moebius groups of ``_mobius_groups`` (False where the form does not pay), built
        on first use: a solve that projects only once or twice does not pay for them."""
        if self._mobius is None:
            self._mobius = self._mobius_groups(len(self.dims), self._subsets) or False
        return self._mobius

    def trace_index(self, S):
        """:func:`qmarginal.partial_trace.trace_indices` of S as a tensor on the device (built
        once per subset: the Moebius form reuses the subsets' own)."""
        S = tuple(S)
        if S not in self._index:
            self._index[S] = self.torch.as_tensor(trace_indices(self.dims, S),
                                                  device=self.device)
        return self._index[S]

    def _mobius_groups(self, n: int, subsets):
        """The Moebius form of the projection onto span{A_J (x) 1}, or None where it would not
        save time: when it would touch more than twice the entries of the sequential
        composition, when that touches more than ``mobius_entries`` entries (then the data, not the
        number of calls, sets the time), or when it needs more than half as many groups of
        equally shaped subsets as there are subsets.

        The subspaces V_J = {A_J (x) 1_{J^c}} have commuting projections Pi_J with
        Pi_J Pi_K = Pi_{J cap K}, so the projection onto their sum is

            P = sum_{S in L} c_S Pi_S,    c_S = 1 - sum_{T in L, T > S} c_T,

        L the family closed under intersection (an operator basis element supported on U
        lies in exactly the V_S with S >= U, and sum_{S >= U} c_S = 1). P_T = 1 - P then
        costs one gather and one scatter per size of S instead of a few calls per subset.
        """
        D = self.D
        sequential = sum(D * subset_dim(J, self.dims) for J in subsets)
        if sequential > self.mobius_entries:
            return None  # large: the data, not the number of calls, sets the time
        # the closure under intersection, subsets as bit masks
        family = {sum(1 << i for i in J) for J in subsets}
        frontier = set(family)
        while frontier:
            frontier = {a & b for a in frontier for b in family} - family
            family |= frontier
        sets = {m: tuple(i for i in range(n) if m >> i & 1) for m in family}
        cost = sum(D * subset_dim(S, self.dims) for S in sets.values())
        if cost > 2 * sequential:
            return None
        coef: dict = {}
        for m in sorted(family, key=lambda m: -bin(m).count("1")):
            coef[m] = 1 - sum(c for T, c in coef.items() if T & m == m)
        coef = {sets[m]: c for m, c in coef.items()}
        groups: dict = {}
        for S, c in coef.items():
            if c == 0:
                continue
            idx = self.trace_index(S)
            groups.setdefault(idx.shape, []).append((idx, c / idx.shape[-1]))
        if 2 * len(groups) > len(subsets):
            return None  # few subsets share a shape: no fewer calls than the composition
        torch = self.torch
        return [(torch.stack([i for i, _ in g]),
                 torch.tensor([c for _, c in g], dtype=torch.float64, device=self.device))
                for g in groups.values()]


@functools.lru_cache(maxsize=8)
def structure(dims: tuple, subsets: tuple, device: str, mobius_entries: int = 1 << 15) -> _Structure:
    """The cached :class:`_Structure` of (dims, subsets) on ``device``."""
    import torch

    return _Structure(dims, subsets, torch, torch.device(device), mobius_entries)


class MarginalMaps:
    """Partial traces, their adjoint and the MIO projection for fixed dims and subsets.

    The index tensors depend on the structure only and are cached (:func:`structure`); the
    marginals are this object's own.

    Args:
        dims: local dimensions, one per site.
        subsets: the sorted subsets J.
        sigmas: the marginals as torch tensors ``(B, d_J, d_J)`` (one per subset, same order).
        torch: the torch module; device and complex dtype follow ``sigmas``.
        mobius_entries: ``Thresholds.mobius_entries`` (when the Moebius form is used).
    """

    def __init__(self, dims, subsets, sigmas, torch, mobius_entries: int = 1 << 15):
        self.torch = torch
        self.dims = tuple(dims)
        self.D = math.prod(self.dims)
        s0 = sigmas[0]
        self.device = s0.device
        self.B = s0.shape[0]
        st = structure(self.dims, tuple(tuple(J) for J in subsets), str(self.device),
                       mobius_entries)
        self.items = [(J, idx, sig.reshape(self.B, -1), dc)
                      for (J, idx, dc), sig in zip(st.items, sigmas)]
        # equally sized subsets stacked: idx (M, dJ*dJ, dc), sigma (B, M, dJ*dJ)
        self.groups = [(idx, torch.stack([self.items[i][2] for i in pos], 1))
                       for idx, pos in zip(st.group_idx, st.group_positions)]
        #: the subsets of each group, in the order of its stacked axis
        self.group_subsets = st.group_subsets
        self._structure = st
        self._offset = None  # P_A(0), for project(x) = tangent(x) + P_A(0) in the Moebius form

    def select(self, keep) -> "MarginalMaps":
        """The same maps for the batch elements ``keep`` (index tensor)."""
        out = object.__new__(MarginalMaps)
        out.__dict__.update(self.__dict__)
        out.B = len(keep)
        out.items = [(J, idx, sig[keep], dc) for J, idx, sig, dc in self.items]
        out.groups = [(idx, sig[keep]) for idx, sig in self.groups]
        out._offset = None if self._offset is None else self._offset[keep]
        return out

    @property
    def offset(self):
        """P_A(0) = the MIO of the zero matrix (built on first use)."""
        if self._offset is None:
            torch = self.torch
            zero = torch.zeros((self.B, self.D, self.D), dtype=self.groups[0][1].dtype,
                               device=self.device)
            self._offset = self._compose(zero, True)
        return self._offset

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

    def _mobius_tangent(self, x):
        out = x.reshape(x.shape[0], -1)
        flat = out
        Bn = out.shape[0]
        out = out.clone()
        for idx, coef in self._structure.mobius:
            v = flat[:, idx].sum(-1) * coef[:, None].to(flat.dtype)  # c_S tr_{S^c} x / d_{S^c}
            out.index_add_(1, idx.reshape(-1), -v[..., None].expand(v.shape + (idx.shape[-1],))
                           .reshape(Bn, -1))
        return out.reshape(x.shape)

    def project(self, x):
        """P_A(x): the MIO composition (same as ``impose(x, problem)``); in the Moebius form
        once that is built (by ``tangent``, i.e. by an iteration that projects repeatedly)."""
        if self._structure.mobius_built and self._structure.mobius:
            return self._mobius_tangent(x) + self.offset
        return self._compose(x, True)

    def tangent(self, x):
        """P_T(x) = P_A(x) - P_A(0): the projection onto {X : every tr_{J^c} X = 0}."""
        if self._structure.mobius:
            return self._mobius_tangent(x)
        return self._compose(x, False)

    def descent_directions(self, deltas):
        """Eigenvalues (ascending) and eigenvectors of G = sum_J Delta_J (x) 1_{J^c}, for
        residuals Delta_J per group (any layout of their d_J x d_J entries). The most negative
        ones are the steepest directions for a new rank-one term of a factored state: the
        derivative of sum_J ||Delta_J||^2 along s u u^dagger is 2 u^dagger G u."""
        g = self.adjoint([d.reshape(d.shape[0], d.shape[1], -1) for d in deltas])
        return self.torch.linalg.eigh(0.5 * (g + g.mH))

    def normalised_deviation(self, res, trace):
        """max_J max |(R_J + sigma_J) / tr Y - sigma_J| per element: the marginal deviation of
        Y / tr Y from its residuals R_J = tr_{J^c} Y - sigma_J (per group, any layout of their
        d_J x d_J entries) and its trace, without forming Y."""
        devs = []
        for r, (_, sig) in zip(res, self.groups):
            d = (r.reshape(sig.shape) + sig) / trace[:, None, None] - sig
            devs.append(d.abs().amax(dim=(-2, -1)))
        return self.torch.stack(devs).amax(0)

    def deviation(self, x):
        """max_J max |tr_{J^c} x - sigma_J| per batch element, (B,)."""
        devs = [r.abs().amax(dim=(-2, -1)) for r in self.residual(x)]
        return self.torch.stack(devs).amax(0)
