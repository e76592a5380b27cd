"""The shared dense-head body: a `DPT3D` sized for an encoder, plus the checks every dense head needs.

A dense head plugin (depth, flow, motion masks, normals, ...) subclasses `DenseHead` and turns the raw
map it returns into its named outputs; its config model extends `DenseHeadConfig`. Module keys are
`dpt.<DPT3D key>`; `official_to_dense_head` / `dense_head_to_official` convert them to and from the
official L4P checkpoint's `task_head.dpt.*` keys (l4p-model.md §5.2).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from ..errors import ConfigError, InputError
from ..features import TokenFeatures
from ..specs import EncoderInfo
from .dpt3d import DPT3D, DPT3DConfig, dpt3d_cpu, dpt3d_hook_layers, dpt3d_official, dpt3d_small
from .keymaps import l4p_dense_head_to_official, official_dense_head_to_l4p

DPT_PREFIX = "dpt."


def with_widths(base: DPT3DConfig, widths: Any) -> DPT3DConfig:
    """`base` with the `layer_dims` / `feature_dim` / `last_dim` that `widths` (a head config) sets
    (not None), validated; `base` itself when it sets none."""
    names = ("layer_dims", "feature_dim", "last_dim")
    overrides = {k: getattr(widths, k) for k in names if getattr(widths, k, None) is not None}
    return DPT3DConfig(**{**base.model_dump(), **overrides}) if overrides else base


class DenseHeadConfig(BaseModel):
    """Decoder architecture of a DPT dense head (extend it with task options).

    preset: "small" (widths 32/64/128/128, fusion 64, head 32: tiny and small encoders), "cpu"
        (`dpt3d_cpu`: fusion at a quarter of the input resolution, cheap to train on CPUs) or "official"
        (256/512/1024/1024, 256, 128: the L4P heads, l4p-model.md §2.2).
    layers: the four hooked encoder blocks (1-based block outputs); None picks them for the
        encoder's depth with `dpt3d_hook_layers` (14/21/28/36 on the 40-block official encoder).
    layer_dims / feature_dim / last_dim: optional width overrides of the preset.
    """

    model_config = ConfigDict(extra="forbid")

    preset: Literal["small", "cpu", "official"] = "small"
    layers: tuple[int, int, int, int] | None = None
    layer_dims: tuple[int, int, int, int] | None = None
    feature_dim: int | None = Field(None, gt=0)
    last_dim: int | None = Field(None, gt=0)

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (any(x < 0 for x in v) or list(v) != sorted(v)):
            raise ValueError(f"layers must be non-negative, non-decreasing block indices, got {v}")
        return v

    @field_validator("layer_dims")
    @classmethod
    def _check_dims(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and any(x <= 0 for x in v):
            raise ValueError(f"layer_dims must be positive, got {v}")
        return v

    def hook_layers(self, info: EncoderInfo) -> tuple[int, int, int, int]:
        """The four encoder blocks this head reads on encoder `info`."""
        return self.layers if self.layers is not None else dpt3d_hook_layers(info.depth)

    def dpt_config(self, info: EncoderInfo, out_channels: int) -> DPT3DConfig:
        """The validated `DPT3DConfig` of this head on encoder `info` with `out_channels` outputs."""
        layers = self.hook_layers(info)
        presets = {"official": dpt3d_official, "cpu": dpt3d_cpu, "small": dpt3d_small}
        base = presets[self.preset](out_channels, layers)
        try:
            return with_widths(base, self)
        except ValueError as exc:
            raise ConfigError(f"invalid dense-head config {self.model_dump()}: {exc}") from None


class DenseHead(nn.Module):
    """A `DPT3D` over four hooked token layers of one window, returning the raw dense map.

    Args:
        info: the encoder the head runs on (width, token grid, patch and tubelet size, depth).
        config: the decoder architecture (`DenseHeadConfig` or a subclass).
        out_channels: channels C of the raw map.

    `forward(features, batch)` -> raw (B, C, T, H, W) at the window size `features.input_size`
    (frames, pixels): one value per input frame and pixel, no activation.
    """

    def __init__(self, info: EncoderInfo, config: DenseHeadConfig, out_channels: int) -> None:
        super().__init__()
        self.layers = tuple(config.hook_layers(info))
        self.token_grid = tuple(info.token_grid)
        self.dpt = DPT3D(
            config.dpt_config(info, out_channels),
            encoder_width=info.width,
            token_grid=self.token_grid,
            patch=(info.tubelet, info.patch_size, info.patch_size),
        )

    def forward(self, features: TokenFeatures, batch: dict[str, Any] | None = None) -> torch.Tensor:
        """features: tokens (B, N, C_enc) of `self.layers` for one window -> raw (B, C, T, H, W)."""
        if tuple(features.grid_size) != self.token_grid:
            raise InputError(
                f"this head was built for token grid (t, h, w) = {self.token_grid}, i.e. a "
                f"{self.dpt.input_size} (T, H, W) window, but got tokens of grid {tuple(features.grid_size)} "
                f"from a {tuple(features.input_size)} window; resize the video to the encoder's image size"
            )
        return self.dpt([features[layer] for layer in self.layers], output_size=tuple(features.input_size))


def official_to_dense_head(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official dense-head keys (`task_head.dpt.*`, after stripping `l4p_model.task_heads.<name>.`)
    -> `DenseHead` keys (`dpt.*`). The `scratch.layer_rn.*` aliases are verified and dropped."""
    return {DPT_PREFIX + k: v for k, v in official_dense_head_to_l4p(state_dict).items()}


