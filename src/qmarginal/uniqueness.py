r"""Is it the only state? Uniqueness certificates, and two states when it is not.

Let L be the marginal map, L(X) = (tr_{J^c} X)_J over the given subsets, and rho a compatible
state (L(rho) = sigma). The compatible states form the convex set C = {s >= 0 : L(s) = sigma}.

**Not unique.** Any Hermitian X != 0 supported on range(rho) with L(X) = 0 gives a second state
rho + t X (PSD for |t| <= lambda_min^+(rho) / ||X||, same marginals). Such an X exists exactly
when L restricted to operators on range(rho) is not injective (for a full-rank rho: when the
marginals do not fix every matrix element). Otherwise a second state must leave range(rho);
one is searched for by the SDP max tr((1 - P_rho) s) over C (CVXPY, when installed), or from
random starts of the exact solver. "not unique" always comes with two certified states.

**Unique: the certificate.** A local Hamiltonian H = sum_J w_J (x) 1 with

1. H >= 0 and H rho = 0 (so tr(H rho) = sum_J tr(w_J sigma_J) = 0), ker H = S;
2. the marginal map injective on Hermitian operators supported on S (smallest singular value
   ``injectivity`` > 0).

Then every compatible s has tr(H s) = sum_J tr(w_J sigma_J) = tr(H rho) = 0, so s lives on
S = ker H (H >= gap > 0 off S); s - rho is supported on S and has zero marginals, so s = rho.
The issue's form takes S = range(rho) (H > 0 on its complement); we also accept a larger S
(the kernel projectors of the marginals often give one) when injectivity holds there. For a
pure rho and S = range(rho), (2) is automatic.

**Rounding.** With a measured H (its eigenvalues on S within ``ground`` of 0, at least ``gap``
off S) and marginals known to ``marginal_tol``, every state whose marginals are within
``marginal_tol`` of sigma has weight p <= (|sum_J tr(w_J s_J)| + ground) / (gap + ground) off S
and lies within trace distance ``radius`` of rho (computed in :meth:`UniquenessCertificate.verify`
from p, the gentle-measurement bound 2 sqrt(p) and ||L(Y)||_F >= injectivity ||Y||_F on S).
:meth:`~UniquenessCertificate.verify` recomputes everything from w and the marginals with two
eigensolvers and explicit Kronecker products.

    >>> import numpy as np, qmarginal as qm
    >>> w = np.zeros(8); w[[1, 2, 4]] = 1 / np.sqrt(3)
    >>> p = qm.MarginalProblem.from_state(np.outer(w, w), k=2)
    >>> res = qm.check_uniqueness(p)
    >>> res.status, res.certificate.verify(p).verified
    ('unique', True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _backend as B
from ._sites import complement, subset_dim
from .errors import MarginalError, NotCertifiedError
from .problem import MarginalProblem

__all__ = ["check_uniqueness", "UniquenessResult", "UniquenessCertificate",
           "UniquenessSettings", "marginal_map_on"]


@dataclass(frozen=True)
class UniquenessSettings:
    """Settings of :func:`check_uniqueness`.

    Attributes:
        rank_tol: eigenvalues of rho (and of the marginals) below ``rank_tol`` times the largest
            count as zero when ranges and kernels are taken.
        kernel_tol: a singular value of the marginal map (on unit-Frobenius operators) below
            this is a kernel direction ("not unique").
        min_gap: the certificate's gap and injectivity must exceed this (and their rounding
            margins).
        restarts: random starts of the exact solver searched for a second state when no
            certificate was found (and the SDP could not run or decide).
        sdp: use CVXPY (the ``sdp`` extra) for the certificate and the second-state search
            where D <= ``sdp_max_dim``.
        sdp_max_dim: largest D for the SDP steps.
        max_support: largest support dimension s whose s^2-column marginal map is formed.
        seed: seed of the random restarts.
        time_limit: seconds for the reconstruction of rho when none is given (None: none).
    """

    rank_tol: float = 1e-8
    kernel_tol: float = 1e-7
    min_gap: float = 1e-6
    restarts: int = 8
    sdp: bool = True
    sdp_max_dim: int = 64
    max_support: int = 128
    seed: int = 0
    time_limit: float | None = None


@dataclass(frozen=True)
class UniquenessCertificate:
    """H = sum_J w_J (x) 1 >= 0 with H rho = 0, and the numbers that make it a proof.

    Attributes:
        w: {J: w_J}, Hermitian d_J x d_J.
        support_dim: s = dim ker H (the states' common support).
        gap: smallest eigenvalue of H off its kernel (> 0).
        ground: largest |eigenvalue| of H on its kernel (~0).
        energy: sum_J tr(w_J sigma_J) (~0: the marginals put no weight off the kernel).
        injectivity: smallest singular value of the marginal map on Hermitian operators on
            ker H, per unit Frobenius norm.
        margin: rounding bound of the eigenvalue and singular-value computations.
        radius: every state whose marginals are within ``marginal_tol`` of the given ones is
            within this trace distance of rho.
        marginal_tol: the tolerance ``radius`` assumes.
        verified: gap and injectivity exceed their margins and ``min_gap``, rho lies on ker H.
        how: how H was found ("kernel projectors", "sdp").
    """

    w: dict
    support_dim: int
    gap: float
    ground: float
    energy: float
    injectivity: float
    margin: float
    radius: float
    marginal_tol: float
    verified: bool
    how: str = ""

    def verify(self, problem: MarginalProblem, state=None, *, marginal_tol: float | None = None,
               min_gap: float = 1e-6) -> UniquenessCertificate:
        """Recompute the certificate from ``w`` and the marginals alone (explicit Kronecker
        products, numpy's and scipy's eigensolvers and SVDs; ``state``, if given, is checked to
        lie on ker H). Returns the recomputed certificate; ``verified`` says whether it holds."""
        return verify_uniqueness_certificate(
            self.w, problem, state, marginal_tol=self.marginal_tol if marginal_tol is None
            else marginal_tol, min_gap=min_gap, how=self.how)


@dataclass(frozen=True)
class UniquenessResult:
    """The answer of :func:`check_uniqueness`.

    Attributes:
        status: "unique" (a verified certificate), "not unique" (two certified states) or
            "undetermined" (neither, within the limits; ``info["reason"]``).
        unique: True, False or None, by status.
        state: the compatible state the question was asked about.
        certificate: the :class:`UniquenessCertificate` for "unique" (else None).
        states: (rho, sigma), two certified compatible states, for "not unique".
        distance: their trace distance ||rho - sigma||_1 / 2.
        info: what was tried and measured (ranks, singular values, times).
    """

    status: str
    unique: bool | None
    state: Any
    certificate: UniquenessCertificate | None = None
    states: tuple = ()
    distance: float = float("nan")
    info: dict = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"uniqueness: {self.status}"]
        c = self.certificate
        if c is not None:
            lines += [f"certificate: H = sum_J w_J (x) 1 >= 0 ({c.how}), ker H of dimension "
                      f"{c.support_dim}, gap {c.gap:.3e}, ground {c.ground:.1e}, energy "
                      f"{c.energy:.1e}",
                      f"marginal map on ker H: smallest singular value {c.injectivity:.3e} "
                      f"(margin {c.margin:.1e}); every state within marginal_tol "
                      f"{c.marginal_tol:g} is within trace distance {c.radius:.2e}"]
        if self.states:
            lines.append(f"two compatible certified states at trace distance "
                         f"{self.distance:.6g} ({self.info.get('second_state', '')})")
        if self.status == "undetermined":
            lines.append(f"reason: {self.info.get('reason', '')}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- marginal map
def marginal_map_on(q: np.ndarray, problem: MarginalProblem) -> np.ndarray:
    """The matrix of Y -> (tr_{J^c} (q Y q^dagger))_J, Y any complex s x s matrix.

    Rows: the entries of every marginal in turn; columns: the s^2 entries of Y (row-major).
    For a map that commutes with the adjoint, its singular values on complex Y equal those on
    Hermitian Y, so its smallest singular value is the injectivity on Hermitian operators
    supported on range(q).

    Args:
        q: ``(D, s)`` with orthonormal columns.
    """
    dims = problem.dims
    n = len(dims)
    s = q.shape[1]
    t = q.reshape(tuple(dims) + (s,))
    blocks = []
    for J in problem.subsets:
        Jc = complement(J, n)
        dJ, dc = subset_dim(J, dims), subset_dim(Jc, dims)
        qj = np.transpose(t, tuple(J) + tuple(Jc) + (n,)).reshape(dJ, dc, s)
        m = np.einsum("icA,jcB->ijAB", qj, qj.conj(), optimize=True)
        blocks.append(m.reshape(dJ * dJ, s * s))
    return np.concatenate(blocks, axis=0)


def _range(rho: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    w, v = np.linalg.eigh(0.5 * (rho + rho.conj().T))
    keep = w > tol * max(w[-1], 1e-300)
    return v[:, keep], w[keep]


def _kron_embed(wJ: np.ndarray, J, dims) -> np.ndarray:
    """w_J (x) 1_{J^c} by explicit Kronecker products and a permutation of the tensor factors
    (independent of the library's embed kernel)."""
    n = len(dims)
    Jc = complement(J, n)
    big = np.kron(wJ, np.eye(subset_dim(Jc, dims)))
    order = list(J) + list(Jc)
    D = math.prod(dims)
    t = big.reshape([dims[s] for s in order] * 2)
    inv = np.argsort(order)
    t = np.transpose(t, list(inv) + [n + i for i in inv])
    return t.reshape(D, D)


def verify_uniqueness_certificate(w: dict, problem: MarginalProblem, state=None, *,
                                  marginal_tol: float = 1e-9, min_gap: float = 1e-6,
                                  how: str = "") -> UniquenessCertificate:
    """Check a uniqueness certificate w = {J: w_J} independently (see the module docstring).

    H is built by explicit Kronecker products; its spectrum by numpy's eigvalsh and scipy's
    evr driver (the worse of the two taken); the kernel S from numpy's eigh; the injectivity
    by numpy's SVD and scipy's gesvd. ``margin`` = 100 D eps (||H|| + 1) bounds their rounding.
    """
    import scipy.linalg as sla

    dims = problem.dims
    D = math.prod(dims)
    sig = {J: np.asarray(B.to_numpy(s), dtype=np.complex128) for J, s in
           problem.marginals.items()}
    w = {tuple(J): 0.5 * (np.asarray(v) + np.asarray(v).conj().T) for J, v in w.items()}
    H = np.zeros((D, D), dtype=np.complex128)
    for J, wJ in w.items():
        H += _kron_embed(wJ, J, dims)
    H = 0.5 * (H + H.conj().T)
    lam1, vec = np.linalg.eigh(H)
    lam2 = sla.eigh(H, eigvals_only=True, driver="evr")
    norm = max(abs(lam1[0]), abs(lam1[-1]), abs(lam2[0]), abs(lam2[-1]))
    margin = 100.0 * D * np.finfo(float).eps * (norm + 1.0)
    # the kernel: the eigenvalues below the largest jump under sqrt(margin * norm)-ish scale
    lo = np.maximum(np.abs(lam1), np.abs(lam2))
    thresh = max(1e3 * margin, 1e-9 * norm)
    s = int(np.sum(lo <= thresh))
    energy = float(sum(np.real(np.vdot(w[J], sig[J])) for J in w))
    if s == 0 or s == D:
        return UniquenessCertificate(w, s, 0.0 if s == D else float(min(lam1[0], lam2[0])),
                                     float(lo[:s].max()) if s else 0.0, energy, 0.0,
                                     float(margin), float("inf"), marginal_tol, False, how)
    gap = float(min(lam1[s], lam2[s]))
    ground = float(max(np.abs(lam1[:s]).max(), np.abs(lam2[:s]).max()))
    psd = float(min(lam1[0], lam2[0])) >= -margin - ground
    q = vec[:, :s]
    M = marginal_map_on(q, problem)
    sv1 = np.linalg.svd(M, compute_uv=False)
    sv2 = sla.svd(M, compute_uv=False, lapack_driver="gesvd")
    inj = float(min(sv1[-1] if len(sv1) >= s * s else 0.0, sv2[-1] if len(sv2) >= s * s
                    else 0.0))
    on_kernel = True
    if state is not None:
        rho = np.asarray(B.to_numpy(state), dtype=np.complex128)
        off = rho - q @ (q.conj().T @ rho @ q) @ q.conj().T
        on_kernel = bool(np.abs(np.trace(H @ rho)) <= 1e3 * margin + 10 * marginal_tol * norm
                         and np.linalg.norm(off) <= 1e-6)
    # radius: weight off S, gentle measurement, then injectivity on S
    e = abs(energy) + sum(np.abs(w[J]).sum() for J in w) * marginal_tol
    p = min(1.0, (e + ground) / max(gap + ground, 1e-300))
    gentle = 2.0 * math.sqrt(p) + p
    marg_err = math.sqrt(sum(subset_dim(J, dims) ** 2 for J in w)) * 2 * marginal_tol
    lmap = math.sqrt(len(problem.subsets))  # ||L(Y)||_F <= sqrt(#subsets) ||Y||_1
    inside = (marg_err + lmap * gentle) / inj if inj > 0 else float("inf")
    radius = 0.5 * (gentle + math.sqrt(s) * inside)
    ok = bool(psd and on_kernel and gap > max(margin, min_gap) and inj > max(margin, min_gap))
    return UniquenessCertificate(w, s, gap, ground, energy, inj, float(margin), float(radius),
                                 marginal_tol, ok, how)


# --------------------------------------------------------------------------- steps
def _second_state_in_range(rho, q, lam, problem, kernel_tol, directions: int = 24):
    """A kernel direction of L on Herm(range rho): (sigma, smallest singular value) or
    (None, smallest singular value). Of up to ``directions`` kernel directions and both signs,
    the step that moves farthest (in trace distance) while staying well inside the PSD cone."""
    s = q.shape[1]
    M = marginal_map_on(q, problem)
    scale = max(float(np.linalg.norm(M, axis=0).max()), 1.0)
    _, sv, vh = np.linalg.svd(M, full_matrices=True)
    smin = float(sv[-1]) if len(sv) >= s * s else 0.0
    sv_all = np.concatenate([sv, np.zeros(s * s - len(sv))])
    kernel = np.nonzero(sv_all <= kernel_tol * scale)[0]
    if not len(kernel):
        return None, smin
    R = q.conj().T @ rho @ q
    ri = np.linalg.inv(np.linalg.cholesky(0.5 * (R + R.conj().T)))
    best, best_move = None, 0.0
    for row in kernel[::-1][:directions]:
        y = vh[row].conj().reshape(s, s)
        y = max([y + y.conj().T, 1j * (y - y.conj().T)], key=np.linalg.norm)
        y = y / np.linalg.norm(y)
        e = np.linalg.eigvalsh(ri @ y @ ri.conj().T)  # R + t y >= 0 iff 1 + t e >= 0
        tr1 = 0.5 * float(np.abs(np.linalg.eigvalsh(y)).sum())
        for sign, worst in ((1.0, -e[0]), (-1.0, e[-1])):
            if worst <= 0:
                continue
            t = 0.5 / worst  # halfway to the boundary of the cone
            if t * tr1 > best_move:
                best, best_move = sign * t * y, t * tr1
    if best is None:
        return None, smin
    return rho + q @ best @ q.conj().T, smin


def _second_state_in_range_full(rho, problem, lam_min, kernel_tol, seed):
    """Full-rank rho at large D: a random Hermitian direction projected onto ker L (the MIO
    projection with zero marginals)."""
    from .mio import impose

    rng = np.random.default_rng(seed)
    D = rho.shape[0]
    x = rng.standard_normal((D, D)) + 1j * rng.standard_normal((D, D))
    x = x + x.conj().T
    zero = {J: np.zeros((subset_dim(J, problem.dims),) * 2, complex) for J in problem.subsets}
    k = impose(x, zero, problem.dims)
    k = 0.5 * (k + k.conj().T)
    nk = np.linalg.norm(k, 2)
    if nk <= kernel_tol * np.linalg.norm(x, 2):
        return None
    return rho + 0.5 * lam_min * k / nk


def _kernel_projector_certificate(problem, rho, st, mtol):
    w = {}
    for J, s in problem.marginals.items():
        a = np.asarray(B.to_numpy(s), dtype=np.complex128)
        ev, vec = np.linalg.eigh(0.5 * (a + a.conj().T))
        ker = vec[:, ev <= st.rank_tol * ev[-1]]
        if ker.shape[1]:
            w[J] = ker @ ker.conj().T
    if not w:
        return None
    return verify_uniqueness_certificate(w, problem, rho, marginal_tol=mtol, min_gap=st.min_gap,
                                         how="kernel projectors of the marginals")


def _embed_var(cp, wJ, J, dims):
    """w_J (x) 1 as a CVXPY expression (a constant permutation of kron(w_J, 1))."""
    n = len(dims)
    Jc = complement(J, n)
    D = math.prod(dims)
    dJ, dc = subset_dim(J, dims), subset_dim(Jc, dims)
    order = list(J) + list(Jc)
    idx = np.arange(D).reshape([dims[s] for s in order])
    perm = np.transpose(idx, np.argsort(order)).reshape(-1)  # natural index -> kron index
    P = np.zeros((D, D))
    P[np.arange(D), perm] = 1.0
    return P @ cp.kron(wJ, np.eye(dc)) @ P.T


def _solve_quietly(cp, prob) -> None:
    """Clarabel, else SCS; their accuracy warnings are silenced because nothing they return is
    used unverified (certificates and states are re-checked independently)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            prob.solve(solver=cp.CLARABEL)
        except Exception:  # noqa: BLE001 - any solver failure: try the other one
            prob.solve(solver=cp.SCS, eps=1e-9)


def _sdp_certificate(problem, rho, q, st, mtol):
    """max t s.t. H >= t (1 - P_rho), H q = 0, tr H <= D (CVXPY)."""
    import cvxpy as cp

    dims = problem.dims
    D = math.prod(dims)
    ws = {J: cp.Variable((subset_dim(J, dims),) * 2, hermitian=True) for J in problem.subsets}
    H = sum(_embed_var(cp, wJ, J, dims) for J, wJ in ws.items())
    t = cp.Variable()
    Pperp = np.eye(D) - q @ q.conj().T
    cons = [H - t * Pperp >> 0, H @ q == 0, cp.real(cp.trace(H)) <= D]
    prob = cp.Problem(cp.Maximize(t), cons)
    _solve_quietly(cp, prob)
    if t.value is None or t.value <= st.min_gap:
        return None
    w = {J: np.asarray(v.value) for J, v in ws.items()}
    # clean: project H onto the operators annihilating range(rho) in the span of the terms
    return verify_uniqueness_certificate(w, problem, rho, marginal_tol=mtol, min_gap=st.min_gap,
                                         how="sdp")


def _sdp_second_state(problem, rho, q):
    """max tr((1 - P_rho) s) over the compatible states (CVXPY): s, or None."""
    import cvxpy as cp

    dims = problem.dims
    D = math.prod(dims)
    X = cp.Variable((D, D), hermitian=True)
    cons = [X >> 0]
    for J, s in problem.marginals.items():
        cons.append(_ptrace_var(cp, X, J, dims) == np.asarray(B.to_numpy(s)))
    Pperp = np.eye(D) - q @ q.conj().T
    prob = cp.Problem(cp.Maximize(cp.real(cp.trace(Pperp @ X))), cons)
    _solve_quietly(cp, prob)
    if X.value is None:
        return None, float("nan")
    return np.asarray(X.value), float(prob.value)


def _ptrace_var(cp, X, J, dims):
    n = len(dims)
    keep = list(J)
    D = math.prod(dims)
    dJ = subset_dim(J, dims)
    # tr_{J^c} X = sum_c (1_J (x) <c|) X (1_J (x) |c>) in the permuted basis
    Jc = complement(J, n)
    order = keep + list(Jc)
    idx = np.arange(D).reshape([dims[s] for s in order])
    perm = np.transpose(idx, np.argsort(order)).reshape(-1)
    P = np.zeros((D, D))
    P[np.arange(D), perm] = 1.0
    Y = P.T @ X @ P  # kron order (J, J^c)
    dc = D // dJ
    return cp.partial_trace(Y, [dJ, dc], axis=1)


def _certify(problem, x, eig_tol, mtol):
    from .report import measure

    rho, rep = measure(problem, x, eig_tol=eig_tol, marginal_tol=mtol, method="uniqueness",
                       certifies=True)
    return rho, bool(rep.certified)


def _polish(problem, x, seed):
    """The exact solver started at x (a nearby certified state)."""
    from .reconstruct import reconstruct

    try:
        return reconstruct(problem, "exact", x0=x, seed=seed, check=False).state
    except (NotCertifiedError, MarginalError):
        return None


def _trace_distance(a, b) -> float:
    return 0.5 * float(np.abs(np.linalg.eigvalsh(a - b)).sum())


# --------------------------------------------------------------------------- driver
def check_uniqueness(problem: MarginalProblem, state=None,
                     settings: UniquenessSettings | None = None,
                     **options) -> UniquenessResult:
    """Decide whether ``state`` (default: a certified reconstruction) is the only state with
    the problem's marginals: "unique" with a verified :class:`UniquenessCertificate`, "not
    unique" with two certified states, or "undetermined".

    Args:
        problem: the marginals (one problem, not a batch; D x D matrices are formed: D up to a
            few thousand, the SDP steps to ``sdp_max_dim``).
        state: a compatible state (checked: certified against the problem); None: reconstruct
            one with the exact solver.
        settings, **options: :class:`UniquenessSettings` fields.

    Returns:
        :class:`UniquenessResult`.

    Raises:
        MarginalError: a batch, a ``state`` that is not a certified state of the problem, or
            bad options. IncompatibleMarginalsError / NotCertifiedError: from the reconstruction
            when no state is given and none is found.
    """
    from dataclasses import replace

    from .reconstruct import reconstruct
    from .solvers._api import TOLERANCES

    st = replace(settings or UniquenessSettings(), **options)
    if problem.batch_shape:
        raise MarginalError("check_uniqueness takes one problem, not a batch")
    npb = problem.to_numpy() if problem.is_torch else problem
    t0 = time.perf_counter()
    eig_tol, mtol = TOLERANCES["complex128"]
    info: dict = {}
    if state is None:
        rho = np.asarray(B.to_numpy(reconstruct(npb, "exact", seed=st.seed,
                                                time_limit=st.time_limit).state),
                         dtype=np.complex128)
    else:
        rho, ok = _certify(npb, np.asarray(B.to_numpy(state), dtype=np.complex128), eig_tol,
                           mtol)
        if not ok:
            raise MarginalError("check_uniqueness: the given state is not a certified state "
                                "with these marginals")
    D = rho.shape[0]
    q, lam = _range(rho, st.rank_tol)
    r = q.shape[1]
    info["rank"] = r

    def not_unique(sigma, how):
        sigma, ok = _certify(npb, sigma, eig_tol, mtol)
        dist = _trace_distance(rho, sigma)
        if ok and dist > 1e3 * mtol:
            info.update(second_state=how, time_s=time.perf_counter() - t0)
            return UniquenessResult("not unique", False, rho, states=(rho, sigma),
                                    distance=dist, info=info)
        return None

    # 1. a kernel direction of L on operators supported on range(rho)
    if r * r <= st.max_support ** 2 and r <= st.max_support:
        sigma, smin = _second_state_in_range(rho, q, lam, npb, st.kernel_tol)
        info["injectivity_on_range"] = smin
        if sigma is not None:
            res = not_unique(sigma, "rho + t X, X on range(rho) with zero marginals")
            if res is not None:
                return res
    elif r == D:
        sigma = _second_state_in_range_full(rho, npb, float(lam.min()), st.kernel_tol, st.seed)
        if sigma is not None:
            res = not_unique(sigma, "rho + t X, X with zero marginals")
            if res is not None:
                return res
        info["reason"] = "full rank and the marginal map looks injective (not proved at this D)"
        return UniquenessResult("undetermined", None, rho, info=info)
    else:
        info["reason"] = f"rank {r} above max_support {st.max_support}"
        return UniquenessResult("undetermined", None, rho, info=info)
    if r == D:  # full rank and injective: the marginals fix every matrix element
        inj = info["injectivity_on_range"]
        margin = 100.0 * D * np.finfo(float).eps
        radius = 2 * mtol * math.sqrt(D * sum(subset_dim(J, npb.dims) ** 2
                                              for J in npb.subsets)) / max(inj, 1e-300)
        cert = UniquenessCertificate({}, D, float("inf"), 0.0, 0.0, inj, margin, radius, mtol,
                                     inj > max(margin, st.min_gap), "injective marginal map")
        info["time_s"] = time.perf_counter() - t0
        if cert.verified:
            return UniquenessResult("unique", True, rho, certificate=cert, info=info)
        info["reason"] = "full rank, marginal map nearly singular"
        return UniquenessResult("undetermined", None, rho, info=info)
    # 2. a certificate: the marginals' kernel projectors, then the SDP
    cert = _kernel_projector_certificate(npb, rho, st, mtol)
    if cert is not None:
        info["kernel_projectors"] = {"support_dim": cert.support_dim, "gap": cert.gap,
                                     "injectivity": cert.injectivity}
    if (cert is None or not cert.verified) and st.sdp and D <= st.sdp_max_dim:
        try:
            cert2 = _sdp_certificate(npb, rho, q, st, mtol)
        except ImportError:
            cert2 = None
            info["sdp"] = "cvxpy not installed (pip install qmarginal[sdp])"
        if cert2 is not None:
            cert = cert2
    if cert is not None and cert.verified:
        info["time_s"] = time.perf_counter() - t0
        return UniquenessResult("unique", True, rho, certificate=cert, info=info)
    # 3. a second state off range(rho): the SDP, then random starts of the exact solver
    if st.sdp and D <= st.sdp_max_dim:
        try:
            x, value = _sdp_second_state(npb, rho, q)
            info["sdp_weight_off_range"] = value
            if x is not None and value > 1e-5:
                for cand in (x, _polish(npb, x, st.seed)):
                    if cand is None:
                        continue
                    res = not_unique(cand, f"SDP max weight off range(rho) = {value:.3g}")
                    if res is not None:
                        return res
        except ImportError:
            info["sdp"] = "cvxpy not installed (pip install qmarginal[sdp])"
    rng = np.random.default_rng(st.seed)
    for i in range(st.restarts):
        g = rng.standard_normal((D, D)) + 1j * rng.standard_normal((D, D))
        x0 = g @ g.conj().T
        cand = _polish(npb, x0 / np.trace(x0).real, st.seed + i + 1)
        if cand is not None:
            res = not_unique(np.asarray(B.to_numpy(cand)), f"exact solver from random start {i}")
            if res is not None:
                return res
    info["reason"] = ("no verified certificate and no second state found"
                      + ("" if cert is None else f" (best certificate: gap {cert.gap:.2e}, "
                         f"injectivity {cert.injectivity:.2e})"))
    info["time_s"] = time.perf_counter() - t0
    return UniquenessResult("undetermined", None, rho, certificate=None, info=info)

