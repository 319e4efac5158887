"""One entry point for every reconstruction method, and the contract it enforces.

``reconstruct(problem, method=...)`` looks the method up in the registry
(:data:`qmarginal.solvers._api.METHODS`), checks the options against its settings dataclass,
converts the problem to complex128 in the library the method computes in, splits batches for
the methods that take one problem at a time, runs the method, and certifies the answer
(:func:`qmarginal.report.measure`, independent of the method's own bookkeeping). Then:

- a **certifying** method ("exact", "auto", "sdp", "maxent") returns only certified states. For
  an element that is not certified, :func:`qmarginal.check_compatibility` runs: a verified
  certificate of incompatibility gives :class:`~qmarginal.IncompatibleMarginalsError`; a
  certified state that the check finds is returned instead (except for "maxent", whose answer
  must be the maximum-entropy state); otherwise :class:`~qmarginal.NotCertifiedError`, carrying
  the best iterate, its report and the reason.
- an **approximate** method ("mio", "cdae", "cdae+mio": the paper's pipelines) returns its raw
  output, measured and flagged the same way (``report.certified``, ``report.verdict``).

Errors are raised for a single problem unless ``strict=False``; for a batch, every element is
answered and the failures are listed per element in ``Reconstruction.errors`` unless
``strict=True``. Nothing else ever raises for a compatible, valid input.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from . import _backend as B
from .errors import IncompatibleMarginalsError, MarginalError, NotCertifiedError
from .problem import MarginalProblem
from .report import VERDICT_INCOMPATIBLE, Reconstruction, Report, measure
from .solvers._api import METHODS, SolverOutput, method_spec, register_method
from .threads import thread_limits

__all__ = ["reconstruct", "Reconstruction", "Report", "METHODS", "register_method"]

#: methods whose answer is a particular state (not just any certified one): a state found by
#: the compatibility check does not replace theirs
_NO_RESCUE = {"maxent"}


def _elements(problem: MarginalProblem) -> list[MarginalProblem]:
    """The elements of a (possibly batched) problem as a flat list (views, not validated)."""
    batch = problem.batch_shape
    if not batch:
        return [problem]
    flat = math.prod(batch)
    table = {J: s.reshape((flat,) + tuple(s.shape[-2:])) for J, s in problem.marginals.items()}
    return [MarginalProblem({J: a[i] for J, a in table.items()}, problem.dims,
                            tolerances=problem.tolerances, validate=False) for i in range(flat)]


def _index(flat: int, batch: tuple) -> tuple:
    return tuple(int(i) for i in np.unravel_index(flat, batch)) if batch else ()


def _in_library(problem: MarginalProblem, library: str) -> MarginalProblem:
    """The problem with complex128 marginals in ``library`` ("numpy", "torch" or "any")."""
    if library == "numpy" or (library == "any" and not problem.is_torch):
        table = {J: np.asarray(B.to_numpy(s) if B.is_torch(s) else s, dtype=np.complex128)
                 for J, s in problem.marginals.items()}
        return MarginalProblem(table, problem.dims, tolerances=problem.tolerances,
                               validate=False)
    torch = B.torch_module()
    device = next(iter(problem.marginals.values())).device if problem.is_torch else "cpu"
    return problem.to_torch(device=device, dtype=torch.complex128)


def _like_input(x, problem: MarginalProblem):
    """``x`` (numpy or torch) in the input problem's library and device, complex128."""
    like = next(iter(problem.marginals.values()))
    if B.is_torch(like):
        torch = B.torch_module()
        return B.as_array(x, like=like).to(torch.complex128)
    return np.asarray(B.to_numpy(x) if B.is_torch(x) else x, dtype=np.complex128)


