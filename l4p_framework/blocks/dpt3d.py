"""3D-convolution DPT decoder (Ranftl et al. 2021, "Vision Transformers for Dense Prediction"),
lifted to video tokens as in L4P's dense heads (l4p-model.md §2).

Four hooked token layers (B, N, C) are reshaped to grids (B, C, t, h, w), resampled to a pyramid
(`act_postprocess`), projected to a common width (`scratch.layer{k}_rn`), fused top-down by
`scratch.refinenet{4,3,2,1}` and decoded by `head1` / `head2`. Submodule names equal the official
checkpoint's names after stripping `task_head.dpt.` (see `l4p_framework.blocks.keymaps`).

Scale-factor conventions (checked against the shape table of l4p-model.md §2.2/§2.3):

- `actpost_scale_factors[i]` are **log2** factors (sT, sH, sW) for pyramid level i (hooked layer i):
  s > 0 upsamples by 2**s with a ConvTranspose3d (kernel = stride = 2**s; an axis with s = 0 gets
  kernel = stride = 1), s < 0 downsamples by 2**-s with a strided Conv3d, all zeros is the identity.
  Positive and negative factors cannot be mixed in one level.
- `fusion_scale_factors[i]` are **plain** (not log2) trilinear upsampling factors of
  `scratch.refinenet{i+1}`, i.e. the tuple is ordered refinenet1, 2, 3, 4 — the *reverse* of the order
  in which the blocks run. The official ((1,2,2), (1,2,2), (2,2,2), (2,2,2)) therefore means
  refinenet4 x(2,2,2), refinenet3 x(2,2,2), refinenet2 x(1,2,2), refinenet1 x(1,2,2), which is what
  the probed shapes of §2.2 show (4x8x8 -> 8x16x16 -> 16x32x32 -> 16x64x64 -> 16x128x128).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from torch import nn

from ..errors import ConfigError, InputError

Triple = tuple[int, int, int]

OFFICIAL_HOOK_FRACTIONS = (14 / 40, 21 / 40, 28 / 40, 36 / 40)
"""The official hooks 14/21/28/36 of a 40-block encoder, as fractions of the depth."""

STANDARD_ACTPOST: tuple[Triple, Triple, Triple, Triple] = ((1, 2, 2), (1, 1, 1), (0, 0, 0), (-1, -1, -1))
STANDARD_FUSION: tuple[Triple, Triple, Triple, Triple] = ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))
RAYS_ACTPOST: tuple[Triple, Triple, Triple, Triple] = ((1, 0, 0), (1, 0, 0), (0, 0, 0), (-1, -1, -1))
RAYS_FUSION: tuple[Triple, Triple, Triple, Triple] = ((1, 1, 1), (1, 1, 1), (2, 1, 1), (2, 2, 2))


class DPT3DConfig(BaseModel):
    """Architecture of a 3D DPT decoder (frozen; derive variants with `model_copy(update=...)`).

    `output_size`: "input" resizes the head output to the input window size (T, H, W) (given to
    `forward`, default token grid x patch); a (T, H, W) tuple resizes to that fixed size; "native"
    keeps the size refinenet1 produces (no resize). The resize is trilinear, align_corners=True,
    between head1 and head2, as in the official heads.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: tuple[int, int, int, int]
    layer_dims: tuple[int, int, int, int]
    feature_dim: int
    last_dim: int
    out_channels: int
    actpost_scale_factors: tuple[Triple, Triple, Triple, Triple] = STANDARD_ACTPOST
    fusion_scale_factors: tuple[Triple, Triple, Triple, Triple] = STANDARD_FUSION
    output_size: Literal["input", "native"] | Triple = "input"

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(x < 0 for x in v) or list(v) != sorted(v):
            raise ValueError(f"layers must be non-negative and non-decreasing block indices, got {v}")
        return v

    @field_validator("layer_dims")
    @classmethod
    def _check_dims(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(x <= 0 for x in v):
            raise ValueError(f"layer_dims must be positive, got {v}")
        return v

    @field_validator("feature_dim", "last_dim", "out_channels")
    @classmethod
    def _check_positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError(f"must be positive, got {v}")
        return v

    @field_validator("actpost_scale_factors")
    @classmethod
    def _check_actpost(cls, v: tuple[Triple, ...]) -> tuple[Triple, ...]:
        for i, f in enumerate(v):
            if any(s > 0 for s in f) and any(s < 0 for s in f):
                raise ValueError(
                    f"actpost_scale_factors[{i}] = {f} mixes up- and down-sampling; use one sign per level"
                )
        return v

    @field_validator("fusion_scale_factors")
    @classmethod
    def _check_fusion(cls, v: tuple[Triple, ...]) -> tuple[Triple, ...]:
        for i, f in enumerate(v):
            if any(s < 1 for s in f):
                raise ValueError(
                    f"fusion_scale_factors[{i}] = {f}: factors are plain upsampling factors and must be >= 1"
                )
        return v

    @model_validator(mode="after")
    def _check_output_size(self) -> DPT3DConfig:
        if isinstance(self.output_size, tuple) and any(s <= 0 for s in self.output_size):
            raise ValueError(f"output_size must be positive, got {self.output_size}")
        return self


def dpt3d_hook_layers(depth: int) -> tuple[int, int, int, int]:
    """Hooked block indices for an encoder of `depth` blocks, spaced like the official 14/21/28/36 of 40.

    Index k means "output of block k" (1-based, as in `TokenFeatures`). Depth 40 gives (14, 21, 28, 36);
    depth 12 gives (4, 6, 8, 11); encoders shallower than 4 blocks reuse layers.
    """
    if depth < 1:
        raise ConfigError(f"encoder depth must be >= 1 to hook DPT layers, got {depth}")
    out: list[int] = []
    for f in OFFICIAL_HOOK_FRACTIONS:
        k = min(depth, max(1, math.floor(depth * f + 0.5)))
        out.append(max(k, out[-1]) if out else k)
    return tuple(out)  # type: ignore[return-value]


def dpt3d_official(
    out_channels: int = 1, layers: tuple[int, int, int, int] = (14, 21, 28, 36)
) -> DPT3DConfig:
    """The official standard dense head (depth C=1, dyn_mask C=1, flow C=2), l4p-model.md §2.2."""
    return DPT3DConfig(
        layers=layers,
        layer_dims=(256, 512, 1024, 1024),
        feature_dim=256,
        last_dim=128,
        out_channels=out_channels,
        actpost_scale_factors=STANDARD_ACTPOST,
        fusion_scale_factors=STANDARD_FUSION,
        output_size="input",
    )


def dpt3d_official_rays(layers: tuple[int, int, int, int] = (14, 21, 28, 36)) -> DPT3DConfig:
    """The official camera-ray head, l4p-model.md §2.3: 6 channels on the (frames, h, w) token grid.

    The official config fixes output_size = (16, 16, 16); on the official (8, 16, 16) token grid that is
    exactly the native size, so "native" gives identical outputs and also works on other grids.
    """
    return DPT3DConfig(
        layers=layers,
        layer_dims=(256, 512, 1024, 1024),
        feature_dim=256,
        last_dim=128,
        out_channels=6,
        actpost_scale_factors=RAYS_ACTPOST,
        fusion_scale_factors=RAYS_FUSION,
        output_size="native",
    )


def dpt3d_small(
    out_channels: int | None = None, layers: tuple[int, int, int, int] = (1, 2, 3, 4), rays: bool = False
) -> DPT3DConfig:
    """A narrow decoder for tiny/small encoders (widths 32/64/128/128, fusion 64, head 32).

    Pass `layers=dpt3d_hook_layers(encoder_depth)`. `rays=True` uses the ray variant's factors and
    a native-size output. `out_channels` defaults to 6 for rays, else 1.
    """
    if out_channels is None:
        out_channels = 6 if rays else 1
    return DPT3DConfig(
        layers=layers,
        layer_dims=(32, 64, 128, 128),
        feature_dim=64,
        last_dim=32,
        out_channels=out_channels,
        actpost_scale_factors=RAYS_ACTPOST if rays else STANDARD_ACTPOST,
        fusion_scale_factors=RAYS_FUSION if rays else STANDARD_FUSION,
        output_size="native" if rays else "input",
    )


CPU_ACTPOST: tuple[Triple, Triple, Triple, Triple] = ((1, 1, 1), (1, 0, 0), (0, 0, 0), (-1, -1, -1))
CPU_FUSION: tuple[Triple, Triple, Triple, Triple] = ((1, 1, 1), (1, 2, 2), (2, 1, 1), (2, 2, 2))


def dpt3d_cpu(out_channels: int = 1, layers: tuple[int, int, int, int] = (1, 2, 3, 4)) -> DPT3DConfig:
    """A decoder cheap enough to train on a CPU: the fusion stops at (T, H/4, W/4) of the input.

    Pyramid (token grid t, h, w; window 2t x 8h x 8w for patch 8): level 0 (2t, 2h, 2w),
    level 1 (2t, h, w), level 2 (t, h, w), level 3 (t/2, h/2, w/2); refinenet1 does not
    upsample, head1 runs at (2t, 2h, 2w) and the trilinear resize to the input comes before
    head2. Widths 16/32/64/64, fusion 32, head 8. 3D-conv backward passes are slow on CPUs
    (about 12 GFLOP/s here), and full-resolution fusion is what the standard presets pay for.
    """
    return dpt3d_small(out_channels, layers).model_copy(
        update={
            "layer_dims": (16, 32, 64, 64),
            "feature_dim": 32,
            "last_dim": 8,
            "actpost_scale_factors": CPU_ACTPOST,
            "fusion_scale_factors": CPU_FUSION,
        }
    )


DPT3D_OFFICIAL = dpt3d_official(1)
"""Official standard head with C = 1; use `dpt3d_official(2)` or `model_copy` for flow."""
DPT3D_OFFICIAL_RAYS = dpt3d_official_rays()
DPT3D_SMALL = dpt3d_small(1)


def _resample_size(n: int, s: int) -> int:
    """Size of one axis after a level's resampler with log2 factor `s`."""
    if s > 0:
        return n * 2**s
    if s < 0:
        stride = 2**-s
        k, p = 2 * (stride // 2) + 1, stride // 2
        return (n + 2 * p - k) // stride + 1
    return n


def make_resampler(channels: int, factors: Triple) -> nn.Module:
    """Resampler of one pyramid level: ConvTranspose3d (up), strided Conv3d (down) or Identity.

    factors: log2 (sT, sH, sW), one sign per level (zeros allowed on any axis).
    """
    if any(s > 0 for s in factors):
        k = tuple(2 ** max(s, 0) for s in factors)
        return nn.ConvTranspose3d(channels, channels, kernel_size=k, stride=k, bias=True)
    if any(s < 0 for s in factors):
        stride = tuple(2 ** max(-s, 0) for s in factors)
        k = tuple(2 * (st // 2) + 1 for st in stride)
        pad = tuple(st // 2 for st in stride)
        return nn.Conv3d(channels, channels, kernel_size=k, stride=stride, padding=pad, bias=True)
    return nn.Identity()


def conv3(cin: int, cout: int, bias: bool = True) -> nn.Conv3d:
    """3x3x3 Conv3d, padding 1."""
    return nn.Conv3d(cin, cout, kernel_size=3, stride=1, padding=1, bias=bias)


def conv1(cin: int, cout: int, bias: bool = True) -> nn.Conv3d:
    """1x1x1 Conv3d."""
    return nn.Conv3d(cin, cout, kernel_size=1, stride=1, padding=0, bias=bias)


class ResidualConvUnit3D(nn.Module):
    """RCU: x + conv2(relu(conv1(relu(x)))), 3x3x3 convs with bias, width-preserving."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = conv3(dim, dim)
        self.conv2 = conv3(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, H, W) -> same shape."""
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock3D(nn.Module):
    """DPT fusion block: (x [+ RCU1(skip)]) -> RCU2 -> trilinear x`scale_factor` -> 1x1x1 out_conv.

    `resConfUnit1` of the deepest block (refinenet4) has no skip to process; it is kept so the
    official checkpoint loads, but gets no gradient (use find_unused_parameters with DDP).
    """

    def __init__(self, dim: int, scale_factor: Triple) -> None:
        super().__init__()
        self.scale_factor = tuple(scale_factor)
        self.resConfUnit1 = ResidualConvUnit3D(dim)
        self.resConfUnit2 = ResidualConvUnit3D(dim)
        self.out_conv = conv1(dim, dim)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """x: top-down path (B, C, T, H, W); skip: (B, C, T', H', W') with T' <= T, ... or None.

        When the top-down path is larger than the skip (rounding of a strided downsampling; DPT3D
        checks at construction that this is the only case), it is cropped to the skip's size.
        Returns (B, C, T*sT, H*sH, W*sW) computed from the (cropped) input size.
        """
        if skip is not None:
            t, h, w = skip.shape[-3:]
            x = x[..., :t, :h, :w] + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if self.scale_factor != (1, 1, 1):
            x = F.interpolate(x, scale_factor=self.scale_factor, mode="trilinear", align_corners=True)
        return self.out_conv(x)


class Scratch(nn.Module):
    """Holds the per-level projections `layer{k}_rn` and fusion blocks `refinenet{k}`, k = 1..4."""

    def __init__(self, layer_dims: tuple[int, ...], feature_dim: int, fusion: tuple[Triple, ...]) -> None:
        super().__init__()
        for k in range(1, 5):
            setattr(self, f"layer{k}_rn", conv3(layer_dims[k - 1], feature_dim, bias=False))
            setattr(self, f"refinenet{k}", FeatureFusionBlock3D(feature_dim, fusion[k - 1]))


class DPT3D(nn.Module):
    """3D DPT dense decoder over four token layers of a video ViT.

    Args:
        config: the architecture (`DPT3DConfig`).
        encoder_width: token width C of the encoder.
        token_grid: (t, h, w) token grid of one window.
        patch: (tubelet, patch_h, patch_w); the input window is (t*tubelet, h*patch_h, w*patch_w).

    Every pyramid and fusion size is computed at construction (`self.level_sizes`,
    `self.fusion_sizes`, `self.native_size`); a grid that the factors cannot fuse raises ConfigError
    there instead of failing at run time. The one crop allowed is the official one: a top-down path
    larger than its skip by less than the upsampling factor (the rounding of a strided downsampling on
    an odd grid, e.g. 7 -> 4 -> 8) is cropped to the skip. No padding is ever done; on the official
    (8, 16, 16) grid nothing is cropped.
    """

    def __init__(
        self,
        config: DPT3DConfig,
        encoder_width: int,
        token_grid: tuple[int, int, int],
        patch: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.config = config
        self.encoder_width = int(encoder_width)
        self.token_grid = tuple(int(x) for x in token_grid)
        self.patch = tuple(int(x) for x in patch)
        if len(self.token_grid) != 3 or any(x <= 0 for x in self.token_grid):
            raise ConfigError(f"DPT3D token_grid must be 3 positive ints (t, h, w), got {token_grid}")
        if len(self.patch) != 3 or any(x <= 0 for x in self.patch):
            raise ConfigError(f"DPT3D patch must be 3 positive ints (tubelet, ph, pw), got {patch}")
        self.input_size = tuple(g * p for g, p in zip(self.token_grid, self.patch))
        self._plan_sizes()

        self.act_postprocess = nn.ModuleList(
            nn.Sequential(conv1(self.encoder_width, dim), make_resampler(dim, f))
            for dim, f in zip(config.layer_dims, config.actpost_scale_factors)
        )
        self.scratch = Scratch(config.layer_dims, config.feature_dim, config.fusion_scale_factors)
        self.head1 = nn.Sequential(conv3(config.feature_dim, config.last_dim))
        self.head2 = nn.Sequential(
            conv3(config.last_dim, config.last_dim), nn.ReLU(), conv1(config.last_dim, config.out_channels)
        )

    def _plan_sizes(self) -> None:
        cfg = self.config
        levels = [
            tuple(_resample_size(n, s) for n, s in zip(self.token_grid, f)) for f in cfg.actpost_scale_factors
        ]
        fusion_sizes: dict[int, tuple[int, int, int]] = {}
        path = levels[3]
        for k in (4, 3, 2, 1):
            if k < 4:
                skip, prev = levels[k - 1], cfg.fusion_scale_factors[k]
                for a, (p, s, f) in enumerate(zip(path, skip, prev)):
                    # Only the rounding of a strided downsampling may be cropped (official crop).
                    if not (s <= p < s + f):
                        raise ConfigError(
                            f"DPT3D cannot fuse refinenet{k + 1}'s output {path} with level {k - 1} of size "
                            f"{skip} (axis {'THW'[a]}) for token grid {self.token_grid}: adjust "
                            "actpost_scale_factors / fusion_scale_factors or the token grid"
                        )
                path = skip
            path = tuple(n * f for n, f in zip(path, cfg.fusion_scale_factors[k - 1]))
            fusion_sizes[k] = path
        self.level_sizes: list[tuple[int, int, int]] = levels
        self.fusion_sizes = fusion_sizes
        self.native_size: tuple[int, int, int] = fusion_sizes[1]

    def resolve_output_size(self, output_size: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
        """The (T, H, W) the head returns for a forward call given `output_size`."""
        mode = self.config.output_size
        if mode == "input":
            size = self.input_size if output_size is None else tuple(int(x) for x in output_size)
            if len(size) != 3 or any(x <= 0 for x in size):
                raise InputError(f"DPT3D output_size must be (T, H, W) positive ints, got {output_size}")
            return size  # type: ignore[return-value]
        if output_size is not None:
            raise InputError(
                f"DPT3D config fixes output_size={mode!r}; do not pass output_size={tuple(output_size)}"
            )
        return self.native_size if mode == "native" else tuple(mode)  # type: ignore[return-value]

    def forward(
        self,
        tokens: list[torch.Tensor] | tuple[torch.Tensor, ...],
        output_size: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        """Decode four token layers to a dense map.

        tokens: 4 tensors (B, N, C), N = t*h*w in token order (index = t'*h*w + h'*w + w'),
            C = encoder_width, the layers `config.layers` in that order.
        output_size: (T, H, W) of the input window; only for config.output_size == "input"
            (default token grid x patch).
        Returns (B, out_channels, T, H, W) (native size or fixed size per config).
        """
        if len(tokens) != 4:
            raise InputError(f"DPT3D expects 4 token layers (B, N, C), got {len(tokens)}")
        t, h, w = self.token_grid
        target = self.resolve_output_size(output_size)
        pyramid = []
        for i, x in enumerate(tokens):
            if x.ndim != 3 or x.shape[1] != t * h * w or x.shape[2] != self.encoder_width:
                raise InputError(
                    f"DPT3D token layer {i} must be (B, {t * h * w}, {self.encoder_width}) for token grid "
                    f"{self.token_grid}, got {tuple(x.shape)}"
                )
            x = rearrange(x, "b (t h w) c -> b c t h w", t=t, h=h, w=w)
            x = self.act_postprocess[i](x)
            pyramid.append(getattr(self.scratch, f"layer{i + 1}_rn")(x))

        path = self.scratch.refinenet4(pyramid[3])
        path = self.scratch.refinenet3(path, pyramid[2])
        path = self.scratch.refinenet2(path, pyramid[1])
        path = self.scratch.refinenet1(path, pyramid[0])

        out = self.head1(path)
        if tuple(out.shape[-3:]) != tuple(target):
            out = F.interpolate(out, size=target, mode="trilinear", align_corners=True)
        return self.head2(out)
