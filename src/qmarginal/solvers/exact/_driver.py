"""The exact solver's entry point: measure the features, plan, run the steps, report.

See :mod:`qmarginal.solvers.exact` for the method and :mod:`.plan` for the routing.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ... import _backend as B
from ...errors import MarginalError
from ...problem import MarginalProblem
from .._api import SolverOutput
from ._convex import bcast, convex
from ._face import FaceMaps, face_basis, face_factored
from ._factored import lbfgs_factored, random_columns, start_columns
from ._gauss_newton import levenberg_marquardt, newton_fits
from ._maps import MarginalMaps
from .plan import Features, Step, plan
from .settings import ExactSettings

try:  # with the module, so that the first solve's wall time is not charged for the import
    import torch  # noqa: F401
except ImportError:  # reported by B.torch_module() when a solve needs it
    pass

__all__ = ["solve", "clear_cache"]


def _flat_problem(problem: MarginalProblem, torch, device):
    """Subsets and marginals as complex128 tensors (B, d_J, d_J), batch flattened."""
    batch = problem.batch_shape
    Bn = math.prod(batch) if batch else 1
    subsets, sigmas = [], []
    for J, s in problem.marginals.items():
        t = s if B.is_torch(s) else torch.as_tensor(np.asarray(s))
        t = t.to(device=device, dtype=torch.complex128)
        subsets.append(J)
        sigmas.append(t.reshape((Bn,) + tuple(t.shape[-2:])))
    return Bn, subsets, sigmas


def _rank_bound(aff, rel_tol: float):
    """Lower bound max_J ceil(rank(sigma_J) / d_{J^c}) on the rank of every compatible state,
    whether some marginal is rank-deficient, and min over deficient J of rank(sigma_J) d_{J^c}
    (a bound on the dimension of the face compatible states live on; D if none), per batch
    element (one eigvalsh per group of equally sized marginals of ``aff``, a MarginalMaps)."""
    torch = aff.torch
    lb = torch.ones(aff.B, dtype=torch.long, device=aff.device)
    deficient = torch.zeros(aff.B, dtype=torch.bool, device=aff.device)
    support = torch.full((aff.B,), aff.D, dtype=torch.long, device=aff.device)
    for idx, sig in aff.groups:
        dJ = math.isqrt(idx.shape[1])
        dc = aff.D // dJ
        w = torch.linalg.eigvalsh(sig.reshape(sig.shape[:2] + (dJ, dJ)))
        r = (w > rel_tol * w.amax(-1, keepdim=True)).sum(-1)  # (B, M)
        lb = torch.maximum(lb, ((r + dc - 1) // dc).amax(-1))
        deficient |= (r < dJ).any(-1)
        face = torch.where(r < dJ, r * dc, torch.full_like(r, aff.D)).amin(-1)
        support = torch.minimum(support, face)
    return lb, deficient, support


def _seed(problem, x0, torch, device, Bn: int):
    D = problem.dim
    if x0 is None:
        return torch.eye(D, dtype=torch.complex128, device=device).expand(Bn, D, D) / D, \
            "maximally_mixed"
    xt = x0 if B.is_torch(x0) else torch.as_tensor(np.asarray(x0))
    xt = xt.to(device=device, dtype=torch.complex128)
    if tuple(xt.shape[-2:]) != (D, D):
        raise MarginalError(f"warm start x0 must be {D} x {D}, got shape {tuple(xt.shape)}")
    try:
        xt = xt.expand(tuple(problem.batch_shape) + (D, D)).reshape(Bn, D, D)
    except RuntimeError as exc:
        raise MarginalError(f"warm start x0 of shape {tuple(xt.shape)} does not match the "
                            f"problem's batch shape {problem.batch_shape}") from exc
    return 0.5 * (xt + xt.mH), "given"


class _Run:
    """The per-element state of one solve while the steps run."""

    def __init__(self, aff, x, st, th, deadline, torch):
        self.aff, self.st, self.th, self.deadline, self.torch = aff, st, th, deadline, torch
        Bn = x.shape[0]
        self.rho = x.clone()      # the best iterate so far
        self.start = x.clone()    # where the next factored step starts from (a matrix in A)
        self.done = torch.zeros(Bn, dtype=torch.bool, device=x.device)
        self.iters = torch.zeros(Bn, dtype=torch.long, device=x.device)
        self.path = [[] for _ in range(Bn)]
        self.times = [[] for _ in range(Bn)]  # seconds per step, as the path
        self.ranks = np.zeros(Bn, dtype=int)
        self.log: list = []
        self.tol = st.safety * st.marginal_tol
        self.rank_tol = st.marginal_tol if st.rank_tol is None else st.rank_tol

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def record(self, idx, aff, name: str, rho, ok, iters, rank=None):
        """Store a step's result for the elements ``idx`` (``aff`` their maps): successes
        replace the iterate; a failed element keeps whichever of its old and new iterate is
        closer to a state (the best iterate a not-certified answer carries)."""
        self.iters[idx] += iters
        for i in idx.tolist():
            self.path[i].append(name)
        if bool(ok.any()):
            win = idx[ok]
            self.rho[win] = rho[ok]
            self.done[win] = True
            if rank is not None:
                self.ranks[win.cpu().numpy()] = np.asarray(rank)[ok.cpu().numpy()]
        lost = (~ok).nonzero().flatten()
        if len(lost):
            sub = aff.select(lost)
            old, new = self.rho[idx[lost]], rho[lost]
            better = _badness(self.torch, sub, new) < _badness(self.torch, sub, old)
            if bool(better.any()):
                self.rho[idx[lost[better]]] = new[better]


def _badness(torch, aff, x):
    """max(marginal deviation, -lambda_min) of the hermitised, trace-normalised x (B, D, D)."""
    h = 0.5 * (x + x.mH)
    tr = B.trace(h).real
    h = h / bcast(torch.where(tr > 0, tr, torch.ones_like(tr)), h).to(h.dtype)
    lam = torch.linalg.eigvalsh(h)[..., 0]
    bad = torch.maximum(aff.deviation(h), (-lam).clamp_min(0))
    return torch.where(tr > 0, bad, torch.full_like(bad, float("inf")))


def _convex_step(run: _Run, aff, idx, step: Step):
    xc, ok, it, _ = convex(aff, run.start[idx], run.st, run.th, run.deadline, step.patience,
                           step.maxiter)
    run.start[idx] = xc
    run.record(idx, aff, "convex", xc, ok, it)


def _factored_step(run: _Run, aff, idx, step: Step):
    torch, st, th = run.torch, run.st, run.th
    D = aff.D
    n_subsets = len(aff.items)
    # (a full step after a tentative one starts from other random components)
    v = start_columns(torch, run.start[idx], step.rank, st.seed + (not step.tentative), th)
    newton = step.newton and newton_fits(n_subsets, D, step.rank, th)
    n = len(idx)
    rf = torch.zeros((n, D, D), dtype=torch.complex128, device=v.device)
    df = torch.zeros(n, dtype=torch.bool, device=v.device)
    itf = torch.zeros(n, dtype=torch.long, device=v.device)
    gave_up = False
    if newton:
        v, df, itf, log = levenberg_marquardt(
            aff, v, tol=run.tol, maxiter=step.maxiter,
            patience=th.handover_newton_iterations if step.tentative else None,
            max_rank=step.max_rank, th=th, deadline=run.deadline)
        run.log.extend(log)
        y = v @ v.mH
        rf = y / bcast(B.trace(y).real, y).to(y.dtype)
        # Levenberg-Marquardt stops early for L-BFGS only when the rank outgrew it; a
        # tentative attempt that did not outgrow it is over
        gave_up = step.tentative and newton_fits(n_subsets, D, v.shape[-1], th)
    # columns in use per element (a lower-rank probe leaves a zero last column)
    rfin = B.to_numpy((v.abs().amax(-2) > 0).sum(-1)).copy()
    if not bool(df.all()) and not gave_up:
        # L-BFGS for what Levenberg-Marquardt left (or never took); after a tentative
        # Levenberg-Marquardt attempt that outgrew its size, only up to the attempt's rank and
        # while on track (a mid-rank target: the convex path is faster)
        rest = (~df).nonzero().flatten()
        give_up = newton and step.tentative
        rl, dl, itl, r_lbfgs, log = lbfgs_factored(
            aff.select(rest), v[rest], st, th, run.deadline, max(step.max_rank, v.shape[-1]),
            step.maxiter, give_up=give_up)
        run.log.extend(log)
        rf[rest], df[rest] = rl, dl
        itf[rest] += itl
        rfin[B.to_numpy(rest)] = r_lbfgs
    run.record(idx, aff, "factored", rf, df, itf, rank=rfin)


def _face_step(run: _Run, aff, idx, step: Step):
    """The convex path on each element's face (one element at a time: the faces differ)."""
    torch, st, th = run.torch, run.st, run.th
    for j, i in enumerate(idx.tolist()):
        if run.out_of_time():
            break
        one = aff.select(torch.as_tensor([j], device=aff.device))
        sigmas = {J: B.to_numpy(sig[0]).reshape((round(math.sqrt(sig.shape[-1])),) * 2)
                  for (J, _, sig, _) in one.items}
        Q = face_basis(one.dims, sigmas, run.rank_tol)
        ok = torch.zeros(1, dtype=torch.bool)
        rho = run.rho[i:i + 1].clone()
        its = torch.zeros(1, dtype=torch.long)
        rank = None
        if Q is not None and 0 < Q.shape[1] <= th.face_max_dim and FaceMaps.entries(
                one.dims, list(sigmas), Q.shape[1]) <= th.face_max_entries:
            fm = FaceMaps(Q, one.dims, sigmas, torch)
            Dp = Q.shape[1]
            y0 = torch.eye(Dp, dtype=torch.complex128)[None] / Dp
            y, ok, its, _ = convex(fm, y0, st, th, run.deadline, step.patience, step.maxiter)
            if not bool(ok.any()) and not run.out_of_time():
                # low-rank within the face too: Levenberg-Marquardt on Y = V V^dagger
                yf, good, n_it, _ = face_factored(
                    fm, B.to_numpy(y[0]), step.rank, run.tol, step.maxiter, st.seed,
                    run.deadline)
                its = its + n_it
                if good:
                    y = torch.as_tensor(yf)[None]
                    ok = torch.ones(1, dtype=torch.bool)
            if bool(ok.any()):
                x = fm.lift(y)
                rho = x / bcast(B.trace(x).real, x).to(x.dtype)
                # the rank of the answer: eigenvalues of the small face matrix above rank_tol
                w = torch.linalg.eigvalsh(0.5 * (y + y.mH)) / B.trace(y).real[..., None]
                rank = (w > run.rank_tol).sum(-1).cpu().numpy()
        run.record(idx[j:j + 1], one, "face", rho.to(run.rho.device), ok.to(run.rho.device),
                   its.to(run.rho.device), rank=rank)