def _merge(outs: list[SolverOutput], batch: tuple) -> SolverOutput:
    """One output for a batch from the outputs of its elements."""
    first = outs[0].state
    if B.is_torch(first):
        torch = B.torch_module()
        state = torch.stack([o.state for o in outs]).reshape(batch + tuple(first.shape[-2:]))
    else:
        state = np.stack([np.asarray(o.state) for o in outs]).reshape(batch + first.shape[-2:])

    def arr(values):
        a = np.empty(len(values), dtype=object)
        a[:] = values
        try:
            return np.array(values).reshape(batch) if all(
                np.ndim(v) == 0 for v in values) else a.reshape(batch)
        except (ValueError, TypeError):
            return a.reshape(batch)

    keys = list(dict.fromkeys(k for o in outs for k in o.info))
    info = {k: arr([o.info.get(k) for o in outs]) for k in keys}
    return SolverOutput(state, iterations=arr([o.iterations for o in outs]),
                        converged=arr([bool(o.converged) for o in outs]),
                        reason=arr([o.reason for o in outs]), info=info)


def _solve(spec, problem: MarginalProblem, settings, x0) -> SolverOutput:
    """Run the method on ``problem`` (already in its library), batch split if it must be."""
    solve = spec.solver()
    batch = problem.batch_shape
    if spec.batched or not batch:
        return solve(problem, settings, x0=x0)
    D = problem.dim
    xs = None
    if x0 is not None:
        a = np.asarray(B.to_numpy(x0) if B.is_torch(x0) else x0)
        if a.shape[-2:] != (D, D):
            raise MarginalError(f"warm start x0 must be {D} x {D}, got shape {a.shape}")
        try:
            xs = np.broadcast_to(a, batch + (D, D)).reshape((-1, D, D))
        except ValueError as exc:
            raise MarginalError(f"warm start x0 of shape {a.shape} does not match the "
                                f"problem's batch shape {batch}") from exc
    outs = [solve(p, settings, x0=None if xs is None else xs[i])
            for i, p in enumerate(_elements(problem))]
    return _merge(outs, batch)


def _settings_dict(st) -> dict:
    """The settings as plain values for the report (nested dataclasses by name)."""
    out = {}
    for f in dataclasses.fields(st):
        v = getattr(st, f.name)
        if dataclasses.is_dataclass(v):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
                else f.default
            v = f"{type(v).__name__} ({'default' if v == default else 'custom'})"
        elif not isinstance(v, (bool, int, float, str, type(None))):
            v = type(v).__name__ if not isinstance(v, (list, tuple, dict)) else str(v)
        out[f.name] = v
    return out


def _where(index: tuple) -> str:
    return f" (batch element {index})" if index else ""


def _incompatible(method: str, result, index: tuple) -> IncompatibleMarginalsError:
    cert = result.certificate
    return IncompatibleMarginalsError(
        f"no state has these marginals{_where(index)}: certificate verified, lambda_min(W) = "
        f"{cert.lambda_min:.6g} > sum_J tr(w_J sigma_J) = {cert.energy:.6g} (gap {cert.gap:.3g},"
        f" rounding margin {cert.margin:.1e}); distance to the nearest compatible marginals at "
        f"most {result.residual_norm:.3g} (pass least_squares=True to reconstruct a state with "
        f"the nearest ones)", result, index)


