"""The learned pipeline of the paper: the CDAE, its loss, data, training and weights.

Importing this package does not import torch; its names are loaded on first use.

Modules: :mod:`.encoding` (complex matrix <-> two-channel image), :mod:`.model` (the CDAE and a
registry of builders), :mod:`.loss` (Eq. (6) and the polar factor), :mod:`.data` (streamed and
HDF5 datasets), :mod:`.train` (``qmarginal train``), :mod:`.checkpoint`, :mod:`.weights`
(safetensors + model card), :mod:`.pipeline` (``reconstruct(method="cdae")``).
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "CDAE": "model", "get_model": "model", "list_models": "model", "register_model": "model",
    "freeze": "model", "count_parameters": "model",
    "to_channels": "encoding", "from_channels": "encoding",
    "CDAELoss": "loss", "polar_unitary": "loss",
    "DataSettings": "data", "generate_batch": "data", "validation_set": "data",
    "MarginalStream": "data", "write_hdf5": "data", "read_hdf5": "data", "HDF5Stream": "data",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "CheckpointError": "checkpoint",
    "save_weights": "weights", "load_weights": "weights", "find_model": "weights",
    "verify_weights": "weights", "read_card": "weights", "validate_card": "weights",
    "ModelCardError": "weights", "ModelCardWarning": "weights", "NoModelError": "weights",
    "solve_cdae": "pipeline", "solve_cdae_mio": "pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
