"""Heatmap decoding: soft-argmax over pixel centres and spatial means (l4p-model.md §3.5)."""

from __future__ import annotations

import torch

from ..errors import InputError


def soft_argmax_2d(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Expected pixel position under softmax(logits / temperature) over the last two dims.

    logits: (..., H, W) heatmap logits. Returns (..., 2) as (x, y) in pixels with pixel centres at
    (col + 0.5, row + 0.5), i.e. in [0.5, W - 0.5] x [0.5, H - 0.5].

    Computed from the two marginals in log space (logsumexp over rows / columns), so it is stable for
    any logit range and never materialises the full probability map as an autograd-saved tensor.
    The result is in float32 or wider (half-precision logits are upcast).
    """
    if logits.ndim < 2:
        raise InputError(f"soft_argmax_2d needs logits (..., H, W), got {tuple(logits.shape)}")
    if temperature <= 0:
        raise InputError(f"soft_argmax_2d temperature must be > 0, got {temperature}")
    x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    if temperature != 1.0:
        x = x / temperature
    h, w = x.shape[-2:]
    col_lse = torch.logsumexp(x, dim=-2)  # (..., W): log of the column marginal (unnormalised)
    row_lse = torch.logsumexp(x, dim=-1)  # (..., H)
    px = torch.softmax(col_lse, dim=-1)
    py = torch.softmax(row_lse, dim=-1)
    xs = torch.arange(w, device=x.device, dtype=x.dtype) + 0.5
    ys = torch.arange(h, device=x.device, dtype=x.dtype) + 0.5
    return torch.stack([(px * xs).sum(-1), (py * ys).sum(-1)], dim=-1)


def spatial_mean(maps: torch.Tensor) -> torch.Tensor:
    """Mean over the last two (H, W) dims: (..., H, W) -> (...)."""
    if maps.ndim < 2:
        raise InputError(f"spatial_mean needs maps (..., H, W), got {tuple(maps.shape)}")
    return maps.mean(dim=(-2, -1))
