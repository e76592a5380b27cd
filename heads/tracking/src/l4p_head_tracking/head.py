"""The tracking head module: L4P's SAM-style sparse decoder on the encoder's final tokens (§3).

Per query point the decoder sees 3 output tokens (heatmap, visibility, depth), the point prompt plus
SAM's padding point, and a carried track-feature token; it cross-attends to its own copy of the
window's video tokens (plus its history, §3.6) and predicts, per frame of the window:

- the 2D position: soft-argmax of the heatmap (token 0) over pixel centres (col + 0.5, row + 0.5);
- the visibility logit: spatial mean of the token-1 map;
- the depth: exp(spatial mean of the token-2 map) (not aligned across windows; see
  `lifting.align_track_depth_to_dense`).

Heatmap resolution (`TrackingConfig.heatmap_resolution`):

- "input" (default, as the official code): the maps (T', H', W') are trilinearly upsampled
  (align_corners=False) to the window's (T, H, W) and the soft-argmax runs on the full-size
  heatmap. The spatial means of the visibility and depth maps are computed *exactly* without
  materialising their upsampled maps: linear upsampling is separable and linear, so the mean of the
  upsampled map is a fixed per-row / per-column weighting of the small map.
- "map" (cheaper): soft-argmax on the decoder's map and the coordinates rescaled by (W/W', H/H').
  With align_corners=False, map pixel k's centre (k + 0.5) lands exactly on image coordinate
  (k + 0.5) * W/W', so the rescaling is exact for the *expected position of the map's softmax*; it
  differs from "input" only because a softmax over an upsampled map is not the upsampled softmax.
  Means are taken on the map.

Queries (B, N, 3) are (t, x, y): t a frame index of the video (0 = first frame; fractional values
allowed), x, y pixels with pixel centres at +0.5. The decoder is prompted with (t - window start +
0.5, x, y), the official frame-centre convention. Outputs (architecture.md §6): tracks (B, N, T, 2)
pixels, visibility (B, N, T) logits (-10 before a query's frame), track_depth (B, N, T) (0 before a
query's frame), plus queries (B, N, 3), the queries used (the given ones or the default grid).

An empty query set (N = 0) gives empty outputs: (B, 0, T, 2), (B, 0, T), (B, 0, T), (B, 0, 3).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import BaseModel, ConfigDict, Field

from l4p_framework.blocks import TrackingDecoder, TrackingWindowOutput, soft_argmax_2d, spatial_mean
from l4p_framework.blocks.matching import chain_tracks
from l4p_framework.errors import ConfigError, IncompatibleHeadError, InputError
from l4p_framework.features import TokenFeatures
from l4p_framework.matching import MatchFeatures, shared_matching
from l4p_framework.specs import EncoderInfo
from l4p_framework.windows import Window

from .memory import (
    TrackMemory,
    carry_outputs,
    empty_outputs,
    expand_history,
    kept_slices,
    point_labels,
    reanchor,
    store_history,
    valid_frames,
)

LOG_DEPTH_LIMIT = 40.0
"""The log-depth (spatial mean of the depth map) is clamped to [-40, 40] before exp, so the depth
stays finite in float32 (the official code has no clamp; it only matters for diverged weights)."""


class TrackingConfig(BaseModel):
    """Configuration of the tracking head.

    preset: "small" = decoder width = encoder width, heads = the encoder's heads, mlp_dim = 2 x width
    (sized for small encoders); "official" = 8 heads, mlp_dim 2048 (§3.4; with the `l4p-vitg14`
    encoder this is the released head, width 1408). `heads` / `mlp_dim` override the preset.
    max_queries: (video, query) pairs per decoder call; memory ~ max_queries x L x C.
    history_ram_mb: MiB of the windowed memory's history tokens (which grow with the number of
    queries) kept in RAM; the rest goes to temporary files (`HistoryStore`).
    heatmap_resolution: "input" (official) or "map" (cheaper), see the module docstring.
    default_grid: with no queries in the batch, track a default_grid x default_grid grid of points
    on frame 0 (0: queries are required).
    detach_memory: cut gradients through the carried track feature and history tokens.
    anchor_to_query: decode each track relative to the query: the heatmap position at the query's
    frame is moved onto the query point and every frame is shifted by the same offset, so a track
    passes exactly through its query and the frame-independent part of the heatmap's localisation
    error cancels (False: the official absolute soft-argmax read-out).
    matching: "none" (official): positions from the heatmaps; "shared": positions by chaining the
    composed model's shared frame matching (`batch["matches"]`, flow at the input resolution) from
    each (re-anchored) query, forwards and backwards, with bilinear sub-pixel sampling
    (`l4p_framework.blocks.matching.chain_tracks`); visibility is the decoder's, except where the
    chain fails the matching's forward-backward round trip or leaves the image: there the logit is
    at most -occlusion_logit (occluded). Depth still comes from the decoder, and the memory carries
    the chained positions to the next window.
    Loss: position (Huber with `huber_delta` or L1, in pixels of a 256 x 256 frame), visibility
    (BCE on logits), depth (scale-invariant log loss); each with its weight.
    """

    model_config = ConfigDict(extra="forbid")

    preset: Literal["small", "official"] = "small"
    heads: int | None = Field(None, ge=1)
    mlp_dim: int | None = Field(None, ge=1)
    depth: int = Field(2, ge=1, description="two-way attention layers")
    downsample_rate: int = Field(2, ge=1, description="cross-attention width divisor")
    out_dim_factor: int = Field(8, ge=1, description="upscaled map width = width // out_dim_factor")
    max_queries: int = Field(64, ge=1)
    history_ram_mb: float = Field(512.0, ge=0)
    softargmax_temperature: float = Field(1.0, gt=0)
    heatmap_resolution: Literal["input", "map"] = "input"
    default_grid: int = Field(16, ge=0)
    detach_memory: bool = False
    anchor_to_query: bool = False
    matching: Literal["none", "shared"] = "none"
    occlusion_logit: float = Field(4.0, ge=0)
    position_loss: Literal["huber", "l1"] = "huber"
    huber_delta: float = Field(1.0, gt=0)
    position_weight: float = Field(0.05, ge=0)
    visibility_weight: float = Field(1.0, ge=0)
    depth_weight: float = Field(1.0, ge=0)


def decoder_sizes(info: EncoderInfo, config: TrackingConfig) -> dict[str, int]:
    """heads and mlp_dim of the decoder for this encoder and config."""
    if config.preset == "official":
        heads, mlp = 8, 2048
    else:
        heads, mlp = info.num_heads, 2 * info.width
    heads = config.heads or heads
    mlp = config.mlp_dim or mlp
    inner = info.width // config.downsample_rate
    if info.width % heads or inner % heads:
        raise ConfigError(
            f"tracking head: {heads} attention heads must divide the width {info.width} and the "
            f"cross-attention width {inner} (= {info.width} // downsample_rate {config.downsample_rate}); "
            "set `heads` to a divisor of both"
        )
    return {"heads": heads, "mlp_dim": mlp}


def grid_queries(
    batch_size: int, image_size: tuple[int, int], side: int, frame: float = 0.0, device=None
) -> torch.Tensor:
    """A side x side grid of queries at pixel-cell centres on `frame`: (B, side*side, 3) as (t, x, y).

    x = (i + 0.5) * W / side, y = (j + 0.5) * H / side (row-major: y slowest).
    """
    h, w = image_size
    c = torch.arange(side, dtype=torch.float32, device=device) + 0.5
    ys, xs = torch.meshgrid(c * h / side, c * w / side, indexing="ij")
    pts = torch.stack([torch.full_like(xs, float(frame)), xs, ys], dim=-1)
    return rearrange(pts, "j i c -> (j i) c").expand(batch_size, -1, -1).clone()


def check_queries(
    queries: Any,
    batch_size: int,
    num_frames: int | None,
    image_size: tuple[int, int],
    query_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Validate user queries and return them as float32 (B, N, 3) (t, x, y).

    t must be a frame index in [0, num_frames - 1] (t >= 0 when the length is unknown, e.g. a
    stream), x in [0, W] and y in [0, H] pixels, all finite. Padded queries (query_valid False) are
    not checked and are replaced by (0, 0, 0).
    Raises InputError naming the first bad query.
    """
    if not isinstance(queries, torch.Tensor):
        raise InputError(
            f"queries must be a torch.Tensor (B, N, 3) as (t, x, y), got {type(queries).__name__}"
        )
    if queries.ndim != 3 or queries.shape[-1] != 3 or queries.shape[0] != batch_size:
        raise InputError(
            f"queries must be (B={batch_size}, N, 3) as (t, x, y) in frames and pixels, "
            f"got shape {tuple(queries.shape)}"
        )
    q = queries.float()
    real = torch.ones(q.shape[:2], dtype=torch.bool, device=q.device)
    if query_valid is not None:
        real = query_valid.to(q.device).bool().reshape(q.shape[:2])
        q = torch.where(real[..., None], q, torch.zeros_like(q))
    h, w = image_size

    def first_bad(bad: torch.Tensor, what: str) -> None:
        bad = bad & real
        if bool(bad.any()):
            bi, ni = (int(i) for i in bad.nonzero()[0])
            t, x, y = (float(v) for v in queries[bi, ni])
            raise InputError(
                f"query {ni} of video {bi} is (t={t:g}, x={x:g}, y={y:g}): {what}; "
                f"{int(bad.sum())} such queries in total"
            )

    first_bad(~torch.isfinite(q).all(-1), "queries contain NaN or infinite values")
    if num_frames is None:
        first_bad(q[..., 0] < 0, "query times must be frame indices >= 0 (t is before the video)")
    else:
        first_bad(
            (q[..., 0] < 0) | (q[..., 0] > num_frames - 1),
            f"query times must be frame indices in [0, {num_frames - 1}] (the video has {num_frames} "
            "frames, t is outside the video's time range)",
        )
    first_bad(
        (q[..., 1] < 0) | (q[..., 1] > w) | (q[..., 2] < 0) | (q[..., 2] > h),
        f"query points must lie inside the frame, x in [0, {w}] and y in [0, {h}] pixels "
        "(pixel centres at +0.5)",
    )
    return q


