"""The DAFx 2021 model: spectrogram VAE with a latent RealNVP flow and a preset regression head.

Data flow for a batch of ``B`` presets rendered on ``K`` notes (``K`` = 1 or 6)::

    mel (B, K, mels, frames) ── Encoder ──► μ, log σ² (B, D)        D = encoding length (144/224/610)
    z₀ = μ + σ·ε ── latent RealNVP ──► z_K (B, D), Σ log|det|
    z_K ── Decoder ──► mel reconstruction (B, K, mels, frames)
    z_K ── head (RealNVP flow or MLP) ──► preset logits u (B, D) ── PresetActivation ──► preset v (B, D)

Flows come from zuko; the regression flow's forward transform is ``z_K → u`` and its inverse
maps a preset vector back to the latent space (:meth:`PresetModel.preset_to_latent`).

Example::

    >>> import torch
    >>> from preset_model.model import PresetModel, model_config
    >>> cfg = model_config("tiny", encoding="numcat", notes=1, n_mels=32, frames=32)
    >>> out = PresetModel(cfg)(torch.zeros(2, 1, 32, 32))
    >>> out.mel.shape, out.preset.shape
    (torch.Size([2, 1, 32, 32]), torch.Size([2, 224]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
import zuko
from torch import Tensor, nn
from torch.nn import functional as F

from .encoding import ENCODINGS, Encoding, get_encoding
from .errors import PresetModelError

#: Guard on the encoder's log σ² (a plain clamp: σ ≤ e^2.5 ≈ 12, twelve times the prior's).
LOGVAR_MAX = 5.0

HEADS: tuple[str, ...] = ("flow", "mlp")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a :class:`PresetModel`; the defaults are the paper's (6 notes, NumCat++, flow head).

    Attributes:
        encoding: preset encoding, ``"num"`` | ``"numcat"`` | ``"numcat++"``; sets the latent size.
        head: regression head, ``"flow"`` (RealNVP) or ``"mlp"``.
        notes: spectrograms per preset (channels of the input), 1 or 6.
        n_mels, frames: spectrogram size (mel bands × STFT frames), taken from the dataset.
        channels: output channels of the per-note CNN's stride-2 convolutions (each halves both axes).
        mix_channels: channels of the convolution that mixes the notes' feature maps.
        flow_layers, flow_hidden: latent RealNVP coupling layers and hidden units (2 hidden layers each).
        head_layers, head_hidden: the same for the regression flow head.
        mlp_layers, mlp_hidden: hidden layers and units of the MLP head.
        temperature: softmax temperature of every one-hot group (paper: 0.2).
        dropout: dropout before the encoder's and after the decoder's fully connected layer
            (the reference code's 0.3).
        head_dropout: dropout between the MLP head's layers (the reference code's 0.4; the flow
            head has none: zuko's coupling networks take no dropout).
        grid: largest (mels, frames) feature grid at the fully connected layers. The encoder
            average-pools its last feature map down to it and the decoder starts from it and
            upsamples, so the fully connected layers (most of the parameters) do not grow with
            the input size, and sizes stay ordered tiny < small < paper at every input size.
    """

    encoding: str = "numcat++"
    head: str = "flow"
    notes: int = 6
    n_mels: int = 257
    frames: int = 347
    channels: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    mix_channels: int = 512
    flow_layers: int = 6
    flow_hidden: int = 300
    head_layers: int = 6
    head_hidden: int = 300
    mlp_layers: int = 3
    mlp_hidden: int = 1024
    temperature: float = 0.2
    dropout: float = 0.3
    head_dropout: float = 0.4
    grid: tuple[int, int] = (5, 6)

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise PresetModelError(f"--encoding {self.encoding!r}: unknown encoding; choose one of {', '.join(ENCODINGS)}")
        if self.head not in HEADS:
            raise PresetModelError(f"--head {self.head!r}: unknown head; choose one of {', '.join(HEADS)}")
        if self.notes < 1 or not self.channels:
            raise PresetModelError(f"need at least one note and one conv layer, got notes={self.notes}, "
                                   f"channels={self.channels}")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.head_dropout < 1.0):
            raise PresetModelError(f"dropout must be in [0, 1), got {self.dropout} and {self.head_dropout}")
        if min(self.n_mels, self.frames) < 2 ** len(self.channels):
            need = 2 ** len(self.channels)
            raise PresetModelError(f"the dataset's {self.n_mels}×{self.frames} spectrograms (mel bands × frames) are too "
                                   f"small for this model's {len(self.channels)} stride-2 convolutions (at least "
                                   f"{need}×{need}); re-render with more frames (a smaller --hop, or longer "
                                   f"--hold/--release) or more --n-mels"
                                   + (", or use --size tiny (4 convolutions: 16×16)" if len(self.channels) > 4 else ""))

    @property
    def latent_dim(self) -> int:
        """Latent size = encoding length (144, 224 or 610)."""
        return get_encoding(self.encoding).length


