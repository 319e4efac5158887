"""The solver contract: settings, the solver's result, and the registry of methods.

Every reconstruction method is one module with

- a settings dataclass deriving from :class:`Settings` (certifying methods from
  :class:`IterativeSettings`), whose ``__post_init__`` rejects bad values with a
  :class:`~qmarginal.MarginalError`;
- an entry point ``solve(problem, settings, *, x0=None) -> SolverOutput``. It receives a
  problem whose marginals are complex128 in the library the method asks for (numpy, or torch on
  the input's device) and tolerances already resolved (never None); batched methods get the
  whole batch, the others one element at a time;

plus one :class:`MethodSpec` in :data:`METHODS`. :func:`qmarginal.reconstruct` alone checks the
options against the settings, converts between numpy and torch, splits batches, and certifies
the result (:mod:`qmarginal.report`), so a method never needs to. Shared options have one
spelling everywhere: ``eig_tol``, ``marginal_tol``, ``maxiter``, ``time_limit``.

Certifying methods (``certifies=True``) promise a certified state or an error; approximate ones
(the paper's pipelines) return their raw output, measured and flagged the same way.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Callable

from ..errors import MarginalError

__all__ = ["Settings", "IterativeSettings", "SolverOutput", "MethodSpec", "METHODS",
           "register_method", "method_spec", "apply_options", "TOLERANCES",
           "default_tolerances"]

#: Default certification tolerances by the precision of the input marginals:
#: (eig_tol, marginal_tol). complex128: the paper's validity test (lambda_min >= -1e-10) and a
#: marginal deviation (largest absolute entry of tr_{J^c} rho - sigma_J) of 1e-9.
#: complex64: marginals rounded to single precision disagree on their overlaps by ~1e-8 and a
#: state returned in complex64 carries rounding of ~6e-8 per entry, so 1e-6 for both (measured
#: by benchmarks/sweep_exact.py on complex64 input: deviations and negative eigenvalues of the
#: returned complex64 states stay below 2e-7).
TOLERANCES: dict[str, tuple[float, float]] = {
    "complex128": (1e-10, 1e-9),
    "complex64": (1e-6, 1e-6),
}


def default_tolerances(dtype) -> tuple[float, float]:
    """(eig_tol, marginal_tol) for marginals of ``dtype`` (numpy or torch; see TOLERANCES)."""
    name = str(dtype)
    single = "complex64" in name or "float32" in name or "float16" in name
    return TOLERANCES["complex64" if single else "complex128"]


def _positive(name: str, value, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value) or not value > 0:
        raise MarginalError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class Settings:
    """Options every method shares: the certification tolerances.

    Attributes:
        eig_tol: a certified state has lambda_min >= -eig_tol (None: by the input precision,
            see :data:`TOLERANCES`).
        marginal_tol: a certified state has max_J max |tr_{J^c} rho - sigma_J| <= marginal_tol
            (None: by the input precision).
        threads: BLAS and torch threads for the call (None: as the user's environment has
            them; see :mod:`qmarginal.threads`).
    """

    eig_tol: float | None = None
    marginal_tol: float | None = None
    threads: int | None = None

    def __post_init__(self):
        _positive("eig_tol", self.eig_tol)
        _positive("marginal_tol", self.marginal_tol)
        if self.threads is not None and (isinstance(self.threads, bool) or not
                                         isinstance(self.threads, int) or self.threads < 1):
            raise MarginalError(f"threads must be None or an integer >= 1, got {self.threads!r}")

    def resolved(self, dtype) -> "Settings":
        """These settings with the tolerances left None taken from :data:`TOLERANCES`."""
        eig, marg = default_tolerances(dtype)
        return dataclasses.replace(
            self, eig_tol=eig if self.eig_tol is None else self.eig_tol,
            marginal_tol=marg if self.marginal_tol is None else self.marginal_tol)


@dataclass(frozen=True)
class IterativeSettings(Settings):
    """Options of the iterative (certifying) methods.

    Attributes:
        maxiter: iteration limit (what an iteration is depends on the method).
        time_limit: wall-clock seconds after which the method returns its best iterate
            (None: no limit).
    """

    maxiter: int = 5000
    time_limit: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.maxiter, bool) or not isinstance(self.maxiter, int) or self.maxiter < 1:
            raise MarginalError(f"maxiter must be an integer >= 1, got {self.maxiter!r}")
        _positive("time_limit", self.time_limit)


@dataclass
class SolverOutput:
    """What a solver returns to :func:`qmarginal.reconstruct`.

    Attributes:
        state: the candidate global state(s), ``(*batch, D, D)``, in the library it was given.
        iterations: iterations used (int, or an array per batch element).
        converged: whether the solver's own stopping test was met (bool or per element); the
            certificate is decided by ``reconstruct``, not by this flag.
        reason: why not converged, in words ("" when converged; per element for batches: a
            list of strings).
        info: anything else worth reporting (path taken, objective values, ...).
    """

    state: Any
    iterations: Any = 0
    converged: Any = True
    reason: Any = ""
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """One reconstruction method.

    Attributes:
        name: the ``method=`` name.
        entry: "package.module:function" of its ``solve`` (imported on first use, so optional
            dependencies load only for the methods that need them).
        settings: "package.module:Class" of its settings dataclass.
        certifies: True when the method returns only certified states (or raises).
        library: "numpy", "torch" or "any": the array library the solver computes in
            (``reconstruct`` converts the problem to complex128 in it, and the state back).
        batched: the solver takes a whole batch (else ``reconstruct`` passes one element at a
            time).
        warm_start: the solver accepts ``x0``.
        extra: the pip extra its dependencies come from (named in errors), or None.
        summary: one line for listings.
        aliases: old option names still accepted (with a DeprecationWarning): {old: new}.
        dense_bytes: planned peak bytes per entry of a D x D matrix for a method that always
            works with D x D matrices (checked by ``reconstruct`` before anything is allocated,
            :func:`qmarginal.memory_plan.require_dense`); None for a method that plans its own
            memory (exact, auto: :func:`qmarginal.memory_plan.route`).
    """

    name: str
    entry: str
    settings: str
    certifies: bool
    library: str = "any"
    batched: bool = True
    warm_start: bool = False
    extra: str | None = None
    summary: str = ""
    aliases: dict = field(default_factory=dict)
    dense_bytes: int | None = None

    def __post_init__(self):
        if self.library not in ("numpy", "torch", "any"):
            raise MarginalError(f"MethodSpec.library must be numpy, torch or any, "
                                f"got {self.library!r}")

    @staticmethod
    def _load(target: str, what: str, extra: str | None):
        module, _, attr = target.partition(":")
        try:
            return getattr(import_module(module), attr)
        except ImportError as exc:
            hint = f"; install it with `pip install 'qmarginal[{extra}]'`" if extra else ""
            raise ImportError(f"{what} needs a package that is not installed ({exc}){hint}") \
                from exc

    def solver(self) -> Callable:
        """The ``solve`` function (imports its module)."""
        return self._load(self.entry, f"method {self.name!r}", self.extra)

    def settings_class(self) -> type:
        """The settings dataclass (imports its module)."""
        return self._load(self.settings, f"method {self.name!r}", self.extra)

    def make_settings(self, settings=None, options: dict | None = None) -> Settings:
        """``settings`` (or the defaults) with keyword ``options`` replacing single fields.

        Raises:
            MarginalError: settings of another method's type, an unknown option (the message
                lists the valid ones), or an invalid value.
        """
        return apply_options(self.settings_class(), settings, options, aliases=self.aliases,
                             what=f"method={self.name!r}")


def apply_options(cls: type, settings=None, options: dict | None = None, *,
                  aliases: dict | None = None, what: str = ""):
    """``settings`` (an instance of the dataclass ``cls``, or its defaults) with keyword
    ``options`` replacing single fields; old names in ``aliases`` ({old: new}) are accepted with
    a DeprecationWarning.

    Raises:
        MarginalError: settings of another type, an unknown option (the message lists the valid
            ones), or an invalid value (from the dataclass's own checks).
    """
    what = what or cls.__name__
    if settings is None:
        settings = cls()
    elif not isinstance(settings, cls):
        raise MarginalError(f"{what} takes settings of type {cls.__name__}, got "
                            f"{type(settings).__name__}")
    options = dict(options or {})
    for old, new in (aliases or {}).items():
        if old in options:
            if new in options:
                raise MarginalError(f"{what}: give {new!r} only (the old name {old!r} means "
                                    f"the same)")
            warnings.warn(f"{what}: option {old!r} is now called {new!r}", DeprecationWarning,
                          stacklevel=4)
            options[new] = options.pop(old)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise MarginalError(f"unknown option(s) {unknown} for {what}; valid options: "
                            f"{', '.join(names)}")
    return dataclasses.replace(settings, **options)


#: method name -> its :class:`MethodSpec`
METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add ``spec`` to :data:`METHODS` (``replace=True`` to redefine a name)."""
    if not isinstance(spec, MethodSpec):
        raise MarginalError(f"register_method takes a MethodSpec, got {type(spec).__name__}")
    if spec.name in METHODS and not replace:
        raise MarginalError(f"method {spec.name!r} is already registered (pass replace=True)")
    METHODS[spec.name] = spec
    return spec


def method_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name``.

    Raises:
        MarginalError: unknown method (the message lists the registered ones).
    """
    if not isinstance(name, str) or name not in METHODS:
        raise MarginalError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


_S = "qmarginal.solvers"
for _spec in [
    MethodSpec("exact", f"{_S}.exact:solve", f"{_S}.exact:ExactSettings", certifies=True,
               library="torch", warm_start=True, extra="torch",
               summary="MIO, then convex L-BFGS or factored Levenberg-Marquardt, by a plan"),
    MethodSpec("auto", f"{_S}.auto:solve", f"{_S}.auto:AutoSettings", certifies=True,
               library="torch", extra="torch",
               summary="the shipped CDAE as a warm start for the exact solver"),
    MethodSpec("sdp", f"{_S}.sdp:solve", f"{_S}.sdp:SDPSettings", certifies=True,
               library="numpy", batched=False, warm_start=True, extra="sdp",
               summary="the paper's SDP through CVXPY, polished by the exact solver",
               aliases={"max_iters": "maxiter"}, dense_bytes=16384),
    MethodSpec("maxent", f"{_S}.maxent:solve", f"{_S}.maxent:MaxEntSettings", certifies=True,
               library="numpy", batched=False,
               summary="the maximum-entropy state (a Gibbs state on the given subsets)",
               aliases={"tol": "marginal_tol", "max_iter": "maxiter"}, dense_bytes=512),
    MethodSpec("mio", f"{_S}.mio:solve", f"{_S}.mio:MIOSettings", certifies=False,
               summary="the paper's MIO of a seed (Eq. (5)); not a state in general",
               dense_bytes=128),
    MethodSpec("cdae", f"{_S}.cdae:solve", f"{_S}.cdae:CDAESettings", certifies=False,
               library="torch", extra="torch", summary="the paper's pipeline: MIO, then the CDAE",
               dense_bytes=256),
    MethodSpec("cdae+mio", f"{_S}.cdae:solve_then_mio", f"{_S}.cdae:CDAESettings",
               certifies=False, library="torch", extra="torch",
               summary="MIO, the CDAE, then the MIO again (the paper's Fig. 4)", dense_bytes=256),
]:
    register_method(_spec)
del _spec