def _mean_weights(n_in: int, n_out: int, device, dtype=torch.float32) -> torch.Tensor:
    """w (n_in,) with mean(linear_upsample(x, n_out)) = w @ x (align_corners=False), exactly."""
    basis = torch.eye(n_in, device=device, dtype=dtype)[:, None, :]
    return F.interpolate(basis, size=n_out, mode="linear", align_corners=False)[:, 0].mean(-1)


def upsampled_spatial_mean(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Spatial mean of maps (..., H', W') bilinearly upsampled (align_corners=False) to size (H, W),
    without upsampling: (..., H', W') -> (...), float32 or wider."""
    hm, wm = maps.shape[-2:]
    x = maps if maps.dtype in (torch.float32, torch.float64) else maps.float()
    wh = _mean_weights(hm, size[0], x.device, x.dtype)
    ww = _mean_weights(wm, size[1], x.device, x.dtype)
    return torch.einsum("...hw,h,w->...", x, wh, ww)


def anchor_tracks(tracks: torch.Tensor, queries: torch.Tensor, start: int) -> torch.Tensor:
    """Shift each track so that it passes through its query point at the query's frame.

    tracks: (B, n, T, 2) pixels for the window starting at global frame `start`; queries: (B, n, 3)
    (t, x, y) in global frames / pixels. The query frame is round(t) (half to even) - start,
    clamped to the window (queries outside it give unused outputs). Returns (B, n, T, 2).
    """
    frame = (torch.round(queries[..., 0]) - start).long().clamp(0, tracks.shape[2] - 1)
    at_query = torch.gather(tracks, 2, frame[:, :, None, None].expand(-1, -1, 1, 2))
    return tracks + (queries[..., None, 1:].to(tracks.dtype) - at_query)


def _resample_time(x: torch.Tensor, frames: int, time_dim: int = 2) -> torch.Tensor:
    """Linear (align_corners=False) resampling of dim `time_dim` to `frames` (no-op if equal)."""
    if x.shape[time_dim] == frames:
        return x
    moved = x.movedim(time_dim, -1)
    flat = moved.reshape(-1, 1, moved.shape[-1])
    out = F.interpolate(flat, size=frames, mode="linear", align_corners=False)
    return out.reshape(*moved.shape[:-1], frames).movedim(-1, time_dim)


class TrackingHead(TrackingDecoder):
    """The tracking head: a `TrackingDecoder` (state dict = the official `track_2d` head's) plus
    query handling, read-out, chunking and the windowed memory.

    forward(features, batch) -> one window (or a clip of exactly one window); forward_window(features,
    batch, memory) -> (outputs of this window, memory) for `L4P.forward`'s windowed driver.
    batch keys read: queries (B, N, 3) (t, x, y) global frames / pixels (optional: default grid),
    query_valid (B, N) (optional), window / next_window (`Window`, optional), num_frames (optional).
    """

    def __init__(self, info: EncoderInfo, config: TrackingConfig) -> None:
        sizes = decoder_sizes(info, config)
        super().__init__(
            dim=info.width,
            token_grid=info.token_grid,
            patch=(info.tubelet, info.patch_size, info.patch_size),
            depth=config.depth,
            heads=sizes["heads"],
            mlp_dim=sizes["mlp_dim"],
            downsample_rate=config.downsample_rate,
            out_dim_factor=config.out_dim_factor,
        )
        self.config = config
        self.tubelet = info.tubelet

    # -- helpers ------------------------------------------------------------------------------
    def _tokens(self, features: TokenFeatures) -> torch.Tensor:
        """Final normalised encoder tokens (B, L, C) of the window, checked against the decoder."""
        if tuple(features.grid_size) != self.token_grid:
            raise IncompatibleHeadError(
                f"tracking head was built for token grid {self.token_grid}, the encoder gives "
                f"{tuple(features.grid_size)}; build the head for this encoder"
            )
        return features["final"]

    def chunk_size(self, batch_size: int) -> int:
        """Queries per decoder call so that each call holds at most max_queries (video, query) pairs."""
        return max(1, self.config.max_queries // max(1, batch_size))

    def prepare_queries(self, batch: dict, batch_size: int, num_frames: int | None, device) -> torch.Tensor:
        """Validated (B, N, 3) float32 queries from the batch, or the default grid on frame 0."""
        _, h, w = self.input_size
        queries = batch.get("queries")
        if queries is None:
            if self.config.default_grid <= 0:
                raise InputError(
                    "the tracking head needs query points: pass queries (B, N, 3) as (t, x, y) "
                    "(or set default_grid > 0 in its config)"
                )
            return grid_queries(batch_size, (h, w), self.config.default_grid, device=device)
        q = check_queries(queries, batch_size, num_frames, (h, w), batch.get("query_valid"))
        return q.to(device)

    def read_out(self, out: TrackingWindowOutput, positions: bool = True) -> dict[str, torch.Tensor]:
        """Decoder maps -> per-frame tracks (B, n, T, 2) px, visibility (B, n, T) logits and
        track_depth (B, n, T), float32, T = the window's frames. positions=False skips the heatmap
        read-out (no "tracks" key: frame matching supplies them)."""
        frames, h, w = self.input_size
        b, n, tm, hm, wm = out.heatmap.shape
        temp = self.config.softargmax_temperature
        read = {}
        if self.config.heatmap_resolution == "input":
            if positions:
                heat = rearrange(out.heatmap.float(), "b n t h w -> (b n) 1 t h w")
                heat = F.interpolate(heat, size=(frames, h, w), mode="trilinear", align_corners=False)
                read["tracks"] = rearrange(soft_argmax_2d(heat, temp), "(b n) 1 t c -> b n t c", b=b).float()
            vis = upsampled_spatial_mean(out.visibility, (h, w))
            log_depth = upsampled_spatial_mean(out.depth, (h, w))
        else:
            if positions:
                xy = soft_argmax_2d(out.heatmap, temp)
                read["tracks"] = _resample_time(xy * xy.new_tensor((w / wm, h / hm)), frames).float()
            vis, log_depth = spatial_mean(out.visibility.float()), spatial_mean(out.depth.float())
        vis = _resample_time(vis, frames)
        log_depth = _resample_time(log_depth, frames)
        depth = torch.exp(log_depth.clamp(-LOG_DEPTH_LIMIT, LOG_DEPTH_LIMIT))
        return {**read, "visibility": vis.float(), "track_depth": depth.float()}

    def _decode(
        self,
        tokens: torch.Tensor,
        queries: torch.Tensor,
        labels: torch.Tensor,
        start: int,
        features: torch.Tensor | None = None,
        feature_labels: torch.Tensor | None = None,
        history: torch.Tensor | None = None,
        matching: tuple[MatchFeatures, Any] | None = None,
    ) -> tuple[TrackingWindowOutput, dict[str, torch.Tensor]]:
        """Decode one chunk: queries (B, n, 3) global -> window frame centres, then read out.

        matching: the window's shared (matches, transform) with matching on: the tracks are then
        chained through the input-resolution flow from each query instead of read from the
        heatmaps, and returned in model-window pixels like the heatmap tracks.
        """
        t_window = queries[..., :1] - start + 0.5
        q = torch.cat([t_window, queries[..., 1:]], dim=-1).to(tokens.dtype)
        out = self.decode_window(tokens, q, labels, features, feature_labels, history)
        read = self.read_out(out, positions=matching is None)
        if matching is not None:
            matches, transform = matching
            frame = (torch.round(queries[..., 0]) - start).clamp(0, self.input_size[0] - 1)
            tracks, occluded = chain_tracks(
                matches.forward,
                matches.backward,
                transform.map_points_back(queries[..., 1:].float()),
                frame,
                matches.forward_occluded,
                matches.backward_occluded,
            )
            read["tracks"] = transform.map_points(tracks)
            hidden = read["visibility"].clamp_max(-self.config.occlusion_logit)
            read["visibility"] = torch.where(occluded, hidden, read["visibility"])
        elif self.config.anchor_to_query:
            read["tracks"] = anchor_tracks(read["tracks"], queries, start)
        return out, read

    def window_matching(self, batch: dict) -> tuple[MatchFeatures, Any] | None:
        """The window's shared (matches, transform) when matching is on, else None."""
        if self.config.matching == "none":
            return None
        matches, _, transform = shared_matching(batch, "tracking")
        return matches, transform

    @staticmethod
    def _merge(
        valid: torch.Tensor, new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """New values at valid frames (B, n, T), the old ones elsewhere."""
        return {
            "tracks": torch.where(valid[..., None], new["tracks"], old["tracks"]),
            "visibility": torch.where(valid, new["visibility"], old["visibility"]),
            "track_depth": torch.where(valid, new["track_depth"], old["track_depth"]),
        }

    @staticmethod
    def _cat(
        pieces: list[dict[str, torch.Tensor]], empty: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        if not pieces:
            return dict(empty)
        return {k: torch.cat([p[k] for p in pieces], dim=1) for k in pieces[0]}

    # -- single window --------------------------------------------------------------------------
    def forward(self, features: TokenFeatures, batch: dict) -> dict[str, torch.Tensor]:
        """Track the queries through one window (the clip the features came from).

        features: the window's token features (layer "final"); batch: queries (B, N, 3) (t, x, y)
        (global frames when batch["window"] is given, else frames of the clip), optional
        query_valid (B, N), window, num_frames. Returns tracks (B, N, T, 2) pixels, visibility
        (B, N, T) logits, track_depth (B, N, T), queries (B, N, 3); T = window frames. Frames
        before a query's time keep the fill values (0, -10, 0).
        """
        tokens = self._tokens(features)
        b = tokens.shape[0]
        size = self.input_size[0]
        window: Window | None = batch.get("window")
        start = window.start if window is not None else 0
        num_frames = int(batch.get("num_frames", start + size))
        queries = self.prepare_queries(batch, b, num_frames, tokens.device)
        n = queries.shape[1]
        chunk = self.chunk_size(b)
        fill = empty_outputs(b, n, size, tokens.device)
        matching = self.window_matching(batch)
        pieces = []
        for i in range(0, n, chunk):
            sl = slice(i, min(n, i + chunk))
            q = queries[:, sl]
            valid = valid_frames(q[..., 0], start, size)
            labels = point_labels(valid.any(-1), torch.ones_like(valid[..., 0]))
            _, new = self._decode(tokens, q, labels, start, matching=matching)
            pieces.append(self._merge(valid, new, {k: v[:, sl] for k, v in fill.items()}))
        return {**self._cat(pieces, fill), "queries": queries}

    # -- windowed ---------------------------------------------------------------------------------
    def forward_window(
        self, features: TokenFeatures, batch: dict, memory: TrackMemory | None
    ) -> tuple[dict[str, torch.Tensor], TrackMemory]:
        """One window of a long video with the memory mechanism (§3.6).

        features: the window's token features; batch: window (`Window`, default the only window),
        queries (B, N, 3) in global frames / pixels (read at window 0), query_valid, and when the
        length is known (`L4P.forward`) num_frames and next_window (`Window` or None for the last):
        then only the token slices the next window shares are stored. In a stream of unknown
        length every slice is stored (as much as the official code holds) and the next window
        takes the ones it shares; query times are then only checked to be >= 0.
        memory: None at window 0.

        Returns (outputs of frames [start, start + S), S = window frames: tracks (B, N, S, 2),
        visibility (B, N, S), track_depth (B, N, S), queries (B, N, 3) the user's queries; memory).
        A point's outputs are written only at frames at/after its anchor; other frames keep the
        previous window's values (overlap) or the fill (0, -10, 0). Any stride works: the
        history is shifted by the stride in token-time units.
        """
        tokens = self._tokens(features)
        b = tokens.shape[0]
        size = self.input_size[0]
        t_slices, h, w = self.token_grid
        window: Window = batch.get("window") or Window(0, 0, size, 0)
        if window.size != size:
            raise InputError(f"tracking head expects windows of {size} frames, got {window.size}")
        num_frames = batch.get("num_frames")

        if memory is None or window.index == 0:
            queries = self.prepare_queries(batch, b, num_frames, tokens.device)
            memory = TrackMemory.begin(queries, self.chunk_size(b), int(self.config.history_ram_mb * 2**20))
            carried = empty_outputs(b, queries.shape[1], size, tokens.device)
            keep_now = 0
        else:
            memory.queries, memory.original = reanchor(
                memory.queries, memory.original, memory.outputs, memory.start, window.start, window.overlap
            )
            carried = carry_outputs(memory.outputs, memory.start, window.start, size)
            keep_now = kept_slices(window.overlap, self.tubelet, t_slices)

        if "next_window" in batch:
            nxt: Window | None = batch["next_window"]
            last = nxt is None
            keep_next = 0 if nxt is None else kept_slices(nxt.overlap, self.tubelet, t_slices)
        else:  # unknown plan (a stream): keep every slice, the next window takes what it shares
            last = num_frames is not None and window.start + size >= max(int(num_frames), size)
            keep_next = t_slices

        matching = self.window_matching(batch)
        pieces, features_next, labels_next = [], [], []
        for i, sl in enumerate(memory.chunks()):
            q = memory.queries[:, sl]
            valid = valid_frames(q[..., 0], window.start, size)
            valid_point = valid.any(-1)
            labels = point_labels(valid_point, memory.original[:, sl])
            feats = None if memory.features is None else memory.features[:, sl]
            feat_labels = memory.feature_labels[:, sl]
            history = expand_history(
                memory.history[i], self.processed_video_mask_token.weight, self.token_grid, keep_now
            )
            out, new = self._decode(tokens, q, labels, window.start, feats, feat_labels, history, matching)
            pieces.append(self._merge(valid, new, {k: v[:, sl] for k, v in carried.items()}))
            if last:
                continue
            nf = self.next_prompt_features(out.io_tokens)
            old = feats if feats is not None else torch.zeros_like(nf)
            nf = torch.where(valid_point[..., None], nf, old.to(nf.dtype))
            stored = store_history(
                self.processed_video_features_proj, out.video_tokens, self.token_grid, keep_next
            )
            if self.config.detach_memory:
                nf = nf.detach()
                stored = None if stored is None else stored.detach()
            features_next.append(nf)
            labels_next.append(torch.where(valid_point, torch.ones_like(feat_labels), feat_labels))
            memory.history[i] = stored  # chunk i's old history was read above

        outputs = self._cat(pieces, carried)
        memory.outputs, memory.start = outputs, window.start
        if last:
            memory.history.clear()  # nothing follows: free the history
        elif features_next:
            memory.features = torch.cat(features_next, dim=1)
            memory.feature_labels = torch.cat(labels_next, dim=1)
        return {**outputs, "queries": memory.user_queries}, memory
