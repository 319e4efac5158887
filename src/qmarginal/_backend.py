"""Array-library dispatch: numpy in, numpy out; torch in, torch out (same dtype and device).

Torch is never imported here at module load; a torch tensor is recognised by the name of
its type's module, so that numpy-only users never pay for importing torch.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__: list[str] = []


def is_torch(x: Any) -> bool:
    """True when ``x`` is a torch tensor (without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def torch_module():
    """The torch module, imported on demand with a message naming the extra."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError(
            "this operation needs PyTorch; install it with "
            "`pip install torch==2.13.0` (CPU) or see the README"
        ) from exc
    return torch


def torch_loaded() -> bool:
    return "torch" in sys.modules


def as_array(x: Any, like: Any = None):
    """Return ``x`` as an array of the same library as ``like`` (numpy when ``like`` is None)."""
    if like is not None and is_torch(like):
        torch = torch_module()
        if is_torch(x):
            return x.to(device=like.device)
        return torch.as_tensor(np.asarray(x), device=like.device)
    if is_torch(x):
        return x
    return np.asarray(x)


def complex_dtype_for(x):
    """The complex dtype matching the precision of ``x`` (complex64 for 32-bit inputs)."""
    if is_torch(x):
        torch = torch_module()
        if x.dtype in (torch.complex64, torch.complex128):
            return x.dtype
        if x.dtype in (torch.float32, torch.float16, torch.bfloat16):
            return torch.complex64
        return torch.complex128
    dt = np.asarray(x).dtype
    if dt in (np.complex64, np.complex128):
        return dt
    if dt in (np.float32, np.float16):
        return np.dtype(np.complex64)
    return np.dtype(np.complex128)


def real_dtype_for(x):
    """The real dtype matching the precision of ``x``."""
    if is_torch(x):
        torch = torch_module()
        return torch.float32 if x.dtype in (torch.complex64, torch.float32) else torch.float64
    dt = np.asarray(x).dtype
    return np.dtype(np.float32) if dt in (np.complex64, np.float32) else np.dtype(np.float64)


def to_complex(x):
    """``x`` cast to its matching complex dtype (no copy when already complex)."""
    dt = complex_dtype_for(x)
    if is_torch(x):
        return x if x.dtype == dt else x.to(dt)
    x = np.asarray(x)
    return x if x.dtype == dt else x.astype(dt)


def contiguous(x):
    if is_torch(x):
        return x.contiguous()
    return np.ascontiguousarray(x)


def dagger(x):
    """Conjugate transpose over the last two axes."""
    if is_torch(x):
        return x.conj().transpose(-1, -2)
    return np.conj(np.swapaxes(x, -1, -2))


def hermitian_part(x):
    """(X + X^dagger) / 2 over the last two axes."""
    return 0.5 * (x + dagger(x))


def trace(x):
    """Trace over the last two axes (batched)."""
    if is_torch(x):
        return x.diagonal(dim1=-2, dim2=-1).sum(-1)
    return np.trace(x, axis1=-2, axis2=-1)


def eigh(x):
    if is_torch(x):
        torch = torch_module()
        return torch.linalg.eigh(x)
    return np.linalg.eigh(x)


def eigvalsh(x):
    if is_torch(x):
        torch = torch_module()
        return torch.linalg.eigvalsh(x)
    return np.linalg.eigvalsh(x)


def svdvals(x):
    if is_torch(x):
        torch = torch_module()
        return torch.linalg.svdvals(x)
    return np.linalg.svd(x, compute_uv=False)


def real(x):
    if is_torch(x):
        return x.real if x.is_complex() else x
    return np.real(x)


def clip_min(x, lo):
    if is_torch(x):
        return x.clamp_min(lo)
    return np.maximum(x, lo)


def clip(x, lo, hi):
    if is_torch(x):
        return x.clamp(lo, hi)
    return np.clip(x, lo, hi)


def sqrt(x):
    if is_torch(x):
        return x.sqrt()
    return np.sqrt(x)


def abs_(x):
    if is_torch(x):
        return x.abs()
    return np.abs(x)


def eye(n, like):
    """Identity of size n with the dtype and device of ``like``."""
    if is_torch(like):
        torch = torch_module()
        return torch.eye(n, dtype=like.dtype, device=like.device)
    return np.eye(n, dtype=np.asarray(like).dtype)


def zeros(shape, like):
    if is_torch(like):
        torch = torch_module()
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    return np.zeros(shape, dtype=np.asarray(like).dtype)


def copy(x):
    if is_torch(x):
        return x.clone()
    return np.array(x, copy=True)


def to_numpy(x) -> np.ndarray:
    """A numpy copy (or view) of ``x``, detached from any autograd graph."""
    if is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def isfinite_all(x) -> bool:
    if is_torch(x):
        torch = torch_module()
        return bool(torch.isfinite(x).all())
    return bool(np.isfinite(x).all())
