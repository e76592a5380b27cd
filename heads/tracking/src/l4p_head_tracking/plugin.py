"""The `tracking` head plugin: HeadSpec, stitcher, visualisation and official key map."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from einops import rearrange

from l4p_framework import OutputSpec, OverwriteStitcher, hookimpl
from l4p_framework.blocks import official_tracking_head_to_l4p
from l4p_framework.official import official_key_map_for, official_module, official_prefix
from l4p_framework.specs import EncoderInfo, HeadSpec
from l4p_framework.viz.tracks import draw_tracks

from .head import TrackingConfig, TrackingHead
from .memory import QUERY_TIME_EPS
from .objectives import tracking_loss, tracking_metrics

NAME = "tracking"
OFFICIAL_MODULE = official_module(NAME)
OFFICIAL_PREFIX = official_prefix(OFFICIAL_MODULE)

OUTPUTS = (
    OutputSpec(
        "tracks",
        "(B, N, T, 2)",
        "2D track positions (x, y) in pixels, pixel centres at +0.5",
        kind="points",
        undefined="before query",
    ),
    OutputSpec(
        "visibility",
        "(B, N, T)",
        "visibility logits (sigmoid > 0.5 = visible); -10 at frames before the query (not tracked)",
        values="logit",
        undefined="before query",
    ),
    OutputSpec("queries", "(B, N, 3)", "the query points (t, x, y) in frames and pixels", kind="queries"),
    OutputSpec(
        "track_depth",
        "(B, N, T)",
        "z-depth of the track point, relative scale, not aligned across windows; 0 before the query",
        undefined="before query",
    ),
)


official_key_map = official_key_map_for(NAME, official_tracking_head_to_l4p)
"""Official L4P tracking-head weights -> this head's state dict.

Accepts the whole official checkpoint state dict (keys `l4p_model.task_heads.track_2d.*` are
taken, everything else ignored) or the head's entries with that prefix already stripped
(`l4p_framework.official`). The names are identical to `TrackingHead`'s (a `TrackingDecoder`), so
this checks the keys, requires the persistent Fourier matrix (loaded, never regenerated) and drops
`grid_xy`."""


def _layers(info: EncoderInfo, config: TrackingConfig) -> list:
    return ["final"]


def _build(info: EncoderInfo, config: TrackingConfig) -> TrackingHead:
    return TrackingHead(info, config)


def _stitcher(config: TrackingConfig) -> OverwriteStitcher:
    """Each window's outputs already hold earlier values where it does not track a point (the
    memory carries them), so overwriting whole windows equals writing only the valid frames."""
    return OverwriteStitcher({"tracks": 2, "visibility": 2, "track_depth": 2})


def visualize(outputs: dict, batch: dict, index: int = 0, trail: int = 8) -> dict[str, Any]:
    """Tracks drawn on the frames of video `index`: {"tracks": list of T (H, W, 3) uint8 frames}.

    Visible points (logit > 0) are filled discs with a trail over the last `trail` frames; hidden
    points are hollow circles; frames before a query's time are not drawn.
    """
    video = batch["video"][index].detach().float().clamp(0, 1)
    frames = (rearrange(video, "c t h w -> t h w c") * 255).round().to(torch.uint8).cpu().numpy()
    tracks = outputs["tracks"][index].detach().float().cpu().clone()
    visible = (outputs["visibility"][index].detach() > 0).cpu()
    queries = outputs.get("queries", batch.get("queries"))
    if queries is not None:
        t = tracks.shape[1]
        before = torch.arange(t)[None] < queries[index, :, 0:1].detach().float().cpu() - QUERY_TIME_EPS
        tracks[before] = float("nan")
    drawn = draw_tracks(frames, tracks.numpy(), visible.numpy(), trail=trail)
    return {"tracks": [np.ascontiguousarray(f) for f in drawn]}


def tracking_baseline(batch: dict) -> dict[str, torch.Tensor]:
    """Trivial baseline: every point stays at its query position, always visible.

    tracks (B, N, T, 2) = query (x, y); visibility (B, N, T) logit +10; track_depth (B, N, T) = the
    GT track depth at the query frame (1 where unavailable).
    """
    queries = batch["queries"].float()
    b, n, _ = queries.shape
    t = batch["video"].shape[2]
    tracks = queries[:, :, None, 1:].expand(b, n, t, 2).clone()
    frame = queries[:, :, 0].round().long().clamp(0, t - 1)
    depth = batch.get("track_depth")
    start = depth.gather(2, frame[..., None]).float() if depth is not None else queries.new_ones(b, n, 1)
    return {
        "tracks": tracks,
        "visibility": queries.new_full((b, n, t), 10.0),
        "track_depth": start.expand(b, n, t).clone(),
    }


def chained_matching_baseline(batch: dict, matches) -> dict[str, torch.Tensor]:
    """The shared matching alone: each query chained through its flow (`chain_tracks`, no round-trip
    test), always visible, depth as in `tracking_baseline`. What the head must beat with matching on."""
    from l4p_framework.blocks.matching import chain_tracks

    out = tracking_baseline(batch)
    queries = batch["queries"].float()
    t = batch["video"].shape[2]
    frame = queries[..., 0].round().long().clamp(0, t - 1)
    out["tracks"], _ = chain_tracks(matches.forward, matches.backward, queries[..., 1:], frame)
    return out


def tracking_spec() -> HeadSpec:
    """The `tracking` HeadSpec (2D tracks, visibility and track depth from the final tokens)."""
    return HeadSpec(
        name=NAME,
        version="0.1.0",
        config_model=TrackingConfig,
        layers=_layers,
        build=_build,
        loss=tracking_loss,
        metrics=tracking_metrics,
        uses_matching=lambda config: config.matching == "shared",
        matching_baseline=chained_matching_baseline,
        metric_protocols={
            "aj": "tap-vid, query first, 256x256",
            "delta_avg": "tap-vid, query first, 256x256",
            "oa": "tap-vid, query first",
            "aj3d": "tapvid3d, 256px, median scale",
            "apd3d": "tapvid3d, 256px, median scale",
            "oa3d": "tapvid3d, every frame",
        },
        targets=("queries", "tracks", "visibility", "track_depth"),
        outputs=OUTPUTS,
        baseline=tracking_baseline,
        stitcher=_stitcher,
        visualize=visualize,
        inputs=("queries",),
        official_key_map=official_key_map,
        description=(
            "Point tracking (L4P's SAM-style sparse head): 2D tracks, visibility and track depth for "
            "query points (t, x, y), carried across windows by a memory; 3D tracks via lifting."
        ),
    )


@hookimpl
def l4p_heads() -> list[HeadSpec]:
    return [tracking_spec()]
