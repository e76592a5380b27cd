"""Forward + backward tracking of queries anywhere in a video (L4P tracks forward only, §3.6).

L4P's memory runs forward in time, so a query at frame t > 0 is only tracked at frames >= t.
`track_bidirectional` runs the composed model twice, on the video and on its time reversal (with
query times t -> T - 1 - t and per-frame intrinsics reversed), and merges: frames before a query's
time come from the backward pass, the query frame and later ones from the forward pass. Only
queries with t > 0 take part in the backward pass; if there are none it is skipped. The encoder
runs once per window and direction.
"""

from __future__ import annotations

import torch

from l4p_framework.compose import L4P
from l4p_framework.errors import InputError, PluginError

from .memory import QUERY_TIME_EPS

TIME_INDEXED = ("tracks", "visibility", "track_depth")


def track_bidirectional(
    model: L4P,
    video: torch.Tensor,
    queries: torch.Tensor,
    head_name: str = "tracking",
    intrinsics: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Track queries in both directions with the composed tracking head `head_name`.

    video: (B, 3, T, H, W) float in [0, 1]; queries: (B, N, 3) (t, x, y), t a frame index in
    [0, T - 1], x, y pixels (+0.5 convention); intrinsics: optional (B, 3, 3) or (B, T, 3, 3).
    Returns the head's outputs for the whole video: tracks (B, N, T, 2) pixels, visibility
    (B, N, T) logits, track_depth (B, N, T) (each direction's depth has its own, unaligned scale),
    queries (B, N, 3). Every frame of every query is filled.
    """
    if head_name not in model.heads:
        raise PluginError(f"no head {head_name!r} composed; composed heads: {list(model.heads)}")
    if not isinstance(queries, torch.Tensor) or queries.ndim != 3 or queries.shape[-1] != 3:
        shape = tuple(queries.shape) if isinstance(queries, torch.Tensor) else type(queries).__name__
        raise InputError(f"queries must be (B, N, 3) as (t, x, y), got {shape}")
    forward = model(video, queries=queries, intrinsics=intrinsics, heads=[head_name])[head_name]
    t = video.shape[2]
    needs = (queries[..., 0] > QUERY_TIME_EPS).any(0)  # (N,) queries with frames before them
    if not bool(needs.any()):
        return forward
    idx = needs.nonzero()[:, 0]
    sub = queries[:, idx].clone()
    sub[..., 0] = (t - 1) - sub[..., 0]
    rev_k = intrinsics.flip(1) if intrinsics is not None and intrinsics.ndim == 4 else intrinsics
    backward = model(video.flip(2), queries=sub, intrinsics=rev_k, heads=[head_name])[head_name]

    frames = torch.arange(t, device=queries.device, dtype=queries.dtype)
    before = frames < queries[:, idx, 0:1] - QUERY_TIME_EPS  # (B, n, T): frames before the query
    merged = dict(forward)
    for key in TIME_INDEXED:
        fwd = forward[key][:, idx]
        bwd = backward[key].flip(2).to(fwd.dtype)
        mask = before.to(fwd.device)
        if fwd.ndim == 4:
            mask = mask[..., None]
        merged[key] = forward[key].clone()
        merged[key][:, idx] = torch.where(mask, bwd, fwd)
    return merged