def reconstruct(problem: MarginalProblem, method: str = "exact", *, settings=None, x0=None,
                least_squares: bool = False, strict: bool | None = None, check: bool = True,
                rank: int | None = None, **options) -> Reconstruction:
    """Find a global state with the marginals of ``problem`` by the named method, certified.

    The contract. A state is *certified* when it is Hermitian with trace 1, lambda_min >=
    -eig_tol and max_J max |tr_{J^c} rho - sigma_J| <= marginal_tol, all re-measured here in
    double precision, independently of the method (:mod:`qmarginal.report`). A certifying method
    ("exact", "auto", "sdp", "maxent") returns only certified states, or raises
    :class:`~qmarginal.IncompatibleMarginalsError` (only with a verified certificate) or
    :class:`~qmarginal.NotCertifiedError` (with the best iterate, its report and the reason).
    An approximate method ("mio", "cdae", "cdae+mio") returns its raw output, flagged:
    ``report.certified`` and ``report.verdict`` say what it is. Default tolerances follow the
    input precision (complex128: eig_tol 1e-10, marginal_tol 1e-9; complex64: 1e-6 and 1e-6;
    :data:`qmarginal.solvers._api.TOLERANCES`); the output has the input's precision, library
    and device, and is certified as returned.

    Args:
        problem: the marginals (possibly batched; numpy or torch, any device, any precision:
            the methods compute in complex128).
        method: a name in :data:`METHODS` ("exact" by default).
        settings: the method's settings dataclass (e.g. ``ExactSettings(...)``); keyword
            ``options`` replace single fields. Every method spells the shared options alike:
            ``eig_tol``, ``marginal_tol``, and for the iterative ones ``maxiter``,
            ``time_limit``.
        x0: a warm start ``(D, D)`` or ``(*batch, D, D)``, for methods that take one ("exact",
            "sdp").
        least_squares: for incompatible input, reconstruct from the nearest compatible marginals
            in least squares (noisy, measured marginals: build those problems with
            ``validate=False``); the report measures against those marginals and says so.
        strict: raise for a failing element. None (default): raise for a single problem, and
            list per-element errors for a batch; True: raise for a batch too (the first error;
            every element's answer is in its ``batch`` attribute); False: never raise, return
            the best iterates with ``certified=False`` and the errors in ``errors``.
        check: run :func:`~qmarginal.check_compatibility` on the elements a certifying method
            did not certify (False: report them as not certified without deciding). The check
            has a time budget of its own, the method's ``time_limit``: a failing element can
            take up to about twice that.
        rank: ask for a certified state of rank <= ``rank`` (1: the pure-state marginal
            problem; "exact" and "auto" only): rho = V V^dagger with V of D x rank, from random
            restarts on the matrix-free path (:mod:`qmarginal.rank_constrained`); raises
            IncompatibleMarginalsError where a cheap necessary condition proves none exists
            and NotCertifiedError where none was found (not a proof).
        **options: fields of the method's settings (an unknown one raises and lists the valid
            ones).

    Returns:
        :class:`Reconstruction`: the Hermitian, trace-normalised state, its :class:`Report`
        (``certified`` and ``verdict`` per element) and ``errors`` per failing element. For
        "exact" and "auto", where the matrix-free path answered (D x D matrices do not fit
        the memory budget, ``path="matrix_free"``, or the short matrix-free attempt from D =
        1024 on: :mod:`qmarginal.memory_plan`), a
        :class:`~qmarginal.report.FactoredReconstruction`: ``factor`` V with rho = V V^dagger
        / tr, certified from V; ``state`` is materialised on request.

    Raises:
        MarginalError: unknown method, unknown or invalid options, invalid input.
        InsufficientMemoryError: the requested path cannot fit in memory (refused before
            allocation; the message says what would fit).
        IncompatibleMarginalsError: no state has these marginals (a verified certificate).
        NotCertifiedError: neither a certified state nor a certificate was found.
        ImportError: the method's optional dependencies are missing (the message names the
            extra to install).

    Example:
        >>> import qmarginal as qm
        >>> p = qm.MarginalProblem.from_state(qm.rank_mixture_state(16, 2, seed=1), k=3)
        >>> r = qm.reconstruct(p)
        >>> r.report.certified, r.report.verdict
        (True, 'certified state')
        >>> qm.reconstruct(p, "mio").report.verdict.startswith("approximate (mio)")
        True
    """
    if not isinstance(problem, MarginalProblem):
        raise MarginalError(f"problem must be a MarginalProblem, got {type(problem).__name__}")
    spec = method_spec(method)
    st = spec.make_settings(settings, options)
    with thread_limits(getattr(st, "threads", None)):
        if rank is not None:
            return _reconstruct_rank(problem, spec, st, rank, x0, least_squares, strict)
        return _reconstruct(problem, spec, st, x0, least_squares, strict, check)


