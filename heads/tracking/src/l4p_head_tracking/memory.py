"""Windowed memory of the tracking head (l4p-model.md §3.6), for any stride and any batch size.

Between two windows the head carries, for every (video, query):

- the **anchor** (t, x, y) in global frames / pixels: the user's query until it is re-anchored at the
  most visible frame of an overlap (strictly later than the current anchor, detached);
- whether the anchor is still the user's query (point label 1) or a re-anchored one (label 2);
- the **track-feature token** `prompt_feature_linear_layer(io_tokens[:, 5])` of the last window in
  which the point was valid (feature label 1), zeros / label 0 before that;
- per query chunk, the **history**: `processed_video_features_proj` of the processed video tokens of
  the token slices that the next window shares. Only those slices are stored, (B, n, k*h*w, C) with
  k = overlap // tubelet; in the next window they move to slots 0..k-1 and the other slots hold
  `processed_video_mask_token` (the official code hard-codes k = t/2; here k follows the stride);
- the previous window's outputs (B, N, window frames), so that frames a window does not write
  (before a point's anchor) keep their earlier values. Memory is bounded by one window plus the
  history, never by the video length.

A frame f (global index) is *valid* for a point when f >= anchor t (the official
`f + 0.5 - (t + 0.5) >= 0` for queries at frame centres); a window writes a point's outputs only at
its valid frames. Outputs start at 0 for positions and depth and at -10 for the visibility logit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import repeat
from torch import nn

VISIBILITY_FILL = -10.0
"""Visibility logit of frames a point has not been tracked to (before its query frame), as L4P."""

QUERY_TIME_EPS = 1e-4
"""Tolerance on query times: frame f is valid for a query at t when f >= t - QUERY_TIME_EPS."""

OUTPUT_FILL = {"tracks": 0.0, "visibility": VISIBILITY_FILL, "track_depth": 0.0}


def valid_frames(query_t: torch.Tensor, start: int, size: int) -> torch.Tensor:
    """Which frames of a window each point is tracked at.

    query_t: (B, N) anchor times in global frame units; start: first frame of the window; size: its
    length in frames. Returns (B, N, size) bool: global frame start + i >= t.
    """
    frames = start + torch.arange(size, device=query_t.device, dtype=query_t.dtype)
    return frames >= query_t[..., None] - QUERY_TIME_EPS


def point_labels(valid_point: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Point-prompt labels in the official order (§3.6).

    0 if the point has no valid frame in the window, 1 if it has; then 1 wherever the anchor is still
    the user's query; then 2 where the point is valid and re-anchored (label 2 gets no learned label
    embedding with the official `num_point_embeddings=2`). valid_point, original: (B, N) bool.
    Returns (B, N) long.
    """
    labels = valid_point.long()
    labels = torch.where(original, torch.ones_like(labels), labels)
    return torch.where(valid_point & ~original, torch.full_like(labels, 2), labels)


