"""Trained weights: a safetensors file beside a JSON model card; finding a model for a problem.

``save_weights(model, "dir/n3k2_model1")`` writes ``n3k2_model1.safetensors`` (the state dict; no
pickle) and ``n3k2_model1.json`` (the card: architecture, N, k, loss, data settings, samples
seen, validation metrics, software versions, the weights' SHA-256). ``load_weights`` rebuilds the
model from the card's architecture through the model registry and loads the tensors.
:func:`find_model` picks a model for an (N, k) problem in a directory (by default the package's
``qmarginal/models`` folder, where trained models are shipped).

Nothing is built from a file before it is checked, in this order (:func:`load_weights`):

1. the card: at most :data:`MAX_CARD_BYTES`, a JSON object, and :data:`CARD_SCHEMA` (required
   fields, types, bounds; the architecture's name must be registered and its options bounded);
2. the weights file's header (:func:`read_safetensors_header`): its length and the file's size
   bounded, every tensor's dtype, shape and byte range consistent with the file;
3. the header against the card's architecture: the model is built on the ``meta`` device (no
   memory) and its state-dict names and shapes must be the header's, its parameter count at most
   :data:`MAX_PARAMETERS`;
4. the SHA-256 of the weights' bytes against the card's ``sha256``;

and only then is the model built and the tensors loaded. Any failure is a
:class:`ModelCardError` (a :class:`~qmarginal.errors.MarginalError`: one line naming the file,
the field and the value). :func:`find_model` skips a card that fails (with a
:class:`ModelCardWarning` naming the file and the reason) and keeps looking.

Unknown fields: the card's top level is open (extra informational keys such as ``validation``,
``learning_curve``, ``baselines`` or ``training`` are tolerated and never read by the loader);
the ``arch`` object and its ``kwargs`` are closed (an unknown key there would be handed to a
model builder, so it is refused).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import MarginalError
from ..files import write_bytes, write_text
from ._args import OUTPUTS, SEED_STATES
from .model import get_model, list_models

__all__ = [
    "ARCH_KWARGS_SCHEMA",
    "ARCH_SCHEMA",
    "CARD_FORMAT",
    "CARD_SCHEMA",
    "CARD_VERSION",
    "MAX_CARD_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_N_QUBITS",
    "MAX_PARAMETERS",
    "MAX_WEIGHTS_BYTES",
    "ModelCardError",
    "ModelCardWarning",
    "NoModelError",
    "default_model_dir",
    "find_model",
    "load_state_dict_file",
    "load_weights",
    "read_card",
    "read_safetensors_header",
    "save_weights",
    "validate_card",
    "verify_weights",
]

CARD_FORMAT = "qmarginal.model"
#: the card version this qmarginal writes and the newest it reads (a card without one is 1)
CARD_VERSION = 1
#: largest model card read (the shipped ones, learning curves included, are about 20 kB)
MAX_CARD_BYTES = 16 * 2**20
#: largest safetensors header (JSON) read
MAX_HEADER_BYTES = 100_000_000
#: largest weights file read (the shipped ones are about 0.6 MB)
MAX_WEIGHTS_BYTES = 2 * 2**30
#: most parameters a card's architecture may have (1 GiB of float32)
MAX_PARAMETERS = 2**28
#: most qubits a card may be trained for (D = 4096: a 2 x D x D input image is 128 MiB)
MAX_N_QUBITS = 12


class ModelCardError(MarginalError):
    """A model card or its weights file that cannot be used; nothing was built from it.

    Attributes:
        path: the card (or weights) file.
        field: the card field at fault ("arch.kwargs.scale", "sha256", ...), or "" for the file.
    """

    def __init__(self, message: str, *, path=None, field: str = ""):
        super().__init__(message)
        self.path = path
        self.field = field


class ModelCardWarning(UserWarning):
    """:func:`find_model` skipped a model card (the message names the file and why)."""


class NoModelError(MarginalError):
    """:func:`find_model` found no usable model for the problem.

    Attributes:
        skipped: ``(card path, reason)`` of the cards skipped as unusable.
    """

    def __init__(self, message: str, *, skipped: list | None = None):
        super().__init__(message)
        self.skipped = list(skipped or [])


# ------------------------------------------------------------------------------ the schema
@dataclass(frozen=True)
class Field:
    """One card field: its JSON type, whether it is required, and its bounds.

    Attributes:
        kind: the accepted Python types (``int`` never accepts a bool).
        required: the card is refused without it.
        lo, hi: inclusive bounds of an int; ``hi`` may name a sibling field ("n_qubits").
        choices: allowed values, or a callable returning them (the model registry).
        pattern: a regular expression a string must match in full.
        fields: the schema of a dict's entries.
        closed: refuse a dict's keys that are not in ``fields``.
        doc: what the field means.
        hint: appended to the message of a value out of range or not among the choices.
    """

    kind: tuple
    required: bool = False
    lo: int | None = None
    hi: int | str | None = None
    choices: tuple | Callable[[], Any] | None = None
    pattern: str | None = None
    fields: dict | None = None
    closed: bool = False
    doc: str = ""
    hint: str = ""


_NONE = type(None)

#: options of the registered CDAE builders (:class:`qmarginal.learn.model.CDAE`); closed
ARCH_KWARGS_SCHEMA: dict[str, Field] = {
    "scale": Field((int,), lo=1, hi=100, doc="the paper's S: 10 S channels"),
    "width": Field((int, _NONE), lo=1, hi=1024, doc="channels, overriding 10 S"),
    "depth": Field((int,), lo=0, hi=16, doc="extra Conv+Tanh blocks per stage"),
    "residual": Field((bool,), doc="predict a correction to the input"),
    "output": Field((str,), choices=OUTPUTS, doc="the output map"),
    "normalize_input": Field((bool,), doc="scale the input by D"),
}

#: the ``arch`` object: what :func:`~qmarginal.learn.model.get_model` builds; closed
ARCH_SCHEMA: dict[str, Field] = {
    "name": Field((str,), required=True, choices=list_models, doc="a registered model"),
    "kwargs": Field((dict,), fields=ARCH_KWARGS_SCHEMA, closed=True,
                    doc="the builder's keyword arguments"),
}

#: the model card; open at the top level (informational keys are tolerated)
CARD_SCHEMA: dict[str, Field] = {
    "format": Field((str,), required=True, choices=(CARD_FORMAT,), doc="always qmarginal.model"),
    "version": Field((int,), lo=1, hi=CARD_VERSION, doc="card version (absent: 1)",
                     hint=" (a card of a newer qmarginal: upgrade to read it)"),
    "n_qubits": Field((int,), required=True, lo=3, hi=MAX_N_QUBITS,
                      doc="N the model was trained for",
                      hint=" (the CDAE works on 3 to 12 qubits)"),
    "k": Field((int,), required=True, lo=1, hi="n_qubits", doc="k-body marginals trained on"),
    "arch": Field((dict,), required=True, fields=ARCH_SCHEMA, closed=True,
                  doc="architecture: registered name and builder options"),
    "weights": Field((str,), required=True, pattern=r"[^/\\]{1,255}\.safetensors",
                     doc="the weights' file name when written (the file read is the one "
                         "beside the card, of the same stem)"),
    "sha256": Field((str,), required=True, pattern=r"[0-9a-fA-F]{64}",
                    doc="SHA-256 of the weights file"),
    "parameters": Field((int,), lo=0, hi=MAX_PARAMETERS, doc="parameter count (checked)"),
    "name": Field((str,), doc="the model's name"),
    "loss": Field((dict,), fields={"kind": Field((str,), doc="model1, model2, ...")},
                  doc="the training loss"),
    "data": Field((dict,), fields={"seed_state": Field((str,), choices=SEED_STATES,
                                                       doc="the MIO seed trained with")},
                  doc="data settings"),
    "samples_seen": Field((int,), lo=0, doc="training samples seen"),
    "default": Field((bool,), doc="the model of choice for its (N, k)"),
}


def _show(value) -> str:
    s = repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


def _type_names(kind: tuple) -> str:
    names = {int: "an integer", bool: "true/false", str: "a string", dict: "an object",
             _NONE: "null", list: "a list", float: "a number"}
    return " or ".join(names.get(t, t.__name__) for t in kind)


def _check_fields(obj: dict, schema: dict, where: str, path, *, closed: bool) -> None:
    for key, spec in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in obj:
            if spec.required:
                raise ModelCardError(f"model card {path}: required field '{name}' is missing",
                                     path=path, field=name)
            continue
        value = obj[key]

        def bad(why: str, name=name, value=value):
            return ModelCardError(f"model card {path}: field '{name}' = {_show(value)} {why}",
                                  path=path, field=name)

        if not isinstance(value, spec.kind) or (
                isinstance(value, bool) and bool not in spec.kind):
            raise bad(f"must be {_type_names(spec.kind)}")
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            hi = obj.get(spec.hi) if isinstance(spec.hi, str) else spec.hi
            if (spec.lo is not None and value < spec.lo) or (hi is not None and value > hi):
                hi_s = f"{spec.hi} = {hi}" if isinstance(spec.hi, str) else hi
                raise bad(f"is out of range [{spec.lo}, {hi_s}]{spec.hint}")
        if spec.choices is not None:
            choices = spec.choices() if callable(spec.choices) else spec.choices
            if value not in choices:
                raise bad(f"is not one of {sorted(choices)}{spec.hint}")
        if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
            raise bad(f"does not match {spec.pattern}")
        if spec.fields is not None:
            _check_fields(value, spec.fields, name, path, closed=spec.closed)
    if closed:
        extra = sorted(set(obj) - set(schema))
        if extra:
            name = f"{where}.{extra[0]}" if where else extra[0]
            raise ModelCardError(
                f"model card {path}: unknown field '{name}' (known: {sorted(schema)}); the "
                f"card needs a model this qmarginal cannot build", path=path, field=name)


def validate_card(card, path="<card>") -> dict:
    """Check a parsed card against :data:`CARD_SCHEMA`; returns it unchanged.

    Args:
        card: the parsed JSON.
        path: the card's file, for the message.

    Raises:
        ModelCardError: not an object, a required field missing, a wrong type, a value out of
            range, an unregistered architecture or an unknown architecture option.

    Example:
        >>> validate_card({"format": "qmarginal.model", "n_qubits": 3, "k": 4})
        Traceback (most recent call last):
        ...
        qmarginal.learn.weights.ModelCardError: model card <card>: field 'k' = 4 is out of range [1, n_qubits = 3]
    """
    if not isinstance(card, dict):
        raise ModelCardError(f"model card {path}: a JSON {type(card).__name__}, not an object",
                             path=path)
    _check_fields(card, CARD_SCHEMA, "", path, closed=False)
    return card


def read_card(path) -> dict:
    """Read and validate the model card ``path`` (see :func:`validate_card`).

    Raises:
        ModelCardError: missing, larger than :data:`MAX_CARD_BYTES`, not UTF-8 JSON, or invalid.
    """
    js = Path(path)
    try:
        size = js.stat().st_size
        if size > MAX_CARD_BYTES:
            raise ModelCardError(f"model card {js}: {size} bytes, more than the "
                                 f"{MAX_CARD_BYTES} a card may have", path=js)
        card = json.loads(js.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        if isinstance(exc, ModelCardError):
            raise
        raise ModelCardError(f"cannot read the model card {js}: {exc}", path=js) from exc
    return validate_card(card, js)


# ------------------------------------------------------------------------------ weights files
#: bytes per element of the safetensors dtypes
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
                "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
                "C64": 8}
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def read_safetensors_header(path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Check a safetensors file's structure from its header alone; ``{name: (dtype, shape)}``.

    Reads only the 8-byte little-endian header length and the JSON header (nothing is
    allocated for the tensors). Checks: the file is at most :data:`MAX_WEIGHTS_BYTES`, the
    header at most :data:`MAX_HEADER_BYTES` and inside the file, every entry has a known dtype,
    a shape of non-negative integers and a byte range of exactly its size, and the ranges tile
    the data section, which ends where the file does (a truncated file is refused).

    Raises:
        ModelCardError: the file is missing, too large, truncated or malformed.
    """
    path = Path(path)

    def bad(why: str):
        return ModelCardError(f"weights {path}: {why}", path=path)

    try:
        size = path.stat().st_size
        if size > MAX_WEIGHTS_BYTES:
            raise bad(f"{size} bytes, more than the {MAX_WEIGHTS_BYTES} a weights file may have")
        if size < 8:
            raise bad(f"{size} bytes: truncated (not a safetensors file)")
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > MAX_HEADER_BYTES:
                raise bad(f"header length {n} is more than the {MAX_HEADER_BYTES} allowed "
                          "(corrupted, or not a safetensors file)")
            if 8 + n > size:
                raise bad(f"truncated: the header needs {n} bytes, the file has {size - 8} "
                          "after the length")
            raw = f.read(n)
    except OSError as exc:
        raise bad(f"cannot read ({exc.strerror or exc})") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise bad(f"the header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise bad(f"the header is a JSON {type(header).__name__}, not an object")
    data_len = size - 8 - n
    out, ranges = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                raise bad("__metadata__ is not an object")
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
                and isinstance(entry.get("shape"), list)
                and isinstance(entry.get("data_offsets"), list)):
            raise bad(f"tensor {name!r}: entry {_show(entry)} needs dtype, shape, data_offsets")
        dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPE_BYTES:
            raise bad(f"tensor {name!r}: unknown dtype {_show(dtype)}")
        if len(shape) > 8 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                     for d in shape):
            raise bad(f"tensor {name!r}: shape {_show(shape)} is not a list of sizes")
        if len(offs) != 2 or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs):
            raise bad(f"tensor {name!r}: data_offsets {_show(offs)} are not two integers")
        begin, end = offs
        nbytes = math.prod(shape) * _DTYPE_BYTES[dtype]
        if not 0 <= begin <= end or end - begin != nbytes:
            raise bad(f"tensor {name!r}: data_offsets {offs} do not hold {dtype} {shape} "
                      f"({nbytes} bytes)")
        if end > data_len:
            raise bad(f"truncated: tensor {name!r} ends at byte {end} of the data, which has "
                      f"{data_len}")
        out[name] = (dtype, tuple(shape))
        ranges.append((begin, end))
    pos = 0
    for begin, end in sorted(ranges):
        if begin != pos:
            raise bad(f"tensor data overlap or leave a gap at byte {pos}")
        pos = end
    if pos != data_len:
        raise bad(f"the data section has {data_len} bytes, the tensors {pos}")
    return out


