"""3D random-Fourier positional encoding and SAM-style point / feature prompt encoding (l4p-model.md §3.3).

Coordinates are always ordered (t, x, y): time first, then image column, then image row.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from ..errors import InputError


class RandomFourierPE3D(nn.Module):
    """Random-Fourier features of 3D coordinates in [0, 1]^3 (SAM's `PositionEmbeddingRandom`, in 3D).

    The Gaussian matrix G (3, num_feats) is a **persistent buffer** named
    `positional_encoding_gaussian_matrix`: it is drawn once at construction (from `generator`, or a
    fresh generator seeded with `seed`) and afterwards only ever loaded from checkpoints.
    """

    positional_encoding_gaussian_matrix: torch.Tensor

    def __init__(
        self, num_feats: int, scale: float = 1.0, seed: int = 0, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
        # randn on CPU with the generator, then move: meta/cuda construction stays reproducible.
        g = scale * torch.randn((3, num_feats), generator=generator, device="cpu")
        target = torch.empty(0).device
        self.register_buffer("positional_encoding_gaussian_matrix", g.to(target), persistent=True)

    @property
    def num_feats(self) -> int:
        return int(self.positional_encoding_gaussian_matrix.shape[1])

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """coords: (..., 3) in [0, 1], ordered (t, x, y) -> (..., 2*num_feats) = [sin, cos] of 2pi(2c-1)G."""
        g = self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * ((2 * coords.to(g.dtype) - 1) @ g)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def dense_pe(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """Encoding of the token-grid centres ((i+0.5)/n per axis) -> (1, 2*num_feats, t, h, w)."""
        t, h, w = grid
        g = self.positional_encoding_gaussian_matrix
        kw = {"device": g.device, "dtype": g.dtype}
        tc = (torch.arange(t, **kw) + 0.5) / t
        yc = (torch.arange(h, **kw) + 0.5) / h
        xc = (torch.arange(w, **kw) + 0.5) / w
        tt, yy, xx = torch.meshgrid(tc, yc, xc, indexing="ij")
        pe = self.encode(torch.stack([tt, xx, yy], dim=-1))  # (t, h, w, C)
        return rearrange(pe, "t h w c -> 1 c t h w")

    def dense_pe_tokens(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """`dense_pe` flattened in token order (index = t'*h*w + h'*w + w') -> (1, t*h*w, 2*num_feats)."""
        return rearrange(self.dense_pe(grid), "1 c t h w -> 1 (t h w) c")


class PromptEncoder3D(nn.Module):
    """Point and track-feature prompts of the video SAM decoder (the official `prompt_encoder`).

    Args:
        dim: token width (even; the Fourier encoding has dim/2 frequencies).
        input_size: (T, H, W) of the window, to normalise queries (t/T, x/W, y/H).
        num_point_embeddings: learned label embeddings for point labels 0..n-1 (official 2). Other
            labels (e.g. 2 = re-anchored query) get the positional encoding only; -1 is padding.
        num_feature_embeddings: labels of the track-feature token (official 2: 0 new, 1 carried).
        seed: seed of the Gaussian matrix (overwritten when a checkpoint is loaded).

    `no_mask_embed` is unused (kept so the official checkpoint loads).
    """

    def __init__(
        self,
        dim: int,
        input_size: tuple[int, int, int],
        num_point_embeddings: int = 2,
        num_feature_embeddings: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if dim % 2:
            raise InputError(f"PromptEncoder3D dim must be even, got {dim}")
        self.dim = dim
        self.input_size = tuple(int(x) for x in input_size)
        self.pe_layer = RandomFourierPE3D(dim // 2, seed=seed)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(num_point_embeddings))
        self.prompt_feature_embeddings = nn.ModuleList(
            nn.Embedding(1, dim) for _ in range(num_feature_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, dim)
        self.no_mask_embed = nn.Embedding(1, dim)

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool = True) -> torch.Tensor:
        """Encode point prompts.

        points: (N, P, 3) (t, x, y) in frames and pixels of the window (no +0.5 is added here; the
            callers' queries already use pixel/frame centres).
        labels: (N, P) int; -1 = padding (zero encoding + not_a_point_embed), 0..num_point_embeddings-1
            add that label's embedding, any other label adds nothing.
        pad: append one padding point (label -1), as SAM does without a box prompt.
        Returns (N, P + pad, dim).
        """
        if points.ndim != 3 or points.shape[-1] != 3 or labels.shape != points.shape[:2]:
            raise InputError(
                f"points must be (N, P, 3) and labels (N, P), "
                f"got {tuple(points.shape)} and {tuple(labels.shape)}"
            )
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 3)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        t, h, w = self.input_size
        size = points.new_tensor((t, w, h))  # points are (t, x, y): normalise by (T, W, H)
        emb = self.pe_layer.encode(points / size)
        is_pad = (labels == -1).unsqueeze(-1)
        emb = torch.where(is_pad, self.not_a_point_embed.weight.to(emb.dtype), emb)
        for i, table in enumerate(self.point_embeddings):
            emb = emb + (labels == i).unsqueeze(-1).to(emb.dtype) * table.weight.to(emb.dtype)
        return emb

    def embed_features(self, features: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        """Track-feature token = feature + prompt_feature_embeddings[label].

        features: (N, dim) or None (zeros: a new track); labels: (N,) int in [0, num_feature_embeddings).
        Returns (N, 1, dim).
        """
        n = len(self.prompt_feature_embeddings)
        if labels.numel() and not labels.is_meta and (int(labels.min()) < 0 or int(labels.max()) >= n):
            raise InputError(f"prompt feature labels must be in [0, {n}), got {labels.unique().tolist()}")
        table = torch.cat([e.weight for e in self.prompt_feature_embeddings], dim=0)  # (n, dim)
        emb = table[labels.long()]
        if features is not None:
            if features.shape != emb.shape:
                raise InputError(f"prompt features must be {tuple(emb.shape)}, got {tuple(features.shape)}")
            emb = features + emb
        return emb.unsqueeze(1)

    def get_dense_pe(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """Video-token positional encoding in token order -> (1, t*h*w, dim)."""
        return self.pe_layer.dense_pe_tokens(grid)
