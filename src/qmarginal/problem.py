"""The marginal problem: the input of every solver.

A :class:`MarginalProblem` holds the number of sites N, the local dimensions d_0..d_{N-1}, and
the marginals {J: sigma_J} on any subsets J of sites (sorted tuples, site 0 the leftmost tensor
factor). The problem asks for a density matrix rho on H_0 (x) ... (x) H_{N-1} with
tr_{J^c} rho = sigma_J for every J. Marginals may carry common leading batch axes: one problem
object then holds a batch of problems of the same structure, solved together.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import _backend as B
from ._sites import normalize_dims, normalize_subset, subset_dim
from .errors import MarginalError
from .marginals import k_body_subsets
from .partial_trace import partial_trace, resolve

__all__ = ["MarginalProblem", "Tolerances"]



@dataclass(frozen=True)
class Tolerances:
    """Tolerances of the input validation (absolute).

    Attributes:
        hermitian: max |sigma - sigma^dagger| entry allowed.
        trace: max |tr sigma - 1| allowed.
        psd: smallest eigenvalue allowed is -psd.
        overlap: max Frobenius norm of the difference between two marginals' reductions to
            their common sites.
    """

    hermitian: float = 1e-10
    trace: float = 1e-10
    psd: float = 1e-10
    overlap: float = 1e-9

    def __post_init__(self):
        for name in ("hermitian", "trace", "psd", "overlap"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(v) or v <= 0:
                raise MarginalError(f"tolerance {name} must be a finite number > 0, got {v!r}")

    @classmethod
    def for_dtype(cls, dtype) -> "Tolerances":
        """Defaults for double precision; 1e-5 for single precision inputs."""
        name = str(dtype)
        if "complex64" in name or "float32" in name:
            return cls(1e-5, 1e-5, 1e-5, 1e-5)
        return cls()


def _where(batch_index) -> str:
    return f" [batch index {batch_index}]" if batch_index != () else ""


def _first_bad(mask: np.ndarray):
    idx = np.argwhere(mask)
    return tuple(int(i) for i in idx[0]) if len(idx) else None


class MarginalProblem:
    """A quantum marginal problem: find rho >= 0, tr rho = 1, with tr_{J^c} rho = sigma_J.

    Build it with :meth:`from_state`, :meth:`from_arrays`, :meth:`load`, or directly from a
    mapping ``{J: sigma_J}``. Construction validates the input (see :meth:`validate`) unless
    ``validate=False``.

    Args:
        marginals: mapping from subsets of sites (sorted tuples) to arrays ``(*batch, d_J, d_J)``.
        dims: one local dimension for all sites, or one per site.
        n_sites: number of sites; inferred as (largest site index + 1) when ``dims`` is an int and
            this is None, or as len(dims).
        tolerances: validation tolerances (defaults from :meth:`Tolerances.for_dtype`).
        validate: run :meth:`validate` now.

    Raises:
        MarginalError: any invalid input; the message names the marginal and the value.

    Example:
        >>> from qmarginal import MarginalProblem, hilbert_schmidt_state
        >>> p = MarginalProblem.from_state(hilbert_schmidt_state(8, seed=1), k=2)
        >>> p.n_sites, p.subsets
        (3, [(0, 1), (0, 2), (1, 2)])
    """

    marginals: dict
    dims: tuple[int, ...]
    tolerances: Tolerances

    def __init__(self, marginals: Mapping, dims: int | Sequence[int] = 2,
                 n_sites: int | None = None, *, tolerances: Tolerances | None = None,
                 validate: bool = True):
        if not isinstance(marginals, Mapping):
            raise MarginalError(
                f"marginals must be a mapping {{subset: sigma}}, got {type(marginals).__name__}"
            )
        if not marginals:
            raise MarginalError("a marginal problem needs at least one marginal")
        keys = list(marginals.keys())
        if n_sites is None and isinstance(dims, (int, np.integer)):
            try:
                n_sites = 1 + max(int(s) for key in keys for s in
                                  ((key,) if isinstance(key, (int, np.integer)) else key))
            except (TypeError, ValueError) as exc:
                raise MarginalError(f"marginal keys must be tuples of site indices: {keys}") from exc
        dims_t = normalize_dims(dims, n_sites=n_sites)
        n = len(dims_t)
        table: dict[tuple[int, ...], Any] = {}
        for key, sigma in marginals.items():
            J = normalize_subset(key, n, what="marginal subset", allow_empty=False)
            if J in table:
                raise MarginalError(f"marginal subset {J} is given twice")
            table[J] = self._as_matrix(sigma, J)
        first = next(iter(table.values()))
        tol = tolerances if tolerances is not None else Tolerances.for_dtype(first.dtype)
        self.marginals = table
        self.dims = dims_t
        self.tolerances = tol
        if validate:
            self.validate()
        else:  # shapes and finite entries are checked always: nothing downstream guards them
            self.check_structure()

    @staticmethod
    def _as_matrix(sigma, J):
        if B.is_torch(sigma):
            return B.to_complex(sigma)
        try:
            arr = np.asarray(sigma)
        except Exception as exc:  # ragged lists and the like
            raise MarginalError(f"marginal on sites {J} is not a numeric array: {exc}") from exc
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise MarginalError(f"marginal on sites {J} is not a numeric array (dtype {arr.dtype})")
        return B.to_complex(arr)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, subsets: Sequence[Sequence[int]], arrays: Sequence[Any],
                    dims: int | Sequence[int] = 2, n_sites: int | None = None,
                    **kwargs) -> "MarginalProblem":
        """Build from parallel lists of subsets and arrays (duplicates are reported)."""
        subsets = list(subsets)
        arrays = list(arrays)
        if len(subsets) != len(arrays):
            raise MarginalError(f"{len(subsets)} subsets but {len(arrays)} marginal arrays")
        seen: set = set()
        table = {}
        for s, a in zip(subsets, arrays):
            key = tuple(int(v) for v in s)
            if key in seen:
                raise MarginalError(f"marginal subset {key} is given twice")
            seen.add(key)
            table[key] = a
        return cls(table, dims, n_sites, **kwargs)

    @classmethod
    def from_state(cls, rho, k: int | None = None, subsets: Iterable[Sequence[int]] | None = None,
                   dims: int | Sequence[int] = 2, **kwargs) -> "MarginalProblem":
        """The marginals of a global state ``rho`` (all k-body ones, or on ``subsets``).

        Raises:
            MarginalError: neither or both of ``k`` and ``subsets``; bad dims or subsets.
        """
        dims_t, _, _ = resolve(rho, (), dims)
        if (k is None) == (subsets is None):
            raise MarginalError("give exactly one of `k` or `subsets`")
        if subsets is None:
            subsets = k_body_subsets(len(dims_t), k)
        table = {}
        for J in subsets:
            Jt = normalize_subset(J, len(dims_t), what="subset", allow_empty=False)
            if Jt in table:
                raise MarginalError(f"marginal subset {Jt} is given twice")
            table[Jt] = partial_trace(rho, Jt, dims_t)
        return cls(table, dims_t, **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def n_sites(self) -> int:
        return len(self.dims)

    @property
    def dim(self) -> int:
        """Dimension D of the global Hilbert space."""
        return math.prod(self.dims)

    @property
    def subsets(self) -> list[tuple[int, ...]]:
        return list(self.marginals)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(next(iter(self.marginals.values())).shape[:-2])

    @property
    def is_torch(self) -> bool:
        return B.is_torch(next(iter(self.marginals.values())))

    def with_marginals(self, marginals: Mapping, *, validate: bool = False) -> "MarginalProblem":
        """The same structure with other marginal arrays (same subsets)."""
        return MarginalProblem(marginals, self.dims, tolerances=self.tolerances, validate=validate)

    def to_torch(self, device=None, dtype=None) -> "MarginalProblem":
        """A copy whose marginals are torch tensors (complex128 unless ``dtype`` says)."""
        torch = B.torch_module()
        dtype = dtype or torch.complex128
        table = {J: (s if B.is_torch(s) else torch.as_tensor(np.asarray(s))).to(device=device, dtype=dtype)
                 for J, s in self.marginals.items()}
        return MarginalProblem(table, self.dims, tolerances=Tolerances.for_dtype(dtype), validate=False)

    def to_numpy(self) -> "MarginalProblem":
        table = {J: B.to_numpy(s) for J, s in self.marginals.items()}
        return MarginalProblem(table, self.dims, tolerances=self.tolerances, validate=False)

    def __getitem__(self, index) -> "MarginalProblem":
        """One problem (or a sub-batch) of a batched problem."""
        if not self.batch_shape:
            raise MarginalError("this problem has no batch axes to index")
        table = {J: s[index] for J, s in self.marginals.items()}
        return MarginalProblem(table, self.dims, tolerances=self.tolerances, validate=False)

    def replace_tolerances(self, **kwargs) -> "MarginalProblem":
        return MarginalProblem(self.marginals, self.dims, tolerances=replace(self.tolerances, **kwargs),
                               validate=False)

    # ------------------------------------------------------------------ validation
    def check_structure(self) -> None:
        """Check the shapes and entries every computation relies on, even without validation.

        Each marginal J is (d_J, d_J) after a batch shape common to all marginals, and its
        entries are finite.

        Raises:
            MarginalError: naming the marginal (its subset), the shape or the entry.
        """
        batch = None
        for J, sigma in self.marginals.items():
            dJ = subset_dim(J, self.dims)
            shape = tuple(sigma.shape)
            if len(shape) < 2 or shape[-2:] != (dJ, dJ):
                raise MarginalError(
                    f"marginal on sites {J} must be {dJ} x {dJ} (local dims "
                    f"{tuple(self.dims[s] for s in J)}), got shape {shape}"
                )
            if batch is None:
                batch = shape[:-2]
            elif shape[:-2] != batch:
                raise MarginalError(
                    f"marginal on sites {J} has batch shape {shape[:-2]}, others have {batch}"
                )
            if B.isfinite_all(sigma):
                continue
            a = B.to_numpy(sigma)
            bad = _first_bad(~np.isfinite(a))
            if bad is not None:
                raise MarginalError(
                    f"marginal on sites {J} has a non-finite entry {a[bad]} at index {bad}"
                )

    def validate(self) -> None:
        """Check every marginal and every overlap; raise on the first problem found.

        Checks, in order, for each marginal J: its shape is (d_J, d_J) after a batch shape
        common to all marginals; entries are finite; it is Hermitian, has trace 1 and is PSD
        within :attr:`tolerances`. Then for every pair J, K with common sites I:
        ||tr_{J minus I} sigma_J - tr_{K minus I} sigma_K||_F <= tolerances.overlap.

        Raises:
            MarginalError: naming the marginal (its subset), the batch index and the value.
        """
        tol = self.tolerances
        self.check_structure()
        arrays = {}
        for J, sigma in self.marginals.items():
            dJ = subset_dim(J, self.dims)
            a = B.to_numpy(sigma)
            herm = np.abs(a - np.conj(np.swapaxes(a, -1, -2))).max(axis=(-1, -2))
            bad = _first_bad(herm > tol.hermitian)
            if bad is not None:
                raise MarginalError(
                    f"marginal on sites {J}{_where(bad)} is not Hermitian: "
                    f"max |sigma - sigma^dagger| = {herm[bad]:.3g} > tolerance {tol.hermitian:g}"
                )
            tr = np.trace(a, axis1=-2, axis2=-1)
            dev = np.abs(tr - 1)
            bad = _first_bad(dev > tol.trace)
            if bad is not None:
                raise MarginalError(
                    f"marginal on sites {J}{_where(bad)} has trace {complex(tr[bad]).real:.12g}"
                    f"{'' if abs(complex(tr[bad]).imag) < tol.trace else f'{complex(tr[bad]).imag:+.3g}j'}"
                    f", not 1 (tolerance {tol.trace:g})"
                )
            h = 0.5 * (a + np.conj(np.swapaxes(a, -1, -2)))
            # PSD within tol.psd: a Cholesky factorisation of h + 0.999 tol.psd 1 (4x cheaper
            # than eigvalsh at d = 2048) proves it; where it fails, the eigenvalues decide
            try:
                np.linalg.cholesky(h + (0.999 * tol.psd) * np.eye(dJ))
                bad = None
            except np.linalg.LinAlgError:
                wmin = np.linalg.eigvalsh(h).min(-1)
                bad = _first_bad(wmin < -tol.psd)
            if bad is not None:
                raise MarginalError(
                    f"marginal on sites {J}{_where(bad)} is not positive semidefinite: smallest "
                    f"eigenvalue {wmin[bad]:.3g} < -{tol.psd:g}"
                )
            arrays[J] = a
        for (J, a), (K, b) in itertools.combinations(arrays.items(), 2):
            common = tuple(sorted(set(J) & set(K)))
            if not common:
                continue
            ra = partial_trace(a, [J.index(s) for s in common], [self.dims[s] for s in J])
            rb = partial_trace(b, [K.index(s) for s in common], [self.dims[s] for s in K])
            gap = np.linalg.norm(ra - rb, axis=(-2, -1))
            bad = _first_bad(gap > tol.overlap)
            if bad is not None:
                raise MarginalError(
                    f"marginals on sites {J} and {K}{_where(bad)} disagree on their common sites "
                    f"{common}: ||difference||_F = {gap[bad]:.3g} > tolerance {tol.overlap:g}"
                )

    # ------------------------------------------------------------------ measures of a candidate
    def reduced(self, rho) -> dict:
        """{J: tr_{J^c} rho} for the problem's subsets."""
        return {J: partial_trace(rho, J, self.dims) for J in self.marginals}

    def marginal_deviation(self, rho):
        """Largest absolute entry of tr_{J^c} rho - sigma_J over all J (batched)."""
        devs = []
        for J, sigma in self.marginals.items():
            diff = partial_trace(rho, J, self.dims) - B.as_array(sigma, like=rho)
            d = B.abs_(diff)
            devs.append(d.amax(dim=(-2, -1)) if B.is_torch(d) else d.max(axis=(-2, -1)))
        if B.is_torch(devs[0]):
            torch = B.torch_module()
            return torch.stack(devs).amax(0)
        return np.max(np.stack(devs), axis=0)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path, *, description: str | None = None) -> Path:
        """Write to ``.npz`` or ``.json`` (chosen by the suffix), atomically.

        The layouts are documented in :mod:`qmarginal.problem_file`; ``description`` is stored
        as free text.

        Raises:
            MarginalError: an unknown suffix. OutputPathError: the file cannot be written (a
                previous file under that name is left intact).
        """
        from .problem_file import write_problem_file

        items = [(J, B.to_numpy(s)) for J, s in self.marginals.items()]
        return write_problem_file(path, self.dims, items, description)

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> "MarginalProblem":
        """Read a problem written by :meth:`save` (strictly; never unpickles) and validate it.

        Args:
            **kwargs: passed to the constructor (``validate=False``, ``tolerances=...``).

        Raises:
            MarginalError: missing, unreadable or malformed file, or invalid marginals (one
                line naming the file, the marginal and the value).
        """
        from .problem_file import read_problem_file

        subsets, arrays, dims = read_problem_file(path)
        try:
            return cls.from_arrays(subsets, arrays, dims, **kwargs)
        except MarginalError as exc:
            raise MarginalError(f"{path}: {exc}") from exc

    # ------------------------------------------------------------------ description
    def describe(self) -> str:
        """A human-readable summary: sizes, subsets, and each marginal's spectrum."""
        lines = [
            f"sites N = {self.n_sites}, local dims = {list(self.dims)}, global dimension D = {self.dim}",
            f"marginals: {len(self.marginals)}" +
            (f", batch shape {self.batch_shape}" if self.batch_shape else ""),
            f"tolerances: {self.tolerances}",
            f"{'sites':<18}{'dim':>6}{'rank':>6}{'purity':>10}{'min eig':>12}",
        ]
        for J, s in self.marginals.items():
            a = B.to_numpy(s)
            a0 = a.reshape((-1,) + a.shape[-2:])[0]
            w = np.linalg.eigvalsh(0.5 * (a0 + a0.conj().T))
            rank = int((w > 1e-9).sum())
            purity = float(np.real(np.trace(a0 @ a0)))
            lines.append(f"{str(J):<18}{a.shape[-1]:>6}{rank:>6}{purity:>10.4f}{w.min():>12.3e}")
        if self.batch_shape:
            lines.append("(spectra shown for the first problem of the batch)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"MarginalProblem(n_sites={self.n_sites}, dims={self.dims}, "
                f"subsets={self.subsets}, batch_shape={self.batch_shape})")
