"""Trained weights: a safetensors file beside a JSON model card; finding a model for a problem.

``save_weights(model, "dir/n3k2_model1")`` writes ``n3k2_model1.safetensors`` (the state dict; no
pickle) and ``n3k2_model1.json`` (the card: architecture, N, k, loss, data settings, samples
seen, validation metrics, software versions, the weights' SHA-256). ``load_weights`` rebuilds the
model from the card's architecture through the model registry and loads the tensors.
:func:`find_model` picks a model for an (N, k) problem in a directory (by default the package's
``qmarginal/models`` folder, where trained models are shipped).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import MarginalError
from .model import get_model

__all__ = ["save_weights", "load_weights", "load_state_dict_file", "find_model",
           "default_model_dir", "CARD_FORMAT"]

CARD_FORMAT = "qmarginal.model"


def default_model_dir() -> Path:
    """Where shipped models live: ``qmarginal/models`` (``$QMARGINAL_MODELS`` overrides)."""
    env = os.environ.get("QMARGINAL_MODELS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "models"


def _stem(path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_weights(model: torch.nn.Module, path, card: dict | None = None) -> tuple[Path, Path]:
    """Write ``<path>.safetensors`` and ``<path>.json`` (atomically); returns both paths.

    Args:
        model: a model built by :func:`qmarginal.learn.model.get_model` (its ``arch`` is recorded).
        path: file stem (a ``.safetensors`` or ``.json`` suffix is dropped).
        card: extra card fields (n_qubits, k, loss, data, samples_seen, validation, ...).
    """
    from safetensors.torch import save_file

    from .._version import __version__

    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    st, js = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    tmp = st.with_name(f".{st.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"format": CARD_FORMAT})
    os.replace(tmp, st)
    full = {"format": CARD_FORMAT, "arch": getattr(model, "arch", {"name": "cdae", "kwargs": {}}),
            **(card or {}),
            "weights": st.name, "sha256": _sha256(st),
            "parameters": sum(t.numel() for t in tensors.values()),
            "software": {"qmarginal": __version__, "torch": torch.__version__}}
    tmp = js.with_name(f".{js.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(full, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, js)
    return st, js


def _read_card(js: Path) -> dict:
    try:
        card = json.loads(js.read_text())
    except (OSError, ValueError) as exc:
        raise MarginalError(f"cannot read the model card {js}: {exc}") from exc
    if card.get("format") != CARD_FORMAT:
        raise MarginalError(f"{js} is not a qmarginal model card")
    return card


def load_state_dict_file(path, device="cpu") -> dict:
    """Tensors of a ``.safetensors`` file, or the ``model`` entry of a training checkpoint
    (read with ``weights_only=True``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise MarginalError(f"no weights at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(device))
        except Exception as exc:
            raise MarginalError(f"cannot read weights {path} (corrupted?): {exc}") from exc
    from .checkpoint import load_checkpoint

    return load_checkpoint(path, map_location=device)["model"]


def load_weights(path, device=None) -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from ``<path>.json`` and load ``<path>.safetensors``: (model, card).

    The model is in eval mode on ``device`` (CPU by default); its card is also kept as
    ``model.card`` (so that the MIO seed it was trained with is known wherever it goes).

    Raises:
        MarginalError: missing or unreadable files, a card of another format, tensors that do
            not fit the card's architecture.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "model.json"
    stem = _stem(p)
    js = stem.with_suffix(".json")
    if not js.is_file():
        raise MarginalError(f"no model card {js} (expected beside the weights)")
    card = _read_card(js)
    arch = card["arch"]
    model = get_model(arch["name"], **arch.get("kwargs", {}))
    state = load_state_dict_file(stem.with_suffix(".safetensors"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MarginalError(f"weights {stem}.safetensors do not fit the architecture {arch}: {exc}") from exc
    model.card = card
    return model.to(device or "cpu").eval(), card


def find_model(n_qubits: int, k: int, directory=None, *, loss: str | None = None) -> Path:
    """The card (``.json``) of the best-suited model for N-qubit problems with k-body marginals.

    Preference: trained for exactly (N, k); else trained for N with the largest k (the paper uses
    its k = N - 1 models for smaller k too); then ``loss`` (e.g. "model1") if given; then a card
    marked ``"default": true`` (the shipped model of choice); then the most training samples.

    Raises:
        MarginalError: no model for N qubits in the directory; the message says how to train one.
    """
    directory = Path(directory) if directory is not None else default_model_dir()
    found = []
    for js in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            card = _read_card(js)
        except MarginalError:
            continue
        if card.get("n_qubits") != n_qubits or not js.with_suffix(".safetensors").is_file():
            continue
        ck = card.get("k") or 0
        found.append(((ck == k, ck if ck >= k else -ck, loss is None or card.get("loss", {}).get("kind") == loss,
                       bool(card.get("default", False)), card.get("samples_seen", 0)), js))
    if not found:
        raise MarginalError(
            f"no trained CDAE for N = {n_qubits} qubits (k = {k}) in {directory}. Train one with "
            f"`qmarginal train --n-qubits {n_qubits} -k {k} --output-dir runs/n{n_qubits}k{k}` and "
            f"pass model='runs/n{n_qubits}k{k}/model.safetensors', or copy its model.safetensors "
            f"and model.json into {directory} as n{n_qubits}k{k}_<name>.*")
    return max(found, key=lambda t: t[0])[1]
