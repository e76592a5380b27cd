"""Surface-normal metrics: angular error statistics (data-and-metrics.md §2)."""

from __future__ import annotations

import math

import torch

from ..errors import InputError, check_tensor

THRESHOLDS_DEG: tuple[float, ...] = (11.25, 22.5, 30.0)


def _batched(name: str, x: torch.Tensor, channels: int, *, finite: bool) -> torch.Tensor:
    """Return `x` as (B, C, T, H, W); a single sequence (C, T, H, W) gets B = 1."""
    shape = f"(B, {channels}, T, H, W) or ({channels}, T, H, W)"
    check_tensor(name, x, shape, finite=finite)
    if x.ndim == 4:
        x = x.unsqueeze(0)
    if x.ndim != 5 or x.shape[1] != channels:
        raise InputError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    return x


def angular_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-pixel angle in degrees between normals, each normalised to unit length first.

    pred, gt: (B, 3, T, H, W) or (3, T, H, W), any length. Returns (B, T, H, W) (or (T, H, W))
    degrees in [0, 180], computed as atan2(|p x g|, p . g) for accuracy near 0. A zero-length
    prediction counts as 90 degrees (as a normalised zero vector does with the usual arccos of the
    clamped dot product); zero-length GT is meaningless and should be masked by the caller.
    """
    p = _batched("pred", pred, 3, finite=True).double()
    g = _batched("gt", gt, 3, finite=False).double()
    if p.shape != g.shape:
        raise InputError(f"pred {tuple(p.shape)} and gt {tuple(g.shape)} must have the same shape")
    pn, gn = p.norm(dim=1), g.norm(dim=1)
    pu = p / pn.clamp_min(1e-12).unsqueeze(1)
    gu = g / gn.clamp_min(1e-12).unsqueeze(1)
    cross = torch.linalg.cross(pu, gu, dim=1).norm(dim=1)
    dot = (pu * gu).sum(1)
    ang = torch.rad2deg(torch.atan2(cross, dot))
    ang = torch.where(pn > 1e-12, ang, torch.full_like(ang, 90.0))
    return ang[0] if pred.ndim == 4 else ang


def normal_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    per_sequence: bool = False,
) -> dict[str, float] | dict[str, list[float]]:
    """Angular-error statistics of predicted surface normals.

    Protocol: the NYUv2 / ScanNet surface-normal evaluation (Eigen & Fergus 2015; Bae et al. 2021):
    per-pixel angle between unit vectors, mean, median and % under 11.25, 22.5 and 30 degrees, every
    valid pixel of every frame, at the resolution of the given tensors, no alignment.

    pred, gt: (B, 3, T, H, W) or (3, T, H, W) normals in the camera frame (normalised here).
    valid: (B, 1, T, H, W) or (B, T, H, W) (or single-sequence equivalents) bool, optional; pixels
    whose GT is zero-length or non-finite are always excluded (l4p stores 0 where invalid).

    Per sequence, over valid pixels: ``mean_angle`` and ``median_angle`` in degrees (the median
    is the midpoint of the two middle values for an even count) and the fractions
    ``within_11.25``, ``within_22.5``, ``within_30`` of pixels with error strictly below the
    threshold. Returns the means over sequences with a valid pixel (NaN if none), or with
    per_sequence=True the per-sequence lists (NaN for a sequence without valid pixels). For a
    dataset-level pooled median, gather `angular_error` maps instead.
    """
    g = _batched("gt", gt, 3, finite=False)
    ang = angular_error(pred, gt)
    if ang.ndim == 3:
        ang = ang.unsqueeze(0)
    m = torch.isfinite(g).all(1) & (g.double().norm(dim=1) > 1e-6)
    if valid is not None:
        check_tensor("valid", valid, "(B, 1, T, H, W) or (B, T, H, W)", finite=False)
        v = valid if valid.dtype == torch.bool else valid != 0
        if v.ndim == m.ndim + 1 and v.shape[-4] == 1:
            v = v.squeeze(-4)
        if v.ndim == m.ndim - 1:
            v = v.unsqueeze(0)
        if v.shape != m.shape:
            raise InputError(
                f"valid must have shape (B, 1, T, H, W) or (B, T, H, W) matching normals "
                f"{tuple(g.shape)}, got {tuple(valid.shape)}"
            )
        m = m & v
    keys = ["mean_angle", "median_angle"] + [f"within_{t:g}" for t in THRESHOLDS_DEG]
    rows: list[list[float]] = []
    for b in range(ang.shape[0]):
        a = ang[b][m[b]]
        if a.numel() == 0:
            rows.append([math.nan] * len(keys))
            continue
        s = a.sort().values
        k = s.numel()
        median = 0.5 * (s[(k - 1) // 2] + s[k // 2])
        rows.append(
            [float(a.mean()), float(median)] + [float((a < t).double().mean()) for t in THRESHOLDS_DEG]
        )
    if per_sequence:
        return {key: [r[i] for r in rows] for i, key in enumerate(keys)}
    good = [r for r in rows if not math.isnan(r[0])]
    if not good:
        return {key: math.nan for key in keys}
    return {key: sum(r[i] for r in good) / len(good) for i, key in enumerate(keys)}
