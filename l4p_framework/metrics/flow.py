"""Optical-flow metrics: EPE, EPE<1 and KITTI Fl (data-and-metrics.md §2).

Each metric is computed over the valid pixels of all frames of a sequence (one batch element),
then averaged over sequences. Flow is in pixels at the evaluation resolution; l4p's flow is
backward (t -> t-1) and frame 0 is undefined, so pass the dataset's ``flow_valid``.
"""

from __future__ import annotations

import torch

from ..errors import InputError, check_tensor


def _batched(name: str, x: torch.Tensor, channels: int, *, finite: bool) -> torch.Tensor:
    """Return `x` as (B, C, T, H, W); a single sequence (C, T, H, W) gets B = 1."""
    shape = f"(B, {channels}, T, H, W) or ({channels}, T, H, W)"
    check_tensor(name, x, shape, finite=finite)
    if x.ndim == 4:
        x = x.unsqueeze(0)
    if x.ndim != 5 or x.shape[1] != channels:
        raise InputError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    return x


def endpoint_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-pixel end-point error |pred - gt| in pixels.

    pred, gt: (B, 2, T, H, W) or (2, T, H, W) flow (u, v) in pixels. Returns (B, T, H, W) (or
    (T, H, W) for a single sequence).
    """
    p = _batched("pred", pred, 2, finite=True)
    g = _batched("gt", gt, 2, finite=False)
    if p.shape != g.shape:
        raise InputError(f"pred {tuple(p.shape)} and gt {tuple(g.shape)} must have the same shape")
    epe = (p.double() - g.double()).square().sum(1).sqrt()
    return epe[0] if pred.ndim == 4 else epe


def flow_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    per_sequence: bool = False,
) -> dict[str, float] | dict[str, list[float]]:
    """End-point-error metrics of optical flow.

    Protocol: EPE and EPE<1 as in Sintel / RAFT-style evaluations; ``fl`` is the KITTI 2015 flow
    outlier rate (Menze & Geiger 2015, devkit ``flow_error``): EPE > 3 px and > 5% of |gt|. Every
    valid pixel of every frame, at the resolution of the given tensors (no resizing).

    pred, gt: (B, 2, T, H, W) or (2, T, H, W) flow in pixels. valid: (B, 1, T, H, W),
    (B, T, H, W) or the single-sequence equivalent, bool; None means every pixel with finite GT
    (l4p's frame 0 has no backward flow: pass ``flow_valid``). Per sequence, over valid pixels:

    - ``epe``: mean |pred - gt| in pixels;
    - ``epe<1``: fraction of pixels with EPE < 1 px;
    - ``fl``: KITTI outlier fraction, EPE > 3 px and EPE > 0.05 |gt|.

    Returns the means over sequences with at least one valid pixel (NaN if none), or with
    per_sequence=True the per-sequence lists (NaN for a sequence without valid pixels).
    """
    g = _batched("gt", gt, 2, finite=False)
    epe = endpoint_error(pred, gt)
    if epe.ndim == 3:
        epe = epe.unsqueeze(0)
    m = torch.isfinite(g).all(1)
    if valid is not None:
        check_tensor("valid", valid, "(B, 1, T, H, W) or (B, T, H, W)", finite=False)
        v = valid if valid.dtype == torch.bool else valid != 0
        if v.ndim == m.ndim + 1 and v.shape[-4] == 1:  # drop the channel dim
            v = v.squeeze(-4)
        if v.ndim == m.ndim - 1:  # single sequence
            v = v.unsqueeze(0)
        if v.shape != m.shape:
            raise InputError(
                f"valid must have shape (B, 1, T, H, W) or (B, T, H, W) matching flow "
                f"{tuple(g.shape)}, got {tuple(valid.shape)}"
            )
        m = m & v
    w = m.flatten(1).double()
    e = torch.where(m, epe, torch.zeros_like(epe)).flatten(1)
    mag = g.double().square().sum(1).sqrt().flatten(1)
    n = w.sum(1)
    values = {
        "epe": (w * e).sum(1) / n,
        "epe<1": (w * (e < 1.0).double()).sum(1) / n,
        "fl": (w * ((e > 3.0) & (e > 0.05 * mag)).double()).sum(1) / n,
    }
    ok = n > 0
    if per_sequence:
        return {k: torch.where(ok, v, torch.full_like(v, float("nan"))).tolist() for k, v in values.items()}
    if not bool(ok.any()):
        return {k: float("nan") for k in values}
    return {k: float(v[ok].mean()) for k, v in values.items()}
