"""The convolutional denoising autoencoder (CDAE) of Appendix A, its variants and a registry.

The paper's network (Tables I and II, ``c = 10 S`` channels, dilation 1, output padding 0):

    encoder: Conv(2->c, 3, s1, p1) Tanh MaxPool(2)  Conv(c->c, 3, s1, p1) Tanh MaxPool(2)
             Conv(c->c, 3, s1, p1) Tanh MaxPool(2)                       D -> D/8
    decoder: TConv(c->c, 3, s2, p1) Tanh  TConv(c->c, 5, s2, p1) Tanh
             TConv(c->c, 6, s2, p0) Tanh  Conv(c->2, 3, s1, p0)         D/8 -> D

For D = 2^N the sizes go 2^N -> 2^(N-3) -> 2^(N-2)-1 -> 2^(N-1)-1 -> 2^N+2 -> 2^N (Appendix B),
so any N >= 3 works. S = 10 has 884,202 parameters.

Options beyond the paper, all off in the ``"cdae"`` builder (the paper's model):

* ``width`` / ``depth``: channels (instead of 10 S) and extra Conv(3x3, p1)+Tanh blocks after each
  encoder and decoder stage.
* ``normalize_input``: the input is multiplied by D (so 1/D becomes the identity and the entries
  are O(1) for every N) and the output divided by D.
* ``residual``: the network predicts a correction to its input (the MIO output): Z = X + f(X).
  The last layer starts at zero, so training starts from the MIO output itself, which already
  has the right marginals and only needs its negative eigenvalues removed.
* ``output``: ``"direct"`` (paper), ``"hermitian"`` (Z = (Y + Y^dagger)/2), or ``"psd"``
  (Z = A A^dagger / tr(A A^dagger) with A the network's output: PSD with trace 1 by
  construction, so the PSD terms of the loss vanish and only the marginals are learned), or
  ``"clip_psd"``: Z = A A^dagger / tr(A A^dagger) with A = sqrt(X_+) + f(X), where
  X_+ = V max(L, 0) V^dagger is the input with its negative eigenvalues clipped. The last layer
  starts at zero, so the untrained network outputs the nearest-PSD clipping of the MIO output
  (a strong baseline, see the README) and training learns the correction that brings its
  marginals back; the output is a state by construction.

Builders are keyword-only and registered by name (torchvision style): ``get_model("cdae",
scale=10)``; every built model remembers its name and arguments in ``model.arch`` so that its
weights can be saved with a model card and rebuilt (:mod:`qmarginal.learn.weights`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import MarginalError
from ._args import FREEZE_LEVELS, OUTPUTS

__all__ = ["CDAE", "register_model", "get_model", "list_models", "freeze",
           "count_parameters", "FREEZE_LEVELS"]



def _extra(c: int, depth: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(c, c, 3, stride=1, padding=1), nn.Tanh()]
    return layers


class CDAE(nn.Module):
    """The CDAE of Appendix A (defaults) and its variants; maps ``(B, 2, D, D) -> (B, 2, D, D)``.

    Args:
        scale: the paper's scaling factor S (channels 10 S).
        width: channels, overriding 10 S.
        depth: extra Conv+Tanh blocks per stage (0: the paper).
        residual: predict a correction to the input (zero-initialised last layer).
        output: "direct" (paper), "hermitian" or "psd" (see the module docstring).
        normalize_input: scale the input by D and the output by 1/D.

    Raises:
        MarginalError: unknown ``output``, non-positive sizes.

    Example:
        >>> m = CDAE(scale=1)
        >>> m(torch.zeros(4, 2, 8, 8)).shape
        torch.Size([4, 2, 8, 8])
    """

    def __init__(self, *, scale: int = 10, width: int | None = None, depth: int = 0,
                 residual: bool = False, output: str = "direct",
                 normalize_input: bool = False):
        super().__init__()
        c = int(width) if width is not None else 10 * int(scale)
        if c < 1 or depth < 0:
            raise MarginalError(f"channels must be >= 1 and depth >= 0, got {c} and {depth}")
        if output not in OUTPUTS:
            raise MarginalError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.channels, self.depth = c, int(depth)
        self.residual, self.output, self.normalize_input = bool(residual), output, bool(normalize_input)
        enc: list[nn.Module] = []
        for cin in (2, c, c):  # Table I
            enc += [nn.Conv2d(cin, c, 3, stride=1, padding=1), nn.Tanh()] + _extra(c, depth)
            enc.append(nn.MaxPool2d(2, stride=2, padding=0))
        dec: list[nn.Module] = []
        for kernel, pad in ((3, 1), (5, 1), (6, 0)):  # Table II
            dec += [nn.ConvTranspose2d(c, c, kernel, stride=2, padding=pad, output_padding=0),
                    nn.Tanh()] + _extra(c, depth)
        dec.append(nn.Conv2d(c, 2, 3, stride=1, padding=0))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        if self.residual or output == "clip_psd":
            nn.init.zeros_(self.decoder[-1].weight)
            nn.init.zeros_(self.decoder[-1].bias)
        self.arch: dict = {"name": "CDAE", "kwargs": {}}

    @property
    def last_layer(self) -> nn.Module:
        """The last decoder layer (the one left trainable by ``freeze="all-but-last"``)."""
        return self.decoder[-1]

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        D = x.shape[-1]
        h = x * D if self.normalize_input else x
        return self.decoder(self.encoder(h))

    def _pre_output(self, x: torch.Tensor) -> torch.Tensor:
        """The network's two-channel output before the ``output`` map: the raw output, plus
        the input (``residual``), rescaled (``normalize_input``), plus sqrt(X_+) (``clip_psd``).
        One implementation for :meth:`forward` and :meth:`state`."""
        D = x.shape[-1]
        y = self._raw(x)
        if self.residual:
            y = y + (x * D if self.normalize_input else x)
        if self.normalize_input:
            y = y / D
        if self.output == "clip_psd":
            y = y + _clipped_sqrt(x)
        return y

    @torch.no_grad()
    def state(self, x: torch.Tensor) -> torch.Tensor:
        """The complex128 output matrices Z for a batch of two-channel inputs.

        For the PSD outputs the factor A is formed in the network's precision and Z = A A^dagger
        / tr in double precision, so Z is PSD to ~1e-16 (a float32 product would leave
        eigenvalues of order -1e-8 next to exact zeros and fail the paper's 1e-10 test).
        """
        if self.output not in ("psd", "clip_psd"):
            from .encoding import from_channels

            return from_channels(self(x)).to(torch.complex128)
        y = self._pre_output(x)
        a = torch.complex(y[:, 0].double(), y[:, 1].double())
        z = a @ a.mH
        return z / z.diagonal(dim1=-2, dim2=-1).sum(-1).real[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        D = x.shape[-1]
        if x.ndim != 4 or x.shape[1] != 2 or x.shape[-2] != D or D < 8 or D & (D - 1):
            raise MarginalError(
                f"CDAE input must be (batch, 2, D, D) with D = 2^N, N >= 3; got {tuple(x.shape)}")
        y = self._pre_output(x)
        if self.output == "hermitian":
            re, im = y[:, 0], y[:, 1]
            y = torch.stack((0.5 * (re + re.transpose(-1, -2)),
                             0.5 * (im - im.transpose(-1, -2))), dim=1)
        elif self.output in ("psd", "clip_psd"):
            y = _gram_channels(y)
        return y


def _gram_channels(y: torch.Tensor) -> torch.Tensor:
    """Two-channel A -> two-channel A A^dagger / tr(A A^dagger)."""
    ar, ai = y[:, 0], y[:, 1]
    art, ait = ar.transpose(-1, -2), ai.transpose(-1, -2)
    re = ar @ art + ai @ ait
    im = ai @ art - ar @ ait
    tr = re.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-12)[:, None, None]
    return torch.stack((re / tr, im / tr), dim=1)


def _clipped_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt(X_+) as two channels, X = herm(x) of a two-channel batch; no gradient (an input)."""
    with torch.no_grad():
        m = torch.complex(x[:, 0].double(), x[:, 1].double())
        m = 0.5 * (m + m.mH)
        w, v = torch.linalg.eigh(m)
        s = (v * w.clamp_min(0).sqrt().to(v.dtype)[..., None, :]) @ v.mH
        return torch.stack((s.real, s.imag), dim=1).to(x.dtype)


_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None):
    """Decorator registering a keyword-only model builder under ``name``."""

    def wrap(fn):
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered")
        _MODELS[key] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    """Names of the registered model builders."""
    return sorted(_MODELS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments ``kwargs``.

    The model's ``arch`` attribute records ``{"name": name, "kwargs": kwargs}``.

    Raises:
        MarginalError: unknown name.

    Example:
        >>> count_parameters(get_model("cdae", scale=10))
        884202
    """
    if name not in _MODELS:
        raise MarginalError(f"unknown model {name!r}; registered: {list_models()}")
    model = _MODELS[name](**kwargs)
    model.arch = {"name": name, "kwargs": dict(kwargs)}
    return model


@register_model("cdae")
def cdae(*, scale: int = 10, **kwargs) -> CDAE:
    """The paper's CDAE (Appendix A); keyword options as :class:`CDAE`."""
    return CDAE(scale=scale, **kwargs)


@register_model("cdae_residual")
def cdae_residual(*, scale: int = 10, **kwargs) -> CDAE:
    """CDAE predicting a Hermitian correction to its (D-normalised) input: Z = X + f(X)."""
    opts = {"residual": True, "output": "hermitian", "normalize_input": True}
    opts.update(kwargs)
    return CDAE(scale=scale, **opts)


@register_model("cdae_psd")
def cdae_psd(*, scale: int = 10, **kwargs) -> CDAE:
    """CDAE whose output is PSD with trace 1 by construction: Z = A A^dagger / tr(A A^dagger)."""
    opts = {"output": "psd", "normalize_input": True}
    opts.update(kwargs)
    return CDAE(scale=scale, **opts)


@register_model("cdae_clip")
def cdae_clip(*, scale: int = 10, **kwargs) -> CDAE:
    """CDAE correcting the square root of the clipped MIO output: Z = A A^dagger / tr, with
    A = sqrt(X_+) + f(X) and f zero at initialisation (a state by construction)."""
    opts = {"output": "clip_psd"}
    opts.update(kwargs)
    return CDAE(scale=scale, **opts)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def freeze(model: nn.Module, level: str = "none") -> int:
    """Freeze parts of a CDAE for transfer learning (Section IV C); returns trainable count.

    Args:
        level: "none" (train everything), "encoder" (freeze the encoder), "all-but-last"
            (train only the last decoder layer).

    Raises:
        MarginalError: unknown level.
    """
    if level not in FREEZE_LEVELS:
        raise MarginalError(f"freeze must be one of {FREEZE_LEVELS}, got {level!r}")
    for p in model.parameters():
        p.requires_grad_(True)
    if level == "encoder":
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    elif level == "all-but-last":
        keep = {id(p) for p in model.last_layer.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
    return count_parameters(model, trainable_only=True)
