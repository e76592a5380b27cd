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

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

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


class HistoryStore:
    """The stored history tokens of every query chunk: in RAM up to `ram_bytes`, then in files.

    Slot i holds chunk i's (B, n, k*h*w, C) tokens or None. A tensor that needs gradients (training
    through the memory) always stays in RAM; others go to a temporary folder (removed with the
    store) once the RAM budget is used. Reading a slot returns the tensor exactly as stored.
    """

    def __init__(self, num_chunks: int, ram_bytes: int):
        self.ram_bytes = ram_bytes
        self._slots: list[torch.Tensor | Path | None] = [None] * num_chunks
        self._folder: tempfile.TemporaryDirectory | None = None

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, i: int) -> torch.Tensor | None:
        slot = self._slots[i]
        if isinstance(slot, Path):
            return torch.load(slot, weights_only=True)  # our own file, written by __setitem__
        return slot

    def __setitem__(self, i: int, tokens: torch.Tensor | None) -> None:
        self._slots[i] = None
        if tokens is None:
            return
        size = tokens.numel() * tokens.element_size()
        if tokens.requires_grad or self.bytes_in_ram() + size <= self.ram_bytes:
            self._slots[i] = tokens
            return
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="l4p-track-history-")
        path = Path(self._folder.name) / f"chunk{i}.pt"
        torch.save(tokens.contiguous(), path)
        self._slots[i] = path

    def bytes_in_ram(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._slots if isinstance(t, torch.Tensor))

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self._slots if isinstance(p, Path))

    def clear(self) -> None:
        """Forget every slot and remove the files."""
        self._slots = [None] * len(self._slots)
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


@dataclass
class TrackMemory:
    """What the tracking head carries from one window to the next (one video batch).

    user_queries: (B, N, 3) the queries as given (t, x, y) in global frames / pixels.
    queries: (B, N, 3) current anchors; original: (B, N) bool, anchor is still the user's query.
    features: (B, N, C) carried track features (None: all new); feature_labels: (B, N) long.
    history: per query chunk, (B, n, k*h*w, C) stored history tokens or None (`HistoryStore`).
    outputs: the previous window's outputs (B, N, window frames[, 2]); start: its first frame.
    chunk: queries per decoder call (fixed for the whole video).
    """

    user_queries: torch.Tensor
    queries: torch.Tensor
    original: torch.Tensor
    feature_labels: torch.Tensor
    chunk: int
    features: torch.Tensor | None = None
    history: HistoryStore = field(default_factory=lambda: HistoryStore(0, 0))
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    start: int = 0

    @classmethod
    def begin(cls, queries: torch.Tensor, chunk: int, history_ram_bytes: int) -> TrackMemory:
        """Fresh memory for `queries` (B, N, 3): every point new, anchored at its query; the stored
        history keeps up to history_ram_bytes in RAM and the rest in temporary files."""
        b, n = queries.shape[:2]
        num_chunks = -(-n // chunk) if n else 0
        return cls(
            user_queries=queries,
            queries=queries.detach(),
            original=torch.ones(b, n, dtype=torch.bool, device=queries.device),
            feature_labels=torch.zeros(b, n, dtype=torch.long, device=queries.device),
            chunk=chunk,
            history=HistoryStore(num_chunks, history_ram_bytes),
        )

    def chunks(self) -> list[slice]:
        """Query index ranges of the decoder calls."""
        n = self.queries.shape[1]
        return [slice(i, min(n, i + self.chunk)) for i in range(0, n, self.chunk)]

    def history_bytes(self) -> int:
        """Bytes of the stored history tokens (N x k*h*w x C per video), in RAM and in files."""
        return self.history.bytes_in_ram() + self.history.bytes_on_disk()
