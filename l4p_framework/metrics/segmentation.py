"""Motion-segmentation metric: foreground IoU accumulated over a sequence (data-and-metrics.md §2)."""

from __future__ import annotations

import torch

from ..errors import InputError, check_tensor


def _batched(name: str, x: torch.Tensor) -> torch.Tensor:
    """Return `x` as (B, 1, T, H, W); a single sequence (1, T, H, W) gets B = 1."""
    shape = "(B, 1, T, H, W) or (1, T, H, W)"
    check_tensor(name, x, shape)
    if x.ndim == 4:
        x = x.unsqueeze(0)
    if x.ndim != 5 or x.shape[1] != 1:
        raise InputError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    return x


def motion_iou(
    logits: torch.Tensor,
    gt_mask: torch.Tensor,
    valid: torch.Tensor | None = None,
    threshold: float = 0.5,
    per_sequence: bool = False,
) -> dict[str, float] | dict[str, list[float]]:
    """Foreground (moving-object) IoU of a thresholded mask against ground truth.

    Protocol: the DAVIS-style region similarity J (Perazzi et al. 2016) restricted to the moving
    class and accumulated over the whole sequence (as L4P reports motion segmentation), not
    averaged per frame; every valid pixel of every frame, at the resolution of the given tensors.

    logits: (B, 1, T, H, W) or (1, T, H, W) mask logits; a pixel is predicted moving when
    sigmoid(logit) > threshold. A bool tensor is taken as the predicted mask itself.
    gt_mask: same shape, {0, 1} float or bool (> 0.5 is moving). valid: same shape, bool, optional.

    Per sequence, intersection and union are summed over all valid pixels of all frames and
    IoU = intersection / union; a sequence where both masks are empty (union 0) has IoU 1.0.
    Returns {"iou"}: the mean over sequences, or with per_sequence=True the per-sequence list.
    """
    lg = _batched("logits", logits)
    gm = _batched("gt_mask", gt_mask)
    if lg.shape != gm.shape:
        raise InputError(f"logits {tuple(lg.shape)} and gt_mask {tuple(gm.shape)} must have the same shape")
    pred = lg if lg.dtype == torch.bool else torch.sigmoid(lg.double()) > threshold
    gt = gm if gm.dtype == torch.bool else gm > 0.5
    if valid is not None:
        v = _batched("valid", valid)
        if v.shape != gt.shape:
            raise InputError(f"valid must have gt_mask's shape {tuple(gt.shape)}, got {tuple(v.shape)}")
        v = v if v.dtype == torch.bool else v != 0
        pred, gt = pred & v, gt & v
    inter = (pred & gt).flatten(1).sum(1).double()
    union = (pred | gt).flatten(1).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    if per_sequence:
        return {"iou": iou.tolist()}
    return {"iou": float(iou.mean())}