def _restarts_step(run: _Run, aff, idx, step: Step):
    """Levenberg-Marquardt from ``restart_starts`` random points per rank (no growth)."""
    torch, th = run.torch, run.th
    D = aff.D
    K = th.restart_starts
    left = torch.ones(len(idx), dtype=torch.bool, device=aff.device)
    total = torch.zeros(len(idx), dtype=torch.long, device=aff.device)
    for r in range(step.rank, step.max_rank + 1):
        if not bool(left.any()) or run.out_of_time():
            break
        pos = left.nonzero().flatten()
        n = len(pos)
        rep = pos.repeat_interleave(K)
        v = random_columns(torch, n * K, D, r, run.st.seed + 7919 * r, aff.device)
        v, ok, it, _ = levenberg_marquardt(
            aff.select(rep), v, tol=run.tol, maxiter=step.maxiter,
            patience=th.handover_newton_iterations, max_rank=r, th=th, deadline=run.deadline)
        ok = ok.reshape(n, K)
        total[pos] += it.reshape(n, K).amax(-1)  # the starts run side by side
        hit = ok.any(-1)
        if bool(hit.any()):
            first = ok.to(torch.uint8).argmax(-1)  # the first start that converged
            vv = v.reshape(n, K, D, -1)[torch.arange(n, device=v.device), first]
            y = vv @ vv.mH
            rr = y / bcast(B.trace(y).real, y).to(y.dtype)
            win = pos[hit]
            run.record(idx[win], aff.select(win), f"restarts@{r}", rr[hit],
                       torch.ones_like(hit[hit]), total[win], rank=np.full(len(win), r))
            total[win] = 0
            left[win] = False
    lost = left.nonzero().flatten()
    if len(lost):
        run.iters[idx[lost]] += total[lost]
        for i in idx[lost].tolist():
            run.path[i].append("restarts")