def _reconstruct_rank(problem, spec, st, rank, x0, least_squares, strict) -> Reconstruction:
    """``reconstruct(rank=r)``: :func:`qmarginal.rank_constrained.find_low_rank`."""
    from .rank_constrained import RankSettings, find_low_rank
    from .report import FactoredReconstruction

    if spec.name not in ("exact", "auto"):
        raise MarginalError(f"rank= is served by method 'exact' (and 'auto'), not {spec.name!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise MarginalError(f"rank must be an integer >= 1, got {rank!r}")
    if x0 is not None or least_squares:
        raise MarginalError("rank= takes no warm start x0 and no least_squares")
    st = st.resolved(next(iter(problem.marginals.values())).dtype)
    npb = problem.to_numpy() if problem.is_torch else problem
    rst = RankSettings(rank=rank, maxiter=st.maxiter, time_limit=st.time_limit, seed=st.seed,
                       eig_tol=st.eig_tol, marginal_tol=st.marginal_tol)
    try:
        state, report, _ = find_low_rank(npb, rst)
    except NotCertifiedError as exc:
        if strict is False:
            return exc.reconstruction
        raise
    return FactoredReconstruction(state, report)


def _reconstruct(problem: MarginalProblem, spec, st, x0, least_squares: bool,
                 strict: bool | None, check: bool) -> Reconstruction:
    """The body of :func:`reconstruct` (settings made, thread limits in force)."""
    method = spec.name
    path_taken, mf_rank = "dense", None
    if spec.name in ("exact", "auto"):
        # the memory plan, before any import or allocation of size D x D; the matrix-free
        # path would start at the purity rank bound
        from .memory_plan import purity_rank_bound, route

        mf_rank = st.rank or (None if problem.batch_shape else purity_rank_bound(problem))
        path_taken = route(problem, st.path, mf_rank, st.memory_budget)
    elif spec.dense_bytes is not None:
        from .memory_plan import require_dense

        require_dense(problem, f"method {spec.name!r}", bytes_per_entry=spec.dense_bytes)
    spec.solver()  # import the method's module (and its libraries) before the clock starts
    t0 = time.perf_counter()
    in_dtype = next(iter(problem.marginals.values())).dtype
    st = st.resolved(in_dtype)
    eig_tol, marginal_tol = st.eig_tol, st.marginal_tol
    if x0 is not None and not spec.warm_start:
        raise MarginalError(f"method {method!r} takes no warm start x0 (methods that do: "
                            f"{sorted(n for n, s in METHODS.items() if s.warm_start)})")
    batch = problem.batch_shape
    flat = math.prod(batch) if batch else 1
    first_attempt = None
    if path_taken == "matrix_free":
        return _reconstruct_factored(problem, spec, st, mf_rank, x0, least_squares, strict, t0)
    if path_taken == "matrix_free_first" and x0 is None and not least_squares:
        rec, first_attempt = _matrix_free_first(problem, spec, st, mf_rank, t0)
        if rec is not None:
            return rec
    work = _in_library(problem, spec.library)

    # least squares: the nearest compatible marginals replace incompatible ones
    target, extra = problem, {}
    ls_results = None
    if least_squares:
        from .compatibility import check_compatibility

        ls_results = [check_compatibility(p, eig_tol=eig_tol, marginal_tol=marginal_tol)
                      for p in _elements(_in_library(problem, "numpy"))]
        if any(r.status == "incompatible" for r in ls_results):
            near = {J: np.stack([r.nearest_marginals[J] if r.status == "incompatible" else
                                 np.asarray(B.to_numpy(p.marginals[J]), dtype=np.complex128)
                                 for r, p in zip(ls_results, _elements(problem))])
                    .reshape(batch + tuple(s.shape[-2:])) for J, s in problem.marginals.items()}
            target = problem.with_marginals({J: _like_input(a, problem) for J, a in near.items()},
                                            validate=False)
            work = _in_library(target, spec.library)
            dist = [r.residual_norm if r.status == "incompatible" else 0.0 for r in ls_results]
            status = [r.status for r in ls_results]
            extra = {"least_squares": True,
                     "distance_to_targets": dist[0] if not batch else np.array(dist).reshape(batch),
                     "input_status": status[0] if not batch else np.array(status).reshape(batch)}
        else:
            extra = {"least_squares": "not needed (input compatible)"}

    work_x0 = None if x0 is None else (
        _like_input(x0, work) if spec.library != "numpy" else np.asarray(
            B.to_numpy(x0) if B.is_torch(x0) else x0, dtype=np.complex128))
    out = _solve(spec, work, st, work_x0)
    state = _like_input(out.state, problem)
    settings_d = _settings_dict(st)
    info = {**out.info, **extra}
    if first_attempt:
        info["matrix_free_attempt"] = first_attempt

    def measured(state, reason=out.reason):
        return measure(target, state, eig_tol=eig_tol, marginal_tol=marginal_tol, method=method,
                       certifies=spec.certifies, iterations=out.iterations,
                       converged=out.converged, reason=reason,
                       wall_time=time.perf_counter() - t0, settings=settings_d, info=info,
                       out_dtype=in_dtype)

    rho, report = measured(state)
    if not spec.certifies:
        return Reconstruction(rho, report)

    # the policy for elements that are not certified
    certified = np.asarray(report.certified, dtype=bool).reshape(flat)
    if certified.all():
        return Reconstruction(rho, report)
    elements = _elements(target)
    reasons = np.asarray(out.reason, dtype=object).reshape(-1) if batch else [out.reason]
    errors: dict = {}
    replaced = False
    incompatible = []
    state_flat = state.reshape((flat,) + tuple(state.shape[-2:]))
    if not B.is_torch(state_flat):
        state_flat = np.array(state_flat)
    for i in np.flatnonzero(~certified):
        index = _index(int(i), batch)
        reason = str(reasons[i] or "the output misses the tolerances")
        if ls_results is not None and ls_results[i].status == "incompatible":
            # the method failed on the (boundary) nearest marginals: the least-squares state
            # has them by construction
            state_flat[i] = _like_input(ls_results[i].state, problem)
            info.setdefault("fallback", f"{method} gave no certified state for the nearest "
                                        f"marginals; the least-squares state is returned")
            replaced = True
            continue
        cres = None
        if check:
            from .compatibility import check_compatibility

            cres = check_compatibility(
                _in_library(elements[i], "numpy"), eig_tol=eig_tol, marginal_tol=marginal_tol,
                use_exact=method not in ("exact", "auto"), nearest=False,
                time_limit=getattr(st, "time_limit", None))
            if cres.status == "incompatible":
                errors[index] = _incompatible(method, cres, index)
                incompatible.append(int(i))
                continue
            if cres.status == "compatible" and method not in _NO_RESCUE:
                state_flat[i] = _like_input(cres.state, problem)
                info.setdefault("rescued", f"{method}: {reason}; the compatibility check "
                                           f"({cres.method}) found the certified state returned")
                replaced = True
                continue
            reason += ("; the marginals are compatible (the check found a certified state, "
                       "in error.compatibility.state), but this method did not reach one"
                       if cres.status == "compatible" else
                       f"; compatibility undetermined ({cres.info.get('reason', '')})")
        else:
            reason += "; compatibility not checked (check=False)"
        errors[index] = NotCertifiedError("", reason=reason, compatibility=cres, index=index)
    if replaced:
        rho, report = measured(state_flat.reshape(state.shape))
        certified = np.asarray(report.certified, dtype=bool).reshape(flat)
    # the not-certified elements: messages with their best iterate's numbers
    for index, err in list(errors.items()):
        if isinstance(err, NotCertifiedError):
            elem = Reconstruction(rho[index] if index else rho,
                                  _element_report(report, index, batch))
            lam = elem.report.min_eigenvalue
            dev = elem.report.max_marginal_deviation
            errors[index] = NotCertifiedError(
                f"{method}: no certified state{_where(index)}: {err.reason}; best iterate: "
                f"lambda_min {lam:.3g}, marginal deviation {dev:.3g} (tolerances: eig_tol "
                f"{eig_tol:g}, marginal_tol {marginal_tol:g})", reason=err.reason,
                reconstruction=elem, compatibility=err.compatibility, index=index)
    if incompatible:
        verdict = np.asarray(report.verdict, dtype=object).reshape(flat).copy()
        verdict[incompatible] = VERDICT_INCOMPATIBLE
        report = dataclasses.replace(report, verdict=verdict.reshape(batch) if batch else
                                     str(verdict[0]))
    result = Reconstruction(rho, report, errors)
    if errors and (strict is True or (strict is None and not batch)):
        first = errors[sorted(errors)[0]]
        if batch:
            first.args = (f"{len(errors)} of {flat} batch elements failed; the first: "
                          f"{first.args[0]}",)
        first.batch = result
        raise first
    return result


def _solve_factored(problem, spec, st, mst, t0, route_note: str):
    """Run the matrix-free path with settings ``mst`` and measure its factor
    (:func:`~qmarginal.report.measure_factored`): (solver result, FactoredReconstruction)."""
    from .report import FactoredReconstruction, measure_factored
    from .solvers import matrix_free

    res = matrix_free.solve(problem, mst)
    info = {"path": "matrix_free", "rank": res.rank, "solver_time_s": res.time_s,
            "route": route_note}
    report = measure_factored(
        problem, res.state, eig_tol=st.eig_tol, marginal_tol=st.marginal_tol,
        method=spec.name, certifies=True, iterations=res.iterations,
        converged=res.certified, reason=res.reason, wall_time=time.perf_counter() - t0,
        settings=_settings_dict(st), info=info)
    return res, FactoredReconstruction(res.state, report)


def _matrix_free_first(problem, spec, st, rank: int, t0):
    """The short matrix-free attempt of ``route``'s "matrix_free_first": (a certified
    :class:`~qmarginal.report.FactoredReconstruction`, "") or (None, why it did not certify)."""
    from . import memory_plan as mp
    from .solvers.matrix_free import MatrixFreeSettings

    seconds = mp.MATRIX_FREE_FIRST_SECONDS
    if st.time_limit is not None:
        seconds = min(seconds, st.time_limit / 4)
    cap = mp.MATRIX_FREE_FIRST_MAX_RANK
    mst = MatrixFreeSettings(
        eig_tol=st.eig_tol, marginal_tol=st.marginal_tol,
        maxiter=min(st.maxiter, mp.MATRIX_FREE_FIRST_MAXITER), time_limit=seconds,
        rank=rank, max_rank=max(rank, min(st.max_rank or cap, cap)), seed=st.seed)
    res, rec = _solve_factored(problem, spec, st, mst, t0,
                               f"matrix_free first (D >= {mp.MATRIX_FREE_FIRST_MIN_DIM}; the "
                               "dense path would follow)")
    if rec.certified:
        return rec, ""
    return None, f"{res.reason or 'not certified'} after {res.iterations} iterations, " \
                 f"{res.time_s:.3g} s"


def _reconstruct_factored(problem, spec, st, rank: int, x0, least_squares, strict, t0):
    """The matrix-free path (:mod:`qmarginal.solvers.matrix_free`): a factored state certified
    from its factor, or NotCertifiedError (compatibility is not checked there: the check
    needs D x D matrices)."""
    from .solvers.matrix_free import MatrixFreeSettings

    if x0 is not None:
        raise MarginalError("the matrix-free path takes no D x D warm start x0")
    if least_squares:
        raise MarginalError("least_squares=True needs the compatibility check, which needs "
                            "D x D matrices; not available on the matrix-free path")
    mst = MatrixFreeSettings(
        eig_tol=st.eig_tol, marginal_tol=st.marginal_tol, maxiter=st.maxiter,
        time_limit=st.time_limit, rank=rank, max_rank=st.max_rank, seed=st.seed)
    res, rec = _solve_factored(problem, spec, st, mst, t0,
                               "matrix_free (requested)" if st.path == "matrix_free" else
                               "matrix_free (D x D matrices do not fit the memory budget)")
    if rec.certified or strict is False:
        return rec
    reason = (res.reason or "the factor misses the tolerances") + (
        "; compatibility not checked (the check needs D x D matrices)")
    raise NotCertifiedError(
        f"{spec.name}: no certified state: {reason}; best factor: marginal deviation "
        f"{rec.report.max_marginal_deviation:.3g} (marginal_tol {st.marginal_tol:g})",
        reason=reason, reconstruction=rec)


def _element_report(report: Report, index: tuple, batch: tuple) -> Report:
    """The report of one batch element (``index`` () for an unbatched report)."""
    if not index:
        return report

    def pick(v):
        a = np.asarray(B.to_numpy(v) if B.is_torch(v) else v)
        if a.ndim >= len(batch) and a.shape[:len(batch)] == batch:
            x = a[index]
            return x.item() if np.ndim(x) == 0 else x
        return v

    changes = {f.name: pick(getattr(report, f.name)) for f in dataclasses.fields(report)
               if f.name not in ("method", "wall_time", "tolerances", "settings", "info")}
    changes["info"] = {k: pick(v) for k, v in report.info.items()}
    return dataclasses.replace(report, **changes)
