"""Problem files: the ``.json`` and ``.npz`` layouts, read strictly and written atomically.

JSON (``format`` and ``version`` required, no other top-level keys but ``description``)::

    {"format": "qmarginal.problem", "version": 1, "dims": [2, 2, 2],
     "description": "optional free text",
     "marginals": [{"sites": [0, 1], "real": [[...], ...], "imag": [[...], ...]}, ...]}

``dims`` is a list of integers >= 2, one per site (or one integer for every site); ``sites``
a list of distinct non-negative integers in increasing order; ``real`` and ``imag`` nested lists
of numbers of the same shape (``imag`` may be left out for a real marginal), optionally with
leading batch axes shared by all marginals. Integers must be JSON integers (``2``, not ``2.0``,
``"2"`` or ``true``); every entry must be a finite number.

NPZ: arrays ``format`` (the string above), ``version`` (integer), ``dims`` (1-D integers),
``sites_i`` (1-D integers) and ``sigma_i`` (complex or real, ``(..., d_J, d_J)``) for i = 0..M-1,
and nothing else; never unpickled. Each array's ``.npy`` header (shape, dtype) is read and
checked against what ``dims`` and ``sites_i`` imply *before* its data is decompressed, so a
small file that would expand to gigabytes is refused after reading a few hundred bytes.

Every refusal is one :class:`~qmarginal.MarginalError` naming the file, the marginal and the
value.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from .errors import MarginalError
from .files import atomic_write, write_text

__all__ = ["FORMAT", "VERSION", "read_problem_file", "write_problem_file", "MAX_JSON_BYTES"]

FORMAT = "qmarginal.problem"
VERSION = 1
#: the top-level keys of a JSON problem file, and the keys of each marginal
JSON_KEYS = frozenset({"format", "version", "dims", "marginals", "description"})
MARGINAL_KEYS = frozenset({"sites", "real", "imag"})
#: JSON problem files above this size are refused (a JSON number takes ~20 bytes and parsing
#: holds ~10x the file in memory): use .npz
MAX_JSON_BYTES = 256 * 2**20
#: the marginals of one file may declare at most this many bytes in memory (complex128)
MAX_MARGINAL_BYTES = 16 * 2**30
#: a member above MAX_RATIO_FROM bytes that expands more than MAX_RATIO-fold is refused
#: (deflate reaches ~1000x only on degenerate data; marginals compress a few-fold)
MAX_RATIO, MAX_RATIO_FROM = 200, 64 * 2**20
_SMALL = 4096  # elements of format/version/dims/sites arrays


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_list(v, what: str, where: str) -> list[int]:
    if not isinstance(v, list) or not all(_is_int(x) for x in v):
        raise MarginalError(f"{where}: {what} must be a list of integers, got {_short(v)}")
    return list(v)


def _short(v) -> str:
    text = json.dumps(v) if not isinstance(v, np.ndarray) else repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _numeric(v, what: str, where: str) -> np.ndarray:
    """Nested lists of JSON numbers (not bools, strings or nulls) as a float array."""
    try:
        a = np.asarray(v)
    except ValueError as exc:  # ragged nesting
        raise MarginalError(f"{where}: {what} is not a rectangular array of numbers "
                            f"({str(exc).splitlines()[0]})") from exc
    if a.dtype.kind not in "iuf":
        kind = {"b": "booleans", "U": "strings", "O": "mixed or null entries"}.get(
            a.dtype.kind, f"dtype {a.dtype}")
        raise MarginalError(f"{where}: {what} must hold numbers only, found {kind}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise MarginalError(f"{where}: {what} has a non-finite entry {a[idx]} at index {idx}")
    return a


def _dims(v, where: str) -> list[int] | int:
    if _is_int(v):
        if v < 2:
            raise MarginalError(f"{where}: dims must be >= 2, got {v}")
        return v
    dims = _int_list(v, "dims", where)
    if not dims:
        raise MarginalError(f"{where}: dims must name at least one site")
    bad = [d for d in dims if d < 2]
    if bad:
        raise MarginalError(f"{where}: every local dimension must be >= 2, got dims {dims}")
    return dims


def _sites(v, i: int, where: str) -> tuple[int, ...]:
    sites = _int_list(v, f"marginal {i}: sites", where)
    neg = [s for s in sites if s < 0]
    if neg:
        raise MarginalError(f"{where}: marginal {i}: site index {neg[0]} is negative "
                            f"(sites {sites})")
    return tuple(sites)


def _version(v, where: str) -> None:
    if not _is_int(v) or v != VERSION:
        raise MarginalError(f"{where}: version {_short(v)} is not supported (this qmarginal "
                            f"reads version {VERSION})")


def _marginal_dim(sites, dims, i: int, where: str) -> int:
    n = len(dims)
    out = [s for s in sites if s >= n]
    if out:
        raise MarginalError(f"{where}: marginal {i}: site index {out[0]} is out of range for "
                            f"{n} sites (valid: 0..{n - 1})")
    return math.prod(dims[s] for s in sites)


# ---------------------------------------------------------------------------------------- JSON
def _read_json(path: Path):
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise MarginalError(f"{path}: JSON problem file of {size / 2**20:.0f} MiB is above the "
                            f"{MAX_JSON_BYTES // 2**20} MiB limit; save the problem as .npz")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MarginalError(f"{path}: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise MarginalError(f"{path}: JSON nested too deeply") from exc
    where = str(path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MarginalError(f"{where}: not a qmarginal problem file (\"format\": \"{FORMAT}\" "
                            "missing)")
    unknown = sorted(set(doc) - JSON_KEYS)
    if unknown:
        raise MarginalError(f"{where}: unknown top-level key(s) {unknown}; a problem file has "
                            f"{sorted(JSON_KEYS)}")
    for key in ("version", "dims", "marginals"):
        if key not in doc:
            raise MarginalError(f"{where}: the key {key!r} is missing")
    _version(doc["version"], where)
    if "description" in doc and not isinstance(doc["description"], str):
        raise MarginalError(f"{where}: description must be a string")
    dims = _dims(doc["dims"], where)
    marginals = doc["marginals"]
    if not isinstance(marginals, list) or not marginals:
        raise MarginalError(f"{where}: marginals must be a non-empty list of "
                            "{\"sites\", \"real\", \"imag\"} objects")
    subsets, arrays = [], []
    for i, m in enumerate(marginals):
        if not isinstance(m, dict):
            raise MarginalError(f"{where}: marginal {i} must be an object with sites, real, "
                                f"imag; got {_short(m)}")
        unknown = sorted(set(m) - MARGINAL_KEYS)
        missing = sorted({"sites", "real"} - set(m))
        if unknown or missing:
            raise MarginalError(f"{where}: marginal {i}: "
                                + (f"unknown key(s) {unknown}" if unknown else "")
                                + ("; " if unknown and missing else "")
                                + (f"missing {missing}" if missing else ""))
        sites = _sites(m["sites"], i, where)
        label = f"marginal {i} on sites {sites}"
        re_ = _numeric(m["real"], f"{label}: real part", where)
        if "imag" in m:
            im_ = _numeric(m["imag"], f"{label}: imaginary part", where)
            if re_.shape != im_.shape:
                raise MarginalError(f"{where}: {label}: real part has shape {re_.shape}, "
                                    f"imaginary part {im_.shape}")
            arrays.append(re_ + 1j * im_)
        else:
            arrays.append(re_.astype(np.complex128))
        subsets.append(sites)
    return subsets, arrays, dims


# ---------------------------------------------------------------------------------------- NPZ
def _npy_header(zf: zipfile.ZipFile, name: str):
    """(shape, dtype, header bytes) of a ``.npy`` member, reading only its header."""
    with zf.open(name) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # pragma: no cover - read_magic refuses other versions
            raise ValueError(f"unsupported .npy version {version}")
        return tuple(shape), dtype, f.tell()


def _npz_check(zf: zipfile.ZipFile, name: str, where: str, *, max_elements: int, kinds: str,
               what: str, shape_tail: tuple | None = None) -> tuple:
    """A member's declared shape, its header checked (dtype kind, size, trailing shape,
    consistency with the zip entry, compression ratio) without decompressing its data."""
    info = zf.getinfo(name)
    shape, dtype, header = _npy_header(zf, name)
    if dtype.hasobject or dtype.kind not in kinds:
        raise MarginalError(f"{where}: {what} has dtype {dtype}, expected "
                            + {"iu": "integers", "iufc": "numbers", "U": "a string"}.get(
                                kinds, kinds))
    count = math.prod(shape)
    if count > max_elements:
        raise MarginalError(f"{where}: {what} declares shape {shape} ({count} entries), above "
                            f"the {max_elements} that fit (refused before decompressing)")
    if shape_tail is not None and (len(shape) < 2 or shape[-2:] != shape_tail):
        raise MarginalError(f"{where}: {what} must be {shape_tail[0]} x {shape_tail[1]} "
                            f"(after any batch axes), declared shape {shape}")
    if info.file_size != header + count * dtype.itemsize:
        raise MarginalError(f"{where}: {what} is truncated or inconsistent (declares "
                            f"{count * dtype.itemsize} data bytes, holds "
                            f"{info.file_size - header})")
    if info.file_size > MAX_RATIO_FROM and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise MarginalError(f"{where}: {what} expands {info.file_size / max(info.compress_size, 1):.0f}"
                            f"-fold ({info.compress_size} to {info.file_size} bytes): refused as "
                            "a decompression bomb before decompressing")
    return shape


def _npz_read(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    with zf.open(name) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _npz_array(zf, name, where, **check) -> np.ndarray:
    _npz_check(zf, name, where, **check)
    return _npz_read(zf, name)


def _marginal_entries() -> int:
    """complex128 entries all marginals of one file may declare: MAX_MARGINAL_BYTES, or a
    quarter of the memory budget (validation holds a few copies) where that is smaller."""
    from .system_memory import budget_bytes

    budget, _ = budget_bytes()
    cap = MAX_MARGINAL_BYTES if budget is None else min(MAX_MARGINAL_BYTES, budget // 4)
    return cap // 16


def _read_npz(path: Path):
    where = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise MarginalError(f"{where}: not an .npz (zip) file ({exc})") from exc
    with zf:
        names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        others = [n for n in zf.namelist() if not n.endswith(".npy")]
        if "format" not in names:
            raise MarginalError(f"{where}: not a qmarginal problem file (array 'format' missing)")
        fmt = _npz_array(zf, "format.npy", where, max_elements=1, kinds="U", what="format")
        if fmt.shape != () or str(fmt) != FORMAT:
            raise MarginalError(f"{where}: not a qmarginal problem file (format {fmt!r})")
        count = sum(1 for n in names if n.startswith("sites_"))
        expected = {"format", "version", "dims"} | {f"sites_{i}" for i in range(count)} \
            | {f"sigma_{i}" for i in range(count)}
        unknown = sorted(names - expected) + others
        missing = sorted(expected - names)
        if unknown or missing:
            raise MarginalError(f"{where}: "
                                + (f"unexpected array(s) {unknown}" if unknown else "")
                                + ("; " if unknown and missing else "")
                                + (f"missing array(s) {missing}" if missing else ""))
        version = _npz_array(zf, "version.npy", where, max_elements=1, kinds="iu", what="version")
        _version(int(version) if version.shape == () else version.tolist(), where)
        dims_a = _npz_array(zf, "dims.npy", where, max_elements=_SMALL, kinds="iu", what="dims")
        if dims_a.ndim != 1:
            raise MarginalError(f"{where}: dims must be a 1-D integer array (one entry per "
                                f"site), got shape {dims_a.shape}")
        dims = _dims([int(v) for v in dims_a], where)
        if count == 0:
            raise MarginalError(f"{where}: a marginal problem needs at least one marginal")
        subsets = []
        budget = _marginal_entries()
        batch = None
        for i in range(count):  # every header first: nothing large is decompressed before
            s = _npz_array(zf, f"sites_{i}.npy", where, max_elements=_SMALL, kinds="iu",
                           what=f"sites_{i}")
            if s.ndim != 1:
                raise MarginalError(f"{where}: sites_{i} must be a 1-D integer array, got "
                                    f"shape {s.shape}")
            sites = _sites([int(v) for v in s], i, where)
            dJ = _marginal_dim(sites, dims, i, where)
            what = f"marginal {i} on sites {sites} (sigma_{i})"
            shape = _npz_check(zf, f"sigma_{i}.npy", where, max_elements=budget, kinds="iufc",
                               what=what, shape_tail=(dJ, dJ))
            if batch is None:
                batch = shape[:-2]
            elif shape[:-2] != batch:
                raise MarginalError(f"{where}: {what} declares batch shape {shape[:-2]}, "
                                    f"marginal 0 {batch} (refused before decompressing)")
            budget -= math.prod(shape)
            subsets.append(sites)
        arrays = [_npz_read(zf, f"sigma_{i}.npy") for i in range(count)]
    return subsets, arrays, dims


# ---------------------------------------------------------------------------------------- API
def read_problem_file(path) -> tuple[list[tuple[int, ...]], list[np.ndarray], list[int] | int]:
    """(subsets, arrays, dims) of a problem file, strictly checked (module docstring).

    Raises:
        MarginalError: a missing, unreadable or malformed file (one line: the file, the marginal
            and the value).
    """
    path = Path(path)
    if path.suffix not in (".json", ".npz"):
        raise MarginalError(f"unknown problem file type {path.suffix!r} ({path}): use .npz or "
                            ".json")
    if not path.exists():
        raise MarginalError(f"problem file {path} does not exist")
    if path.is_dir():
        raise MarginalError(f"problem file {path} is a folder, not a file")
    try:
        if path.suffix == ".json":
            return _read_json(path)
        return _read_npz(path)
    except MarginalError:
        raise
    except MemoryError as exc:
        raise MarginalError(f"{path}: not enough memory to read the file") from exc
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
            zipfile.LargeZipFile) as exc:
        reason = getattr(exc, "strerror", None) or (
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise MarginalError(f"{path}: unreadable problem file ({reason})") from exc


def write_problem_file(path, dims, items, description: str | None = None) -> Path:
    """Write ``items`` [(sites, array), ...] to ``path`` (.json or .npz), atomically.

    Raises:
        MarginalError: an unknown suffix; OutputPathError: the file cannot be written (the
            previous file, if any, is left as it was).
    """
    path = Path(path)
    if path.suffix == ".json":
        doc = {"format": FORMAT, "version": VERSION, "dims": [int(d) for d in dims]}
        if description is not None:
            doc["description"] = str(description)
        doc["marginals"] = [{"sites": [int(s) for s in J], "real": a.real.tolist(),
                             "imag": a.imag.tolist()} for J, a in items]
        write_text(path, json.dumps(doc))
    elif path.suffix == ".npz":
        arrays = {"format": np.array(FORMAT), "version": np.array(VERSION),
                  "dims": np.array(dims, dtype=np.int64)}
        for i, (J, a) in enumerate(items):
            arrays[f"sites_{i}"] = np.array(J, dtype=np.int64)
            arrays[f"sigma_{i}"] = np.asarray(a)
        with atomic_write(path, "wb") as f:
            np.savez_compressed(f, **arrays)
    else:
        raise MarginalError(f"unknown problem file type {path.suffix!r} ({path}): use .npz or "
                            ".json")
    return path