_STEPS = {"convex": _convex_step, "face": _face_step, "factored": _factored_step,
          "restarts": _restarts_step}


def clear_cache() -> None:
    """Drop the cached index tensors of every problem structure (they are rebuilt on demand:
    a few milliseconds for small problems). Benchmarks call this to charge each solve for them."""
    from ._gauss_newton import factored_maps
    from ._maps import structure

    structure.cache_clear()
    factored_maps.cache_clear()


def solve(problem: MarginalProblem, settings: ExactSettings | None = None, *,
          x0=None) -> SolverOutput:
    """Find rho >= 0, tr rho = 1 with tr_{J^c} rho = sigma_J for all J.

    Args:
        problem: the marginals (batched or not; numpy or torch on any device; computed in
            complex128).
        settings: :class:`ExactSettings` (tolerances left None follow the marginals' dtype).
        x0: optional warm start, any ``(D, D)`` or ``(*batch, D, D)`` matrix (e.g. an
            autoencoder's output); the default is the maximally mixed state.

    Returns:
        :class:`~qmarginal.solvers._api.SolverOutput` with the state (complex128, the problem's
        library, device and batch shape), iterations and convergence per element (the solver's
        own final check: lambda_min >= -eig_tol and marginal deviation <= marginal_tol; the
        certificate is :func:`qmarginal.reconstruct`'s), ``reason`` for the elements that did
        not converge, and ``info``: "path" (the steps that ran, e.g. "convex+factored"; "mio"
        when none), "plan", "seed", "rank" (rank of the answer where a factored or face step
        produced it; 0 otherwise), "rank_lower_bound", "rank_changes", "min_eigenvalue",
        "marginal_deviation", "time_s".

    Raises:
        MarginalError: a warm start of the wrong shape.

    Example:
        >>> from qmarginal import MarginalProblem, rank_mixture_state
        >>> p = MarginalProblem.from_state(rank_mixture_state(8, 1, seed=0), k=2)
        >>> out = solve(p)
        >>> bool(out.converged), out.info["rank"]
        (True, 1)
    """
    settings = settings or ExactSettings()
    if settings.path == "matrix_free":
        raise MarginalError("path='matrix_free' returns a factor, not a D x D state: call "
                            "qmarginal.reconstruct (or qmarginal.solvers.matrix_free.solve)")
    if settings.eig_tol is None or settings.marginal_tol is None:
        settings = settings.resolved(next(iter(problem.marginals.values())).dtype)
    torch = B.torch_module()
    t_start = time.perf_counter()
    # no autograd bookkeeping in the inner loops (small problems are bound by per-call overhead)
    with torch.inference_mode():
        out = _solve(problem, x0, settings, torch, t_start)
    if B.is_torch(out.state):
        out.state = out.state.clone()  # an ordinary tensor again (usable with autograd)
    return out