def dense_head_to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`DenseHead` keys (`dpt.*`) -> official keys (`task_head.dpt.*`, aliases added)."""
    bad = [k for k in state_dict if not k.startswith(DPT_PREFIX)]
    if bad:
        raise ConfigError(f"dense-head keys must start with {DPT_PREFIX!r}; got {bad[:3]}")
    return l4p_dense_head_to_official({k[len(DPT_PREFIX) :]: v for k, v in state_dict.items()})


def official_dense_head_shapes(out_channels: int) -> dict[str, tuple[int, ...]]:
    """The official standard dense head's 68 keys (`task_head.dpt.*`) and shapes, l4p-model.md §5.2.

    For depth and dyn_mask (out_channels 1) and flow_2d_backward (2), aliases included; use it to check
    a checkpoint before converting it.
    """
    t: dict[str, tuple[int, ...]] = {}
    for i, (dim, up) in enumerate(zip((256, 512, 1024, 1024), ((2, 4, 4), (2, 2, 2), None, (3, 3, 3)))):
        t[f"act_postprocess.{i}.0.weight"], t[f"act_postprocess.{i}.0.bias"] = (dim, 1408, 1, 1, 1), (dim,)
        if up is not None:
            t[f"act_postprocess.{i}.1.weight"], t[f"act_postprocess.{i}.1.bias"] = (dim, dim, *up), (dim,)
    for k, cin in zip(range(1, 5), (256, 512, 1024, 1024)):
        t[f"scratch.layer{k}_rn.weight"] = t[f"scratch.layer_rn.{k - 1}.weight"] = (256, cin, 3, 3, 3)
        t[f"scratch.refinenet{k}.out_conv.weight"], t[f"scratch.refinenet{k}.out_conv.bias"] = (
            (256, 256, 1, 1, 1),
            (256,),
        )
        for unit in (1, 2):
            for conv in (1, 2):
                name = f"scratch.refinenet{k}.resConfUnit{unit}.conv{conv}"
                t[f"{name}.weight"], t[f"{name}.bias"] = (256, 256, 3, 3, 3), (256,)
    t["head1.0.weight"], t["head1.0.bias"] = (128, 256, 3, 3, 3), (128,)
    t["head2.0.weight"], t["head2.0.bias"] = (128, 128, 3, 3, 3), (128,)
    t["head2.2.weight"], t["head2.2.bias"] = (out_channels, 128, 1, 1, 1), (out_channels,)
    return {"task_head.dpt." + k: v for k, v in t.items()}


# -- checks shared by dense-head losses and metrics ----------------------------------------------------


def dense_output(outputs: dict[str, torch.Tensor], key: str, channels: int) -> torch.Tensor:
    """outputs[key] checked to be a (B, channels, T, H, W) tensor; clear InputError otherwise."""
    if key not in outputs:
        raise InputError(f"outputs have no {key!r} (got {sorted(outputs)}); pass the head's own outputs")
    x = outputs[key]
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"outputs[{key!r}] must be (B, {channels}, T, H, W), got {shape}")
    return x


def dense_target(
    batch: dict[str, Any], key: str, channels: int, like: torch.Tensor, *, required: bool = True
) -> torch.Tensor | None:
    """batch[key] checked to be (B, channels, T, H, W) with B, T, H, W of the prediction `like`.

    A missing key is an InputError when `required`, else None. Non-finite values are allowed
    (losses mask them); callers decide which pixels are valid.
    """
    if key not in batch or batch[key] is None:
        if required:
            raise InputError(f"batch has no {key!r}; it is needed as a target (B, {channels}, T, H, W)")
        return None
    x = batch[key]
    b, _, t, h, w = like.shape
    want = (b, channels, t, h, w)
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != want:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(
            f"batch[{key!r}] must have shape (B, {channels}, T, H, W) = {want} to match the prediction, got {shape}"
        )
    return x


def dense_mask(batch: dict[str, Any], key: str, like: torch.Tensor) -> torch.Tensor | None:
    """Optional validity mask batch[key] as bool (B, 1, T, H, W) matching `like`; None if absent."""
    m = dense_target(batch, key, 1, like, required=False)
    if m is None:
        return None
    return m if m.dtype == torch.bool else m != 0


__all__ = [
    "DenseHead",
    "DenseHeadConfig",
    "dense_head_to_official",
    "dense_mask",
    "dense_output",
    "dense_target",
    "official_dense_head_shapes",
    "official_to_dense_head",
]
