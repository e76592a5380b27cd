"""Typed, frozen specs that plugins register through the hooks of `l4p_framework.plugins`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel

Layer = int | Literal["final"]
"""A token-feature layer: 0 = patch embedding + positions, k = output of block k, "final" = LayerNorm."""


@dataclass(frozen=True)
class EncoderInfo:
    """What a head may know about the encoder it runs on (enough to size its decoder)."""

    preset: str
    width: int
    depth: int
    num_heads: int
    patch_size: int
    tubelet: int
    num_frames: int
    image_size: tuple[int, int]
    fingerprint: str = ""

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """(t, h, w) token grid of one window."""
        h, w = self.image_size
        return self.num_frames // self.tubelet, h // self.patch_size, w // self.patch_size


OutputKind = Literal["auto", "map", "flow", "points", "queries", "intrinsics", "other"]
OutputValues = Literal["real", "logit"]
Undefined = Literal["", "first frame", "before query"]


@dataclass(frozen=True)
class OutputSpec:
    """One named output of a head: `shape` uses B, T, H, W, N symbols.

    `kind` says how the composed model brings the output from the model window's pixels back to the
    input video's (letterbox / crop / squash, `l4p_framework.data.video.FrameTransform`): "map" a
    dense map (..., H, W) resampled, "flow" a (B, 2, T, H, W) displacement field resampled and
    rescaled, "points" (..., 2) pixel positions, "queries" (..., 3) (t, x, y) frame and pixel
    position, "intrinsics" (..., 3, 3) pixel K, "other" left
    alone; "auto" (default) is "map" for shapes ending in "H, W)" and "other" otherwise. A dense
    output that a head already returns at the input resolution is left as it is.

    `values` "logit" marks log-odds (exports write the probability, see `l4p_framework.results`);
    `undefined` names the frames where the output means nothing ("first frame": e.g. backward flow;
    "before query": a point before its query frame, for outputs with an N axis next to T); exports
    write NaN there. `export_dtype` is the precision `l4p run` stores a dense real output in:
    "float16" halves the disk for bounded values (flow in pixels, unit normals); unbounded ones
    (relative depth) keep "float32", float16 would turn values above 65504 into inf.
    """

    name: str
    shape: str
    meaning: str
    kind: OutputKind = "auto"
    values: OutputValues = "real"
    undefined: Undefined = ""
    export_dtype: Literal["float32", "float16"] = "float32"

    @property
    def resolved_kind(self) -> str:
        if self.kind != "auto":
            return self.kind
        return "map" if self.shape.replace(" ", "").endswith("H,W)") else "other"


class Stitcher(Protocol):
    """Merges one head's per-window outputs of a long video into full-length outputs.

    Windows arrive in order. `merge` gets the running state (None for the first window), the
    window's outputs (time dim of length `window`), the window start frame and the number of
    frames this window shares with the previous one; it returns the new state. `finalize`
    returns the full-length outputs.

    Optional, for streaming long videos in bounded memory (`L4P.stream(on_frames=...)`):
    `release(state, before)` returns the time-indexed outputs' frames from the first one not yet
    released up to `before` (exclusive; final, since later windows start at or after `before`) and
    drops them from the state; `finalize` then returns only the frames after them. Stitchers
    without `release` (small outputs: poses, tracks) keep everything until `finalize`.
    """

    def merge(self, state: Any, outputs: dict[str, torch.Tensor], start: int, overlap: int) -> Any: ...

    def finalize(self, state: Any) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class HeadSpec:
    """The contract of one task head (architecture.md §4).

    build(encoder_info, config) -> nn.Module whose forward(features: TokenFeatures, batch: dict)
    returns a dict of named tensors (see `outputs`). loss(outputs, batch, config) returns
    {"loss": total, **terms}; metrics(outputs, batch) returns floats; visualize(outputs, batch)
    returns a dict of name -> uint8 image array (H, W, 3) or a list of them (frames).
    """

    name: str
    version: str
    config_model: type[BaseModel]
    layers: Callable[[EncoderInfo, BaseModel], Sequence[Layer]]
    build: Callable[[EncoderInfo, BaseModel], torch.nn.Module]
    loss: Callable[[dict, dict, BaseModel], dict[str, torch.Tensor]]
    metrics: Callable[[dict, dict], dict[str, float]]
    targets: tuple[str, ...]
    outputs: tuple[OutputSpec, ...]
    stitcher: Callable[[BaseModel], Stitcher]
    visualize: Callable[[dict, dict], dict[str, Any]] | None = None
    inputs: tuple[str, ...] = ()
    """Extra batch keys the head reads at inference (e.g. "queries", "intrinsics")."""
    baseline: Callable[[dict], dict[str, torch.Tensor]] | None = None
    """Outputs of the task's trivial baseline for a batch (what `l4p eval` compares against)."""
    official_key_map: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    """Official L4P checkpoint weights -> this head's state dict, for heads with an official counterpart
    (`l4p_framework.official.OFFICIAL_HEADS`). One rule for every head: it accepts the head's own
    sub-dict (keys relative to `l4p_model.task_heads.<module>.`) or any dict whose keys all start with
    `l4p_model.` (e.g. the whole official state dict; only this head's keys are taken). Build it with
    `l4p_framework.official.official_key_map_for`."""
    uses_matching: Callable[[BaseModel], bool] | None = None
    """Whether the head, with this config, reads the shared frame matching `batch["matches"]`
    (`l4p_framework.matching.MatchFeatures` of the window at the input resolution, with
    `batch["frames"]` and `batch["transform"]`); the composed model computes it once per window
    only when a running head says so. None = never."""
    matching_baseline: Callable[[dict, Any], dict[str, torch.Tensor]] | None = None
    """Outputs of the shared matching alone for a batch (batch, MatchFeatures of its video) -> what
    `l4p eval` prints beside a head that reads the matching."""
    metric_protocols: Mapping[str, str] = field(default_factory=dict)
    """Metric name -> the protocol it follows, in a few words (`l4p eval` prints it beside the
    metric), e.g. {"aj3d": "tapvid3d, 256px, median scale"}."""
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Config overrides per model profile (`l4p_framework.profiles`), applied when the head is added
    to a model of that profile, e.g. {"official": {"chain_blend": False}}: how the head reproduces
    the official L4P behaviour where its defaults differ. Empty: the head behaves alike in all."""
    description: str = ""
    distribution: str = "<unknown>"
    """Filled in by the plugin host with the registering distribution's name."""
    distribution_version: str = ""