def _weights_of(js: Path) -> Path:
    return js.with_suffix(".safetensors")


def _meta_model(card: dict, js: Path) -> torch.nn.Module:
    """Build the card's architecture on the meta device (allocates nothing)."""
    arch = card["arch"]
    try:
        with torch.device("meta"):
            return get_model(arch["name"], **arch.get("kwargs", {}))
    except (MarginalError, TypeError, ValueError) as exc:
        raise ModelCardError(f"model card {js}: field 'arch' = {_show(arch)} cannot be built: "
                             f"{exc}", path=js, field="arch") from exc


def _check_architecture(card: dict, js: Path, st: Path) -> torch.nn.Module:
    """The meta model of the card, after comparing it with the header of ``st``."""
    tensors = read_safetensors_header(st)
    meta = _meta_model(card, js)
    count = sum(p.numel() for p in meta.parameters())
    if count > MAX_PARAMETERS:
        raise ModelCardError(f"model card {js}: field 'arch' = {_show(card['arch'])} has {count} "
                             f"parameters, more than {MAX_PARAMETERS}", path=js, field="arch")
    if card.get("parameters", count) != count:
        raise ModelCardError(f"model card {js}: field 'parameters' = {card['parameters']} but "
                             f"the architecture {_show(card['arch'])} has {count}",
                             path=js, field="parameters")
    want = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    problems = [f"missing {k}" for k in sorted(set(want) - set(tensors))]
    problems += [f"unexpected {k}" for k in sorted(set(tensors) - set(want))]
    problems += [f"{k} is {tensors[k][1]}, expected {want[k]}" for k in sorted(want)
                 if k in tensors and tensors[k][1] != want[k]]
    problems += [f"{k} has dtype {tensors[k][0]}" for k in sorted(want)
                 if k in tensors and tensors[k][0] not in _FLOAT_DTYPES]
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ModelCardError(f"weights {st} do not fit the architecture {_show(card['arch'])} "
                             f"of {js.name}: {'; '.join(problems[:3])}{more}", path=st,
                             field="arch")
    return meta


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_sha(card: dict, js: Path, st: Path, data: bytes) -> None:
    got, want = _sha256_bytes(data), card["sha256"].lower()
    if got != want:
        raise ModelCardError(f"weights {st}: SHA-256 {got[:12]}... does not match "
                             f"{want[:12]}... in the card {js.name} (changed or corrupted)",
                             path=st, field="sha256")