#: Named sizes: ``paper`` (the defaults), ``small`` (CPU experiments), ``tiny`` (tests, demos).
#: Parameters at 257 × 345 (six notes, NumCat++): see :func:`parameter_count`; the order
#: tiny < small < paper holds at every input size (``grid`` caps the fully connected layers).
SIZES: dict[str, dict] = {
    "paper": {},
    "small": dict(channels=(8, 16, 32, 64, 64, 64), mix_channels=128, flow_layers=4, flow_hidden=128,
                  head_layers=4, head_hidden=128, mlp_hidden=256),
    "tiny": dict(channels=(4, 8, 16, 16), mix_channels=16, flow_layers=2, flow_hidden=16, head_layers=2,
                 head_hidden=16, mlp_layers=2, mlp_hidden=32),
}


def model_config(size: str = "paper", **overrides) -> ModelConfig:
    """A :class:`ModelConfig` of a named size (``"paper"``, ``"small"``, ``"tiny"``) with ``overrides``.

    Example::

        >>> model_config("tiny", encoding="num").latent_dim
        144
    """
    if size not in SIZES:
        raise PresetModelError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    return replace(ModelConfig(), **{**SIZES[size], **overrides})


def parameter_count(cfg: ModelConfig) -> int:
    """Trainable parameters of a :class:`PresetModel` with ``cfg``.

    Example::

        >>> sizes = [parameter_count(model_config(s, n_mels=257, frames=345)) for s in ("tiny", "small", "paper")]
        >>> sizes == sorted(sizes)
        True
    """
    return sum(p.numel() for p in PresetModel(cfg).parameters() if p.requires_grad)


def _conv(cin: int, cout: int, transposed: bool = False) -> nn.Sequential:
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    return nn.Sequential(conv(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1))