@dataclass(frozen=True)
class EncoderSpec:
    """A named encoder preset (`config` is an `l4p_framework.encoder.EncoderConfig`)."""

    name: str
    config: BaseModel
    description: str = ""
    distribution: str = "<unknown>"


@dataclass(frozen=True)
class DatasetSpec:
    """A data source usable as `--data NAME`.

    build(split, **options) -> torch.utils.data.Dataset whose items are sample dicts with the
    keys of `l4p_framework.batch`. `provides` lists the keys its samples carry.
    """

    name: str
    build: Callable[..., torch.utils.data.Dataset]
    provides: tuple[str, ...]
    splits: tuple[str, ...] = ("train", "val", "test")
    description: str = ""
    distribution: str = "<unknown>"


@dataclass(frozen=True)
class SubcommandSpec:
    """An extra `l4p NAME` command: add_arguments(argparse parser); run(args) -> exit code."""

    name: str
    help: str
    add_arguments: Callable[[Any], None]
    run: Callable[[Any], int]
    distribution: str = "<unknown>"


@dataclass(frozen=True)
class PluginRecord:
    """What the host knows about one plugin for `l4p plugins`."""

    name: str
    distribution: str
    version: str
    status: Literal["active", "blocked", "failed"]
    hooks: tuple[str, ...] = ()
    error: str = ""
    provides: dict[str, tuple[str, ...]] = field(default_factory=dict)
