"""Complex matrices <-> two-channel real tensors, the CDAE's image format (Section III B).

A matrix X of shape ``(*batch, D, D)`` becomes a tensor of shape ``(*batch, 2, D, D)`` whose
channel 0 is Re X and channel 1 is Im X; :func:`from_channels` is its inverse.
complex64 <-> float32 and complex128 <-> float64.
"""

from __future__ import annotations

import torch

__all__ = ["to_channels", "from_channels"]


def to_channels(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The two-channel (real, imaginary) tensor of a complex matrix (or batch of them).

    Args:
        x: complex (or real) tensor ``(*batch, D, D)``.
        dtype: real dtype of the result (default: the precision of ``x``).

    Returns:
        Real tensor ``(*batch, 2, D, D)`` on x's device.

    Example:
        >>> x = torch.tensor([[1 + 2j, 3j], [-3j, 0]])
        >>> to_channels(x)[1]
        tensor([[ 2.,  3.],
                [-3.,  0.]])
    """
    if x.ndim < 2:
        raise ValueError(f"expected a matrix or a batch of matrices, got shape {tuple(x.shape)}")
    if x.is_complex():
        t = torch.stack((x.real, x.imag), dim=-3)
    else:
        t = torch.stack((x, torch.zeros_like(x)), dim=-3)
    return t if dtype is None else t.to(dtype)


def from_channels(t: torch.Tensor) -> torch.Tensor:
    """The complex matrix Re + i Im of a two-channel tensor ``(*batch, 2, D, D)``.

    float32 gives complex64, float64 gives complex128 (differentiable).

    Example:
        >>> from_channels(torch.ones(2, 2, 2))[0, 0]
        tensor(1.+1.j)
    """
    if t.ndim < 3 or t.shape[-3] != 2:
        raise ValueError(f"expected a tensor (*batch, 2, D, D), got shape {tuple(t.shape)}")
    return torch.complex(t[..., 0, :, :], t[..., 1, :, :])
