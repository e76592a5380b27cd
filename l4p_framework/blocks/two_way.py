"""SAM-style two-way transformer and mask decoder for video tokens (Kirillov et al. 2023; l4p-model.md §3.4),
plus the L4P tracking decoder that wraps them (§3.2-§3.6).

Module names follow the official checkpoint (`mask_decoder.transformer.layers.{i}.self_attn.q_proj`, ...)
so `TrackingDecoder`'s state dict equals the official `track_2d` head's after stripping its prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from ..errors import ConfigError, InputError
from .prompt import PromptEncoder3D

Triple = tuple[int, int, int]


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (bias) and an optional narrower inner width.

    inner width = dim // downsample_rate, split over `heads`; scores softmax(q k^T / sqrt(head_dim)).
    """

    def __init__(self, dim: int, heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        inner = dim // downsample_rate
        if inner % heads:
            raise ConfigError(
                f"Attention inner width {inner} (= {dim} // {downsample_rate}) must divide by {heads}"
            )
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: (B, Nq, dim), k and v: (B, Nk, dim) -> (B, Nq, dim)."""
        q, k, v = (
            rearrange(proj(x), "b n (h d) -> b h n d", h=self.heads)
            for proj, x in ((self.q_proj, q), (self.k_proj, k), (self.v_proj, v))
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(rearrange(out, "b h n d -> b n (h d)"))


class MLPBlock(nn.Module):
    """lin1 -> ReLU -> lin2."""

    def __init__(self, dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., dim) -> (..., dim)."""
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayAttentionBlock(nn.Module):
    """One two-way layer: token self-attn, token->video cross-attn, MLP, video->token cross-attn.

    Each step is followed by a residual and a LayerNorm (norm1..norm4). With `skip_first_layer_pe`
    (layer 0) the self-attention gets no positional encoding and replaces the tokens (no residual).
    """

    def __init__(
        self, dim: int, heads: int, mlp_dim: int, downsample_rate: int = 2, skip_first_layer_pe: bool = False
    ) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries: (B, K, dim) tokens; keys: (B, L, dim) video tokens; query_pe (B, K, dim);
        key_pe (B or 1, L, dim). Returns updated (queries, keys), same shapes."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        k = keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """`depth` two-way layers, then a final token->video attention (residual) and `norm_final_attn`."""

    def __init__(self, depth: int, dim: int, heads: int, mlp_dim: int, downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, heads, mlp_dim, downsample_rate, skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, video: torch.Tensor, video_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """video: (B, L, dim); video_pe: (B or 1, L, dim); tokens: (B, K, dim), also used as their own PE.

        Returns (tokens (B, K, dim), video (B, L, dim)).
        """
        queries, keys = tokens, video
        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe=tokens, key_pe=video_pe)
        q = queries + tokens
        k = keys + video_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys


class LayerNorm3d(nn.Module):
    """LayerNorm over the channel dim of (B, C, T, H, W), with affine weight/bias (C,)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, H, W) -> same shape."""
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None, None] * x + self.bias[:, None, None, None]


class HyperMLP(nn.Module):
    """Linear layers `layers.{0..n-1}` with ReLU between them (SAM's hypernetwork MLP)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, num_layers: int = 3) -> None:
        super().__init__()
        dims = [dim_in] + [hidden] * (num_layers - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., dim_in) -> (..., dim_out)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class VideoMaskDecoder(nn.Module):
    """SAM mask decoder on a video token grid: output tokens -> per-token 3D maps.

    Args:
        dim: token width (official 1408).
        num_outputs: number of output ("mask") tokens (official 3: xy heatmap, visibility, depth).
        depth, heads, mlp_dim, downsample_rate: the two-way transformer (official 2, 8, 2048, 2).
        out_dim_factor: upscaled width = dim // out_dim_factor; the middle width is
            min(2 * dim // out_dim_factor, dim) (official 8: 352 and 176 for dim 1408).
        upscale_factors: kernel = stride of the two ConvTranspose3d of `output_upscaling`
            (official (2, 2, 2) then (1, 2, 2): token grid (8, 16, 16) -> maps (16, 64, 64)).

    `iou_token` is unused (kept so the official checkpoint loads).
    """

    def __init__(
        self,
        dim: int,
        num_outputs: int = 3,
        depth: int = 2,
        heads: int = 8,
        mlp_dim: int = 2048,
        downsample_rate: int = 2,
        out_dim_factor: int = 8,
        upscale_factors: tuple[Triple, Triple] = ((2, 2, 2), (1, 2, 2)),
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_outputs = num_outputs
        self.upscale_factors = tuple(tuple(f) for f in upscale_factors)
        mid, up = min(2 * dim // out_dim_factor, dim), dim // out_dim_factor
        self.up_dim = up
        self.transformer = TwoWayTransformer(depth, dim, heads, mlp_dim, downsample_rate)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(num_outputs, dim)
        f0, f1 = self.upscale_factors
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose3d(dim, mid, kernel_size=f0, stride=f0),
            LayerNorm3d(mid),
            nn.GELU(),
            nn.ConvTranspose3d(mid, up, kernel_size=f1, stride=f1),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(HyperMLP(dim, dim, up, 3) for _ in range(num_outputs))

    def map_size(self, grid: Triple) -> Triple:
        """(T', H', W') of the maps for a token grid (t, h, w)."""
        f0, f1 = self.upscale_factors
        return tuple(n * a * b for n, a, b in zip(grid, f0, f1))  # type: ignore[return-value]

    def forward(
        self, video_tokens: torch.Tensor, video_pe: torch.Tensor, prompt_tokens: torch.Tensor, grid: Triple
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode per-query video tokens.

        video_tokens: (N, L, C), L = t*h*w in token order, one copy per query.
        video_pe: (1 or N, L, C) positional encoding of the video tokens.
        prompt_tokens: (N, P, C) sparse prompt tokens; the `num_outputs` mask tokens are prepended.
        grid: (t, h, w).
        Returns maps (N, num_outputs, T', H', W') (see `map_size`), io tokens (N, num_outputs + P, C)
        (transformer output, mask tokens first) and processed video tokens (N, L, C).
        """
        t, h, w = grid
        n, length, c = video_tokens.shape
        if (
            length != t * h * w
            or c != self.dim
            or prompt_tokens.shape[0] != n
            or prompt_tokens.shape[-1] != c
        ):
            raise InputError(
                f"VideoMaskDecoder: video tokens must be (N, {t * h * w}, {self.dim}) and prompt tokens "
                f"(N, P, {self.dim}); got {tuple(video_tokens.shape)} and {tuple(prompt_tokens.shape)}"
            )
        mask_tokens = repeat(self.mask_tokens.weight, "k c -> n k c", n=n).to(prompt_tokens.dtype)
        tokens = torch.cat([mask_tokens, prompt_tokens], dim=1)
        io_tokens, video = self.transformer(video_tokens, video_pe, tokens)

        grid_feats = rearrange(video, "n (t h w) c -> n c t h w", t=t, h=h, w=w)
        up = self.output_upscaling(grid_feats)  # (N, C_up, T', H', W')
        hyper = torch.stack(
            [mlp(io_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (N, K_out, C_up)
        maps = torch.einsum("nkc,ncthw->nkthw", hyper, up)
        return maps, io_tokens, video


@dataclass
class TrackingWindowOutput:
    """Result of `TrackingDecoder.decode_window` for B videos x N queries.

    heatmap, visibility, depth: (B, N, T', H', W') maps of output tokens 0, 1, 2 at the upscaled
        resolution (`VideoMaskDecoder.map_size`), raw (no softmax / activation).
    io_tokens: (B, N, 3 + P + 1, C); index `feature_token_index` is the track-feature token.
    video_tokens: (B, N, L, C) processed video tokens (the keys after the two-way layers).
    """

    heatmap: torch.Tensor
    visibility: torch.Tensor
    depth: torch.Tensor
    io_tokens: torch.Tensor
    video_tokens: torch.Tensor


class TrackingDecoder(nn.Module):
    """The L4P sparse tracking decoder: prompt encoder + video mask decoder + memory projections.

    Args:
        dim: token width (official 1408).
        token_grid: (t, h, w) of one window; patch: (tubelet, ph, pw). Queries are normalised by the
            window size (t*tubelet, h*ph, w*pw).
        num_prompt_points: point prompts per query including SAM's padding point (official 2).
        depth, heads, mlp_dim, downsample_rate, out_dim_factor, upscale_factors: see VideoMaskDecoder.
        num_point_embeddings: point-label embeddings (official 2; labels >= this get none).
        seed: seed of the Fourier Gaussian matrix (replaced when weights are loaded).

    Official submodule names (checkpoint keys under `l4p_model.task_heads.track_2d.`):
    `prompt_encoder`, `mask_decoder`, `prompt_feature_linear_layer`, `processed_video_mask_token`,
    `processed_video_features_proj`.
    """

    NUM_OUTPUTS = 3  # xy heatmap, visibility, depth

    def __init__(
        self,
        dim: int,
        token_grid: Triple,
        patch: Triple,
        num_prompt_points: int = 2,
        depth: int = 2,
        heads: int = 8,
        mlp_dim: int = 2048,
        downsample_rate: int = 2,
        out_dim_factor: int = 8,
        upscale_factors: tuple[Triple, Triple] = ((2, 2, 2), (1, 2, 2)),
        num_point_embeddings: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_prompt_points != 2:
            raise ConfigError(
                "TrackingDecoder supports num_prompt_points=2 (query + padding point), "
                f"got {num_prompt_points}"
            )
        self.dim = dim
        self.token_grid = tuple(int(x) for x in token_grid)
        self.patch = tuple(int(x) for x in patch)
        self.input_size = tuple(g * p for g, p in zip(self.token_grid, self.patch))
        self.num_prompt_points = num_prompt_points
        self.feature_token_index = self.NUM_OUTPUTS + num_prompt_points
        self.prompt_encoder = PromptEncoder3D(dim, self.input_size, num_point_embeddings, 2, seed=seed)
        self.mask_decoder = VideoMaskDecoder(
            dim, self.NUM_OUTPUTS, depth, heads, mlp_dim, downsample_rate, out_dim_factor, upscale_factors
        )
        self.prompt_feature_linear_layer = nn.Linear(dim, dim)
        self.processed_video_mask_token = nn.Embedding(1, dim)
        self.processed_video_features_proj = nn.Linear(dim, dim)

    @property
    def map_size(self) -> Triple:
        """(T', H', W') of the maps `decode_window` returns."""
        return self.mask_decoder.map_size(self.token_grid)

    def decode_window(
        self,
        video_tokens: torch.Tensor,
        queries: torch.Tensor,
        labels: torch.Tensor,
        prompt_features: torch.Tensor | None = None,
        feature_labels: torch.Tensor | None = None,
        history: torch.Tensor | None = None,
    ) -> TrackingWindowOutput:
        """Decode all queries of one window (§3.2-§3.5); chunk N yourself (memory ~ N x L x C).

        video_tokens: (B, L, C) final normalised encoder tokens of the window, L = t*h*w.
        queries: (B, N, 3) (t, x, y) in window frames and pixels (centres at +0.5).
        labels: (B, N) int point labels (official: 0 not valid in window, 1 valid, 2 re-anchored;
            labels >= num_point_embeddings get no label embedding).
        prompt_features: (B, N, C) track features, or None (zeros = new tracks).
        feature_labels: (B, N) int, 0 = new, 1 = carried over; None means all 0.
        history: (B, N, L, C) per-query memory tokens added to the video tokens, or None for the
            initial memory (every slot = `processed_video_mask_token`, without materialising it).
        Token order per query: 3 output tokens, query point, padding point (label -1), track feature.
        """
        b, length, c = video_tokens.shape
        t, h, w = self.token_grid
        if length != t * h * w or c != self.dim:
            raise InputError(
                f"video_tokens must be (B, {t * h * w}, {self.dim}), got {tuple(video_tokens.shape)}"
            )
        if queries.ndim != 3 or queries.shape[0] != b or queries.shape[-1] != 3:
            raise InputError(f"queries must be (B={b}, N, 3) as (t, x, y), got {tuple(queries.shape)}")
        n = queries.shape[1]
        if labels.shape != (b, n):
            raise InputError(f"labels must be (B, N) = {(b, n)}, got {tuple(labels.shape)}")
        if feature_labels is None:
            feature_labels = labels.new_zeros(b, n)

        if history is None:
            per_query = (
                (video_tokens + self.processed_video_mask_token.weight).unsqueeze(1).expand(b, n, -1, -1)
            )
        else:
            if history.shape != (b, n, length, c):
                raise InputError(f"history must be {(b, n, length, c)}, got {tuple(history.shape)}")
            per_query = video_tokens.unsqueeze(1) + history
        per_query = rearrange(per_query, "b n l c -> (b n) l c")

        points = self.prompt_encoder.embed_points(
            rearrange(queries, "b n d -> (b n) 1 d"), rearrange(labels, "b n -> (b n) 1"), pad=True
        )
        feats = None if prompt_features is None else rearrange(prompt_features, "b n c -> (b n) c")
        feature_token = self.prompt_encoder.embed_features(feats, rearrange(feature_labels, "b n -> (b n)"))
        prompt = torch.cat([points, feature_token.to(points.dtype)], dim=1)
        video_pe = self.prompt_encoder.get_dense_pe(self.token_grid)

        maps, io_tokens, video = self.mask_decoder(per_query, video_pe, prompt, self.token_grid)
        maps = rearrange(maps, "(b n) k t h w -> b n k t h w", b=b)
        return TrackingWindowOutput(
            heatmap=maps[:, :, 0],
            visibility=maps[:, :, 1],
            depth=maps[:, :, 2],
            io_tokens=rearrange(io_tokens, "(b n) k c -> b n k c", b=b),
            video_tokens=rearrange(video, "(b n) l c -> b n l c", b=b),
        )

    def next_prompt_features(self, io_tokens: torch.Tensor) -> torch.Tensor:
        """Track feature for the next window: `prompt_feature_linear_layer` of the track-feature token.

        io_tokens: (..., K, C) -> (..., C).
        """
        return self.prompt_feature_linear_layer(io_tokens[..., self.feature_token_index, :])

    def next_history(self, video_tokens: torch.Tensor, overlap: int | None = None) -> torch.Tensor:
        """Memory for the next window (§3.6): project the processed video tokens with
        `processed_video_features_proj`, move the last `overlap` temporal token slices (the ones the next
        window shares; default t // 2, the official stride of half a window) to the front and fill the
        remaining slices with `processed_video_mask_token`.

        video_tokens: (..., L, C) processed video tokens -> (..., L, C).
        """
        t, h, w = self.token_grid
        overlap = t // 2 if overlap is None else overlap
        if not 0 <= overlap <= t:
            raise InputError(f"memory overlap must be in [0, {t}] token slices, got {overlap}")
        proj = self.processed_video_features_proj(video_tokens)
        proj = rearrange(proj, "... (t h w) c -> ... t (h w) c", t=t, h=h, w=w)
        kept = proj[..., t - overlap :, :, :]
        fill = self.processed_video_mask_token.weight.to(proj.dtype).expand_as(proj[..., overlap:, :, :])
        return rearrange(torch.cat([kept, fill], dim=-3), "... t hw c -> ... (t hw) c")