def _read_weights(st: Path) -> bytes:
    try:
        return st.read_bytes()
    except OSError as exc:
        raise ModelCardError(f"weights {st}: cannot read ({exc.strerror or exc})",
                             path=st) from exc


def _locate(path) -> tuple[Path, Path]:
    """(card, weights) for a card, weights, stem or folder path."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.json"
    stem = _stem(p)
    return stem.with_suffix(".json"), stem.with_suffix(".safetensors")


def verify_weights(path) -> dict:
    """Every check of :func:`load_weights` without building the model; returns the card.

    Raises:
        ModelCardError: as :func:`load_weights`.
    """
    js, st = _locate(path)
    return _verified(js, st)[0]


def _verified(js: Path, st: Path) -> tuple[dict, bytes]:
    if not js.is_file():
        raise ModelCardError(f"no model card {js} (expected beside the weights)", path=js)
    card = read_card(js)
    if not st.is_file():
        raise ModelCardError(f"model card {js}: no weights file {st.name} beside it", path=js,
                             field="weights")
    _check_architecture(card, js, st)
    data = _read_weights(st)
    _check_sha(card, js, st, data)
    return card, data


# ------------------------------------------------------------------------------ save and load
def default_model_dir() -> Path:
    """Where shipped models live: ``qmarginal/models`` (``$QMARGINAL_MODELS`` overrides)."""
    env = os.environ.get("QMARGINAL_MODELS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "models"


def _stem(path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def save_weights(model: torch.nn.Module, path, card: dict | None = None) -> tuple[Path, Path]:
    """Write ``<path>.safetensors`` and ``<path>.json`` (atomically); returns both paths.

    The weights are written first, the card (with their SHA-256) last, each through
    :func:`qmarginal.files.write_bytes` / :func:`~qmarginal.files.write_text`. A card that
    :func:`load_weights` would refuse (no ``n_qubits``, say) is still written, with a
    :class:`ModelCardWarning` saying why, so that no trained model is lost.

    Args:
        model: a model built by :func:`qmarginal.learn.model.get_model` (its ``arch`` is recorded).
        path: file stem (a ``.safetensors`` or ``.json`` suffix is dropped).
        card: extra card fields (n_qubits, k, loss, data, samples_seen, validation, ...).
    """
    from safetensors.torch import save

    from .._version import __version__

    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    st, js = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    data = save(tensors, metadata={"format": CARD_FORMAT})
    write_bytes(st, data)
    full = {"format": CARD_FORMAT, "version": CARD_VERSION,
            "arch": getattr(model, "arch", {"name": "cdae", "kwargs": {}}),
            **(card or {}),
            "weights": st.name, "sha256": _sha256_bytes(data),
            "parameters": sum(t.numel() for t in tensors.values()),
            "software": {"qmarginal": __version__, "torch": torch.__version__}}
    text = json.dumps(full, indent=2, sort_keys=False, default=str) + "\n"
    try:
        validate_card(json.loads(text), js)
    except ModelCardError as exc:
        warnings.warn(f"{exc} (written anyway; load_weights will refuse it until fixed)",
                      ModelCardWarning, stacklevel=2)
    write_text(js, text)
    return st, js


def load_state_dict_file(path, device="cpu") -> dict:
    """Tensors of a ``.safetensors`` file, or the ``model`` entry of a training checkpoint
    (read with ``weights_only=True``).

    A safetensors file's header is checked first (:func:`read_safetensors_header`); no card is
    needed (``--init-from``), so neither the architecture nor a hash is checked here.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise MarginalError(f"no weights at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        read_safetensors_header(path)
        try:
            return load_file(str(path), device=str(device))
        except Exception as exc:
            raise MarginalError(f"cannot read weights {path} (corrupted?): {exc}") from exc
    from .checkpoint import load_checkpoint

    return load_checkpoint(path, map_location=device)["model"]


def load_weights(path, device=None) -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from ``<path>.json`` and load ``<path>.safetensors``: (model, card).

    Every check in the module docstring runs before the model is built (a card asking for a
    huge architecture is refused without allocating it). The model is in eval mode on
    ``device`` (CPU by default); its card is also kept as ``model.card`` (so that the MIO seed
    it was trained with is known wherever it goes).

    Args:
        path: the card, the weights, their common stem, or a folder with ``model.json``.
        device: where to put the model.

    Raises:
        ModelCardError: missing or unreadable files, a card that fails :data:`CARD_SCHEMA`, a
            malformed or truncated weights file, tensors that do not fit the card's
            architecture, weights whose SHA-256 is not the card's.
    """
    from safetensors.torch import load

    js, st = _locate(path)
    card, data = _verified(js, st)
    try:
        state = load(data)
    except Exception as exc:
        raise ModelCardError(f"cannot read weights {st} (corrupted?): {exc}", path=st) from exc
    arch = card["arch"]
    model = get_model(arch["name"], **arch.get("kwargs", {}))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelCardError(f"weights {st} do not fit the architecture {_show(arch)}: {exc}",
                             path=st, field="arch") from exc
    model.card = card
    return model.to(device or "cpu").eval(), card


# ------------------------------------------------------------------------------ finding a model
def _skip(js: Path, exc: Exception, skipped: list) -> None:
    skipped.append((js, str(exc)))
    warnings.warn(f"{exc}; skipped {js.name}", ModelCardWarning, stacklevel=3)


def find_model(n_qubits: int, k: int, directory=None, *, loss: str | None = None) -> Path:
    """The card (``.json``) of the best-suited model for N-qubit problems with k-body marginals.

    Only a card trained for exactly N qubits and for k' >= k is a candidate (the paper uses its
    k = N - 1 models for smaller k too). Preference: k' = k; else the largest k'; then ``loss``
    (e.g. "model1") if given; then a card marked ``"default": true`` (the shipped model of
    choice); then the most training samples; then the first file name.

    A card that is not valid (:func:`read_card`), and a candidate whose weights are missing, do
    not fit its architecture or fail its SHA-256 (:func:`verify_weights`), is skipped with a
    :class:`ModelCardWarning` naming the file and the reason; the others keep working.

    Raises:
        NoModelError: no usable model for N qubits in the directory; the message says how to
            train one and lists the cards skipped (``.skipped`` holds their reasons).
    """
    directory = Path(directory) if directory is not None else default_model_dir()
    found, skipped = [], []
    try:
        cards = sorted(directory.glob("*.json")) if directory.is_dir() else []
    except OSError:
        cards = []
    for js in cards:
        try:
            card = read_card(js)
        except ModelCardError as exc:
            _skip(js, exc, skipped)
            continue
        ck = card["k"]
        if card["n_qubits"] != n_qubits or ck < k:
            continue
        kind = (card.get("loss") or {}).get("kind")
        found.append(((ck == k, ck, loss is None or kind == loss,
                       bool(card.get("default", False)), card.get("samples_seen", 0)), js))
    found.sort(key=lambda t: t[0], reverse=True)  # stable: ties keep the names' order
    for _, js in found:
        try:
            _verified(js, _weights_of(js))
        except ModelCardError as exc:
            _skip(js, exc, skipped)
            continue
        return js
    note = ""
    if skipped:
        note = (f" (skipped {len(skipped)} unusable card(s): "
                f"{', '.join(p.name for p, _ in skipped)}; see the warnings)")
    raise NoModelError(
        f"no trained CDAE for N = {n_qubits} qubits (k = {k}) in {directory}{note}. Train one "
        f"with `qmarginal train --n-qubits {n_qubits} -k {k} --output-dir runs/n{n_qubits}k{k}` "
        f"and pass model='runs/n{n_qubits}k{k}/model.safetensors', or copy its "
        f"model.safetensors and model.json into {directory} as n{n_qubits}k{k}_<name>.*",
        skipped=skipped)
