"""Training loss and evaluation metrics of the tracking head.

Which (point, frame) pairs count: frames at/after the query time (f >= t, the frames a forward
tracker predicts; L4P's "valid for causal estimation" rule), of real queries (`query_valid`, when the
batch has it after padding). Positions and depth are supervised only where the point is GT-visible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from l4p_framework.errors import InputError
from l4p_framework.metrics.tracking import tapvid3d_metrics, tapvid_metrics

from .head import TrackingConfig
from .lifting import lift_tracks
from .memory import valid_frames

TAPVID_SIZE = 256.0
"""Positions are compared in pixels of a 256 x 256 frame (TAP-Vid's evaluation resolution)."""


def active_pairs(batch: dict, t: int) -> torch.Tensor:
    """(B, N, T) bool: frames at/after each real query's time."""
    q = batch["queries"]
    active = valid_frames(q[..., 0].float(), 0, t)
    if "query_valid" in batch:
        active = active & batch["query_valid"].to(active.device).bool()[..., None]
    return active


def _image_size(batch: dict) -> tuple[int, int]:
    if "video" in batch:
        return tuple(batch["video"].shape[-2:])  # type: ignore[return-value]
    if "image_size" in batch:
        return tuple(batch["image_size"])  # type: ignore[return-value]
    raise InputError("tracking loss / metrics need batch['video'] (B, 3, T, H, W) for the image size")


def silog(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale-invariant log loss per video, averaged over videos with at least 2 valid pairs.

    pred, gt: (B, ...) positive depths; mask: (B, ...) bool. Per video: mean over the mask of
    (log pred - log gt + alpha)^2 with alpha = mean(log gt - log pred), the optimal global log-scale
    (i.e. the variance of the log ratio). Returns a scalar (0 with the graph kept if nothing counts).
    """
    d = torch.where(mask, torch.log(pred.clamp_min(1e-8)) - torch.log(gt.clamp_min(1e-8)), 0.0)
    d, m = d.flatten(1), mask.flatten(1).to(d.dtype)
    count = m.sum(1)
    mean = (d * m).sum(1) / count.clamp_min(1)
    var = (((d - mean[:, None]) ** 2) * m).sum(1) / count.clamp_min(1)
    ok = count >= 2
    if not bool(ok.any()):
        return pred.sum() * 0.0
    return var[ok].mean()


def tracking_loss(outputs: dict, batch: dict, config: TrackingConfig) -> dict[str, torch.Tensor]:
    """{"loss": weighted total, "position", "visibility", "depth"} for (B, N, T) predictions.

    outputs: tracks (B, N, T, 2) px, visibility (B, N, T) logits, track_depth (B, N, T).
    batch: queries (B, N, 3), tracks (B, N, T, 2) px, visibility (B, N, T) bool, track_depth
    (B, N, T), optional query_valid (B, N), video (for the image size).
    position: Huber (delta `huber_delta`) or L1 of the x and y errors in 256 x 256 pixels, mean
    over GT-visible active pairs and both coordinates; visibility: BCE on logits over active pairs;
    depth: SILog over GT-visible active pairs with positive GT depth.
    """
    pred, vis_logit, depth = outputs["tracks"], outputs["visibility"], outputs["track_depth"]
    gt = batch["tracks"].to(pred.device)
    gt_vis = batch["visibility"].to(pred.device).bool()
    t = pred.shape[2]
    if gt.shape != pred.shape or gt_vis.shape != vis_logit.shape:
        raise InputError(
            f"tracking loss: predicted tracks {tuple(pred.shape)} / visibility {tuple(vis_logit.shape)} "
            f"and GT {tuple(gt.shape)} / {tuple(gt_vis.shape)} must match"
        )
    h, w = _image_size(batch)
    active = active_pairs(batch, t).to(pred.device)
    seen = active & gt_vis

    scale = pred.new_tensor((TAPVID_SIZE / w, TAPVID_SIZE / h))
    err = (pred - gt) * scale
    if config.position_loss == "huber":
        per = F.huber_loss(err, torch.zeros_like(err), delta=config.huber_delta, reduction="none")
    else:
        per = err.abs()
    per = per.mean(-1)
    position = (per * seen).sum() / seen.sum().clamp_min(1)

    bce = F.binary_cross_entropy_with_logits(vis_logit, gt_vis.to(vis_logit.dtype), reduction="none")
    visibility = (bce * active).sum() / active.sum().clamp_min(1)

    gt_depth = batch["track_depth"].to(depth.device).to(depth.dtype)
    depth_term = silog(depth, gt_depth, seen & (gt_depth > 0) & torch.isfinite(gt_depth))

    total = (
        config.position_weight * position
        + config.visibility_weight * visibility
        + config.depth_weight * depth_term
    )
    return {
        "loss": total,
        "position": position.detach(),
        "visibility": visibility.detach(),
        "depth": depth_term.detach(),
    }


def tracking_metrics(outputs: dict, batch: dict) -> dict[str, float]:
    """TAP-Vid AJ, <delta_avg, OA ("aj", "delta_avg", "oa") and, when the batch has tracks_3d and
    intrinsics, TAPVid-3D 3D-AJ, APD3D, OA ("aj3d", "apd3d", "oa3d"), as fractions in [0, 1].

    2D: query mode "first" of `metrics.tracking.tapvid_metrics`: the frames after each query's
    frame are evaluated (exactly TAP-Vid "first" when queries sit at first visible frames; for other
    query times it is the causal counterpart, the frames a forward tracker predicts). Predicted
    visible = logit > 0. 3D: predicted points lifted with the batch intrinsics (`lift_tracks`), every
    frame evaluated, median scaling skipping non-finite points, thresholds with the focal lengths
    rescaled to a 256-pixel short side (TAPVid-3D's protocol). NaN where undefined.
    """
    if "tracks" not in batch or "visibility" not in batch:
        return {"aj": math.nan, "delta_avg": math.nan, "oa": math.nan}
    pred = outputs["tracks"].detach().float().cpu()
    pred_vis = (outputs["visibility"].detach() > 0).cpu()
    q = batch["queries"].float().cpu()
    qv = batch.get("query_valid")
    qv = None if qv is None else qv.bool().cpu()
    m2 = tapvid_metrics(
        pred,
        pred_vis,
        batch["tracks"].float().cpu(),
        batch["visibility"].bool().cpu(),
        q[..., 0],
        _image_size(batch),
        query_mode="first",
        query_valid=qv,
    )
    out = {"aj": m2["aj"], "delta_avg": m2["delta_avg"], "oa": m2["oa"]}
    if "tracks_3d" in batch and "intrinsics" in batch:
        k = batch["intrinsics"].float().cpu()
        xyz = lift_tracks(pred, outputs["track_depth"].detach().float().cpu(), k)
        m3 = tapvid3d_metrics(
            xyz,  # NaN points stay NaN: never within, never in the median scale
            pred_vis,
            batch["tracks_3d"].float().cpu(),
            batch["visibility"].bool().cpu(),
            k,
            query_valid=qv,
            image_size=_image_size(batch),
        )
        out.update({"aj3d": m3["aj3d"], "apd3d": m3["apd3d"], "oa3d": m3["oa"]})
    return {k: float(v) for k, v in out.items()}