def _solve(problem: MarginalProblem, x0, st: ExactSettings, torch, t_start: float):
    """The body of :func:`solve` (run in torch's inference mode)."""
    th = st.thresholds
    deadline = None if st.time_limit is None else t_start + st.time_limit
    sig = next(iter(problem.marginals.values()))
    device = sig.device if B.is_torch(sig) else "cpu"
    batch = problem.batch_shape
    D = problem.dim
    Bn, subsets, sigmas = _flat_problem(problem, torch, device)
    aff = MarginalMaps(problem.dims, subsets, sigmas, torch, th.mobius_entries)
    x, seed_name = _seed(problem, x0, torch, device, Bn)

    # features: the rank bound, and the MIO of the seed (with a rank-deficient marginal checked
    # only when a Cholesky factorisation admits it: a PSD X with tr_{J^c} X = sigma_J vanishes
    # on ker(sigma_J) (x) H, which the MIO of the maximally mixed state rarely does; it does
    # when one marginal contains all the others, sigma_J (x) 1/d)
    eig_stop = st.safety * st.eig_tol
    lb, deficient, support = _rank_bound(aff, st.marginal_tol if st.rank_tol is None
                                         else st.rank_tol)
    x = aff.project(x)
    check_mio = ~deficient if x0 is None else torch.ones_like(deficient)
    if not bool(check_mio.all()):
        eye = torch.eye(D, dtype=x.dtype, device=device)
        _, chol = torch.linalg.cholesky_ex(0.5 * (x + x.mH) + eig_stop * eye)
        check_mio = check_mio | (chol == 0)
    neg_mass = torch.zeros(Bn, dtype=torch.float64, device=device)
    mio_done = torch.zeros(Bn, dtype=torch.bool, device=device)
    if bool(check_mio.any()):
        w = torch.linalg.eigvalsh(0.5 * (x + x.mH))
        mio_done = check_mio & (w[..., 0] >= -eig_stop)
        neg_mass = torch.where(check_mio, -w.clamp_max(0).sum(-1), neg_mass)

    run = _Run(aff, x, st, th, deadline, torch)
    run.done |= mio_done
    plans: dict = {}
    lb_np, def_np, mass_np, mio_np, sup_np = (B.to_numpy(a) for a in (
        lb, deficient, neg_mass, mio_done, support))
    for i in range(Bn):
        f = Features(dim=D, n_subsets=len(subsets), rank_bound=int(lb_np[i]),
                     deficient=bool(def_np[i]), negative_mass=float(mass_np[i]),
                     mio_is_state=bool(mio_np[i]), support_bound=int(sup_np[i]),
                     face_entries=FaceMaps.entries(problem.dims, subsets, int(sup_np[i])))
        plans.setdefault(plan(f, st, th), []).append(i)
    for steps, members in plans.items():
        group = torch.as_tensor(members, device=device)
        for step in steps:
            if run.out_of_time():
                break
            idx = group[~run.done[group]]
            if len(idx) == 0:
                break
            t_step = time.perf_counter()
            _STEPS[step.kind](run, aff.select(idx), idx, step)
            for i in idx.tolist():
                run.times[i].append(time.perf_counter() - t_step)

    # measure what is returned
    rho = run.rho
    rho = 0.5 * (rho + rho.mH)
    rho = rho / bcast(B.trace(rho).real, rho)
    lam = torch.linalg.eigvalsh(rho)[..., 0]
    dev = aff.deviation(rho)
    ok = (lam >= -st.eig_tol) & (dev <= st.marginal_tol)
    timed_out = run.out_of_time()
    plan_of = {i: steps for steps, members in plans.items() for i in members}
    reasons = []
    for i, good in enumerate(B.to_numpy(ok).tolist()):
        if good:
            reasons.append("")
        elif timed_out:
            reasons.append(f"time limit ({st.time_limit:g} s) reached")
        else:
            reasons.append("no step of the plan reached the tolerances ("
                           + ", ".join(str(s) for s in plan_of[i]) + ")")

    state = rho.reshape(tuple(batch) + (D, D))
    if not B.is_torch(sig):
        state = state.cpu().numpy()

    def per(a):
        a = B.to_numpy(a) if B.is_torch(a) else np.asarray(a)
        a = a.reshape(batch) if batch else a.reshape(())
        return a if batch else a.item()

    paths = np.array(["+".join(p) or "mio" for p in run.path], dtype=object)
    plan_text = np.array([" > ".join(str(s) for s in plan_of[i]) or "none" for i in range(Bn)],
                         dtype=object)
    step_times = np.array([" ".join(f"{t:.3g}" for t in ts) or "-" for ts in run.times],
                          dtype=object)
    info: dict[str, Any] = {
        "path": per(paths),
        "step_times_s": per(step_times),
        "plan": per(plan_text),
        "seed": seed_name,
        "rank": per(run.ranks),
        "rank_lower_bound": per(lb),
        "rank_changes": " ".join(run.log) or "none",
        "min_eigenvalue": per(lam),
        "marginal_deviation": per(dev),
        "time_s": time.perf_counter() - t_start,
    }
    reason = reasons if batch else reasons[0]
    if batch:
        reason = np.array(reasons, dtype=object).reshape(batch)
    return SolverOutput(state, iterations=per(run.iters), converged=per(ok), reason=reason,
                        info=info)