def empty_outputs(b: int, n: int, size: int, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Window outputs before anything is written: tracks (B, N, size, 2) zeros, visibility (B, N, size)
    -10, track_depth (B, N, size) zeros; float32."""
    return {
        "tracks": torch.zeros(b, n, size, 2, device=device),
        "visibility": torch.full((b, n, size), VISIBILITY_FILL, device=device),
        "track_depth": torch.zeros(b, n, size, device=device),
    }


def carry_outputs(
    previous: dict[str, torch.Tensor], previous_start: int, start: int, size: int
) -> dict[str, torch.Tensor]:
    """The new window's outputs before decoding: the previous window's values on the shared frames,
    the initial fill on the others.

    previous: window outputs of the window that started at `previous_start` (time dim 2, `size`
    frames). Returns the same keys for frames [start, start + size).
    """
    shift = start - previous_start
    overlap = max(0, size - shift)
    any_value = next(iter(previous.values()))
    fill = empty_outputs(any_value.shape[0], any_value.shape[1], size, any_value.device)
    if overlap == 0:
        return fill
    return {key: torch.cat([previous[key][:, :, shift:], fill[key][:, :, overlap:]], dim=2) for key in fill}


def reanchor(
    queries: torch.Tensor,
    original: torch.Tensor,
    previous: dict[str, torch.Tensor],
    previous_start: int,
    start: int,
    overlap: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each anchor to the most visible frame of the overlap when that frame is strictly later.

    queries: (B, N, 3) anchors (t, x, y) in global frames / pixels; original: (B, N) bool;
    previous: the previous window's outputs (window that started at `previous_start`); the overlap
    is global frames [start, start + overlap). For each point the overlap frame with the highest
    visibility logit (the first one on ties) gives the candidate (frame, x, y at that frame); it
    replaces the anchor only if frame > t. Returns (queries, original), detached.
    """
    if overlap <= 0 or queries.shape[1] == 0:
        return queries.detach(), original
    shift = start - previous_start
    vis = previous["visibility"][:, :, shift : shift + overlap].detach()
    xy = previous["tracks"][:, :, shift : shift + overlap].detach()
    best = vis.argmax(dim=-1)  # (B, N), first maximum
    best_xy = xy.gather(2, repeat(best, "b n -> b n 1 c", c=2)).squeeze(2)
    cand_t = (start + best).to(queries.dtype)
    later = cand_t > queries[..., 0] + QUERY_TIME_EPS
    candidate = torch.cat([cand_t[..., None], best_xy.to(queries.dtype)], dim=-1)
    return torch.where(later[..., None], candidate, queries).detach(), original & ~later


def kept_slices(overlap_frames: int, tubelet: int, slices: int) -> int:
    """Token time slices the next window shares: overlap // tubelet, clipped to [0, slices].

    When the overlap is not a multiple of the tubelet (only an end-aligned last window can do
    that) the slices that lie fully inside the overlap are kept, so the memory is shifted by up to
    half a tubelet less than the frames.
    """
    return max(0, min(slices, overlap_frames // tubelet))


def store_history(
    proj: nn.Module, video_tokens: torch.Tensor, grid: tuple[int, int, int], keep: int
) -> torch.Tensor | None:
    """Projected processed video tokens of the last `keep` token slices (what the next window reuses).

    video_tokens: (B, n, L, C) processed video tokens, L = t*h*w in (t, h, w) order; proj: the
    decoder's `processed_video_features_proj`. Returns (B, n, keep*h*w, C), or None if keep == 0.
    """
    t, h, w = grid
    if keep <= 0:
        return None
    return proj(video_tokens[..., (t - keep) * h * w :, :])


def expand_history(
    stored: torch.Tensor | None, mask_token: torch.Tensor, grid: tuple[int, int, int], keep: int
) -> torch.Tensor | None:
    """The history tokens of a window from the stored ones: the last `keep` stored slices in slots
    0..keep-1, `processed_video_mask_token` in the others.

    stored: (B, n, k*h*w, C) with k >= keep, or None; mask_token: (1, C). Returns (B, n, L, C), or
    None (= every slot the mask token, `TrackingDecoder.decode_window`'s default) when nothing is kept.
    Equals `TrackingDecoder.next_history(video_tokens, keep)` for the tokens `stored` came from.
    """
    t, h, w = grid
    if stored is None or keep <= 0:
        return None
    hw = h * w
    kept = stored[..., stored.shape[-2] - keep * hw :, :]
    fill = mask_token.to(kept.dtype).expand(*kept.shape[:-2], (t - keep) * hw, kept.shape[-1])
    return torch.cat([kept, fill], dim=-2)


@dataclass
class TrackMemory:
    """What the tracking head carries from one window to the next (one video batch).

    user_queries: (B, N, 3) the queries as given (t, x, y) in global frames / pixels.
    queries: (B, N, 3) current anchors; original: (B, N) bool, anchor is still the user's query.
    features: (B, N, C) carried track features (None: all new); feature_labels: (B, N) long.
    history: per query chunk, (B, n, k*h*w, C) stored history tokens or None.
    outputs: the previous window's outputs (B, N, window frames[, 2]); start: its first frame.
    chunk: queries per decoder call (fixed for the whole video).
    """

    user_queries: torch.Tensor
    queries: torch.Tensor
    original: torch.Tensor
    feature_labels: torch.Tensor
    chunk: int
    features: torch.Tensor | None = None
    history: list[torch.Tensor | None] = field(default_factory=list)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    start: int = 0

    @classmethod
    def begin(cls, queries: torch.Tensor, chunk: int) -> TrackMemory:
        """Fresh memory for `queries` (B, N, 3): every point new, anchored at its query."""
        b, n = queries.shape[:2]
        num_chunks = -(-n // chunk) if n else 0
        return cls(
            user_queries=queries,
            queries=queries.detach(),
            original=torch.ones(b, n, dtype=torch.bool, device=queries.device),
            feature_labels=torch.zeros(b, n, dtype=torch.long, device=queries.device),
            chunk=chunk,
            history=[None] * num_chunks,
        )

    def chunks(self) -> list[slice]:
        """Query index ranges of the decoder calls."""
        n = self.queries.shape[1]
        return [slice(i, min(n, i + self.chunk)) for i in range(0, n, self.chunk)]

    def history_bytes(self) -> int:
        """Bytes held by the stored history tokens (N x k*h*w x C per video)."""
        return sum(h.numel() * h.element_size() for h in self.history if h is not None)