class Encoder(nn.Module):
    """Spectrograms ``(B, K, mels, frames)`` → ``μ, log σ²`` each ``(B, latent_dim)``.

    The same per-note CNN runs on each note; the ``K`` feature maps are stacked on the channel
    axis and mixed by a 3×3 convolution before the linear layer.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        chans = (1, *cfg.channels)
        self.per_note = nn.Sequential(*(_conv(a, b) for a, b in zip(chans[:-1], chans[1:])))
        h, w = cfg.n_mels, cfg.frames
        for _ in cfg.channels:  # k=4, s=2, p=1 → floor(n / 2)
            h, w = h // 2, w // 2
        h, w = min(h, cfg.grid[0]), min(w, cfg.grid[1])
        self.mix = nn.Sequential(nn.Conv2d(cfg.notes * cfg.channels[-1], cfg.mix_channels, 3, padding=1),
                                 nn.BatchNorm2d(cfg.mix_channels), nn.LeakyReLU(0.1),
                                 nn.AdaptiveAvgPool2d((h, w)))
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.mix_channels * h * w, 2 * cfg.latent_dim)

    def forward(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        b, k, h, w = mel.shape
        f = self.per_note(mel.reshape(b * k, 1, h, w))
        f = self.mix(f.reshape(b, k * f.shape[1], *f.shape[2:]))
        mu, logvar = self.out(self.dropout(f.flatten(1))).chunk(2, dim=-1)
        # A guard only, inactive in normal training (log σ² stays well below 0): a posterior σ far
        # above the prior's 1 overflows float32 through the flows' squares and exponentials.
        return mu, logvar.clamp(max=LOGVAR_MAX)


class Decoder(nn.Module):
    """Latent ``(B, latent_dim)`` → spectrograms ``(B, K, mels, frames)`` (transposed CNN, cropped)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        scale = 2 ** len(cfg.channels)
        self.h0, self.w0 = math.ceil(cfg.n_mels / scale), math.ceil(cfg.frames / scale)
        self.hg, self.wg = min(self.h0, cfg.grid[0]), min(self.w0, cfg.grid[1])
        self.inp = nn.Linear(cfg.latent_dim, cfg.mix_channels * self.hg * self.wg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.mix = nn.Sequential(nn.LeakyReLU(0.1),
                                 nn.Conv2d(cfg.mix_channels, cfg.notes * cfg.channels[-1], 3, padding=1),
                                 nn.BatchNorm2d(cfg.notes * cfg.channels[-1]), nn.LeakyReLU(0.1))
        chans = cfg.channels[::-1]
        layers = [_conv(a, b, transposed=True) for a, b in zip(chans[:-1], chans[1:])]
        layers.append(nn.ConvTranspose2d(chans[-1], 1, 4, 2, 1))
        self.per_note = nn.Sequential(*layers)
        n = len(layers)
        #: (mels, frames) kept after each layer: ⌈size / 2^(layers left)⌉, the input size at the end.
        self.sizes = [(math.ceil(cfg.n_mels / 2 ** (n - 1 - i)), math.ceil(cfg.frames / 2 ** (n - 1 - i)))
                      for i in range(n)]

    def forward(self, z: Tensor) -> Tensor:
        cfg, b = self.cfg, z.shape[0]
        f = self.dropout(self.inp(z)).reshape(b, cfg.mix_channels, self.hg, self.wg)
        if (self.hg, self.wg) != (self.h0, self.w0):
            f = F.interpolate(f, size=(self.h0, self.w0), mode="nearest")
        f = self.mix(f).reshape(b * cfg.notes, cfg.channels[-1], self.h0, self.w0)
        # Each stride-2 layer doubles both axes; cropping to what the output still needs after every
        # layer, instead of once at the end, skips the rows and frames that would be thrown away
        # (at 64 × 87 the uncropped stack computes 64 × 128, 47 % more than it keeps).
        for layer, (h, w) in zip(self.per_note, self.sizes):
            f = layer(f)[:, :, :h, :w]
        return f[:, 0].reshape(b, cfg.notes, cfg.n_mels, cfg.frames)


class RealNVPTransform(nn.Module):
    """An invertible map ``ℝ^D → ℝ^D``: zuko's RealNVP coupling stack, used as a plain bijection.

    Example::

        >>> t = RealNVPTransform(4, layers=2, hidden=8)
        >>> x = torch.randn(3, 4)
        >>> y, logdet = t(x)
        >>> torch.allclose(t.inverse(y), x, atol=1e-5), logdet.shape
        (True, torch.Size([3]))
    """

    def __init__(self, features: int, layers: int, hidden: int) -> None:
        super().__init__()
        self.flow = zuko.flows.RealNVP(features, transforms=layers, hidden_features=(hidden, hidden))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, D)`` → ``y (B, D)`` and ``log|det ∂y/∂x| (B,)``."""
        return self.flow.transform().call_and_ladj(x)

    def inverse(self, y: Tensor) -> Tensor:
        """``y (B, D)`` → ``x (B, D)``."""
        return self.flow.transform().inv(y)


class MLPHead(nn.Module):
    """The paper's MLP baseline: ``mlp_layers`` hidden layers of ``mlp_hidden`` units, latent → logits."""

    def __init__(self, dim: int, layers: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        sizes = (dim, *([hidden] * layers))
        blocks: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            blocks += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*blocks, nn.Linear(hidden, dim))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class PresetActivation(nn.Module):
    """Head logits ``u (B, D)`` → preset vector ``v (B, D)``: floats clamped to [0, 1], softmax(u / T) per one-hot group.

    One-hot groups are gathered by size (:attr:`group_index`, one ``(n_groups, size)`` index
    tensor per distinct size) so a batch costs a handful of ops rather than one per group.
    """

    def __init__(self, encoding: Encoding, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.register_buffer("float_index", torch.as_tensor(encoding.float_index), persistent=False)
        sizes = sorted({g.size for g in encoding.onehot_groups})
        self.group_index: list[Tensor] = []
        for i, s in enumerate(sizes):
            idx = torch.tensor([[g.start + j for j in range(s)] for g in encoding.onehot_groups if g.size == s])
            self.register_buffer(f"_groups{i}", idx, persistent=False)
            self.group_index.append(idx)

    def _apply(self, fn, *args, **kwargs):  # keep group_index pointing at the moved buffers
        out = super()._apply(fn, *args, **kwargs)
        self.group_index = [getattr(self, f"_groups{i}") for i in range(len(self.group_index))]
        return out

    def group_logits(self, u: Tensor) -> list[Tensor]:
        """Tempered logits ``u / T`` of the one-hot groups, one ``(B, n_groups, size)`` tensor per size."""
        return [u[:, idx] / self.temperature for idx in self.group_index]

    def forward(self, u: Tensor) -> Tensor:
        v = torch.empty_like(u)
        v[:, self.float_index] = u[:, self.float_index].clamp(0.0, 1.0)
        for idx, logits in zip(self.group_index, self.group_logits(u)):
            v[:, idx] = logits.softmax(dim=-1)
        return v


class ModelOutput(NamedTuple):
    """Everything the loss and inference need from one forward pass (shapes for batch ``B``, latent ``D``)."""

    mel: Tensor      # (B, K, mels, frames) reconstruction, same scale as the input ([-1, 1])
    mu: Tensor       # (B, D)
    logvar: Tensor   # (B, D)
    z0: Tensor       # (B, D) sample of q(z₀|x) (μ in eval mode)
    zk: Tensor       # (B, D) after the latent flow
    logdet: Tensor   # (B,) Σ log|det ∂z_k/∂z_{k-1}|
    logits: Tensor   # (B, D) raw head output u (loss input)
    preset: Tensor   # (B, D) activated preset vector v (decode input)


class PresetModel(nn.Module):
    """Spectrogram VAE + latent RealNVP + preset regression head (see the module docstring).

    Flows and heads always run in float32, outside any autocast region, because their
    log-determinants and inverses lose too much in half precision.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoding = get_encoding(cfg.encoding)
        d = cfg.latent_dim
        self.encoder = Encoder(cfg)
        self.latent_flow = RealNVPTransform(d, cfg.flow_layers, cfg.flow_hidden)
        self.decoder = Decoder(cfg)
        if cfg.head == "flow":
            self.head: nn.Module = RealNVPTransform(d, cfg.head_layers, cfg.head_hidden)
        else:
            self.head = MLPHead(d, cfg.mlp_layers, cfg.mlp_hidden, cfg.head_dropout)
        self.activation = PresetActivation(self.encoding, cfg.temperature)
        # Channels-last convolution weights: 1.3× the training samples/s of the default layout on one
        # CPU core, same values; `.to(device)` keeps the layout, and state dicts load into it.
        self.to(memory_format=torch.channels_last)

    def regress(self, zk: Tensor) -> Tensor:
        """Latent ``z_K (B, D)`` → head logits ``u (B, D)``."""
        return self.head(zk)[0] if self.cfg.head == "flow" else self.head(zk)

    def forward(self, mel: Tensor, eps: Tensor | None = None) -> ModelOutput:
        """``mel (B, K, mels, frames)`` scaled to [-1, 1] → :class:`ModelOutput`. Samples z₀ in train mode.

        ``eps (B, D)``: the standard normal noise of that sample (drawn here when None); given by
        the DDP training loop so that each sample gets the noise it would get in one process.
        """
        mu, logvar = self.encoder(mel)
        with torch.autocast(mel.device.type, enabled=False):
            mu, logvar = mu.float(), logvar.float()
            if self.training:
                z0 = mu + (torch.randn_like(mu) if eps is None else eps) * (0.5 * logvar).exp()
            else:
                z0 = mu
            zk, logdet = self.latent_flow(z0)
            u = self.regress(zk)
            v = self.activation(u)
        return ModelOutput(self.decoder(zk), mu, logvar, z0, zk, logdet, u, v)

    @torch.no_grad()
    def infer(self, mel: Tensor) -> np.ndarray:
        """Spectrograms ``(B, K, mels, frames)`` → raw DX7 values ``(B, 145)`` uint8 (eval mode, z₀ = μ)."""
        was = self.training
        self.eval()
        try:
            return self.encoding.decode(self(mel).preset.cpu().numpy())
        finally:
            self.train(was)

    def preset_to_latent(self, preset: Tensor) -> Tensor:
        """Preset vectors ``(B, D)`` (e.g. ``encoding.encode(raw)``) → latents ``z_K (B, D)``, flow head only.

        One-hot groups are fed as logits: exact for the regression flow's own outputs,
        an approximation for encoded presets (softmax(onehot / T) is peaked, not one-hot).
        """
        if self.cfg.head != "flow":
            raise PresetModelError("only the flow head is invertible; this model was trained with --head mlp")
        return self.head.inverse(preset.float())
