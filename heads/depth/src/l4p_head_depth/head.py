"""The depth head: a DPT dense head predicting log z-depth, trained with the SILog loss.

Output `depth`: (B, 1, T, H, W) z-depth = exp(raw), positive, of arbitrary (relative) scale: the
SILog loss is invariant to a global scale per sequence, so only shape is learnt. Long videos are
stitched by the median disparity ratio over each window's overlap (`DepthConfig.stitch_shift`: a
least-squares disparity scale and shift, as the official driver; the `official` profile sets it).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from l4p_framework import DisparityAffineStitcher, OutputSpec
from l4p_framework.blocks.dense_head import (
    DenseHead,
    DenseHeadConfig,
    dense_mask,
    dense_output,
    dense_target,
    official_to_dense_head,
)
from l4p_framework.errors import InputError
from l4p_framework.features import TokenFeatures
from l4p_framework.metrics import depth_metrics
from l4p_framework.official import official_key_map_for, official_module
from l4p_framework.specs import EncoderInfo, HeadSpec
from l4p_framework.viz import depth_to_color

from . import __version__

NAME = "depth"
OFFICIAL_MODULE = official_module(NAME)
"""Key of this head in the official checkpoint: `l4p_model.task_heads.depth.task_head.dpt.*`."""
official_key_map = official_key_map_for(NAME, official_to_dense_head)
"""Official `task_head.dpt.*` weights (the head's own keys or the whole official state dict) -> `dpt.*`."""


class DepthConfig(DenseHeadConfig):
    """Depth head options (decoder architecture: see `DenseHeadConfig`).

    silog_lambda: weight lambda of the scale term removed by SILog, in [0, 1]. The loss per sequence
        is mean(d^2) - lambda * mean(d)^2 with d = log y - log y*: lambda = 1 (default, as L4P) is the
        variance of d, i.e. fully scale-invariant; lambda < 1 also penalises a global scale error.
    stitch_shift: how windows are chained over their overlap (`DisparityAffineStitcher`): False
        (default) by the median disparity ratio, True by a least-squares disparity scale and shift,
        the official driver's non-joint depth alignment (l4p-model.md §4.2; the `official` profile
        sets it).
    """

    silog_lambda: float = Field(1.0, ge=0.0, le=1.0)
    stitch_shift: bool = False


class DepthHead(DenseHead):
    """DPT dense head -> {"depth": (B, 1, T, H, W) z-depth > 0} for one window (relative scale)."""

    def __init__(self, info: EncoderInfo, config: DepthConfig) -> None:
        super().__init__(info, config, out_channels=1)

    def forward(
        self, features: TokenFeatures, batch: dict[str, Any] | None = None
    ) -> dict[str, torch.Tensor]:
        return {"depth": torch.exp(super().forward(features, batch))}


def depth_valid(batch: dict[str, Any], gt: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, H, W) bool: `depth_valid` if given, AND finite, positive ground truth."""
    valid = torch.isfinite(gt) & (gt > 0)
    mask = dense_mask(batch, "depth_valid", gt)
    return valid if mask is None else valid & mask


def silog_loss(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, lam: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale-invariant log loss (Eigen et al. 2014), one scale per sequence (batch element).

    pred, gt: (B, 1, T, H, W) positive z-depth; valid: same shape, bool. With d = log pred - log gt
    over the valid pixels of a sequence and mu = mean(d) (so alpha = -mu is the optimal log-scale):
    loss = mean((d - mu)^2) + (1 - lam) * mu^2 = mean(d^2) - lam * mu^2. Sequences without valid
    pixels are skipped. Returns (the mean over sequences, a scalar; mu per sequence (B,), detached).
    """
    b = pred.shape[0]
    valid = valid.reshape(b, -1)
    log_pred = torch.log(pred.float().clamp_min(1e-12)).reshape(b, -1)
    log_gt = torch.log(torch.where(valid, gt.reshape(b, -1).float(), 1.0).clamp_min(1e-12))
    zero = torch.zeros((), device=pred.device)
    d = torch.where(valid, log_pred - log_gt, zero)
    n = valid.sum(1).float()
    mu = d.sum(1) / n.clamp_min(1)
    centred = torch.where(valid, d - mu[:, None], zero)
    per_seq = centred.square().sum(1) / n.clamp_min(1) + (1.0 - lam) * mu.square()
    ok = n > 0
    if not bool(ok.any()):
        return pred.sum() * 0.0, mu.detach()
    return per_seq[ok].mean(), mu.detach()


def depth_loss(
    outputs: dict[str, torch.Tensor], batch: dict[str, Any], config: DepthConfig
) -> dict[str, torch.Tensor]:
    """{"loss": SILog, "silog": detached, "log_scale": mean optimal log-scale}; see `silog_loss`.

    outputs["depth"]: (B, 1, T, H, W); batch["depth"]: same shape, z-depth (0 = invalid);
    batch["depth_valid"] (optional): same shape, bool.
    """
    pred = dense_output(outputs, "depth", 1)
    gt = dense_target(batch, "depth", 1, pred)
    loss, mu = silog_loss(pred, gt, depth_valid(batch, gt), config.silog_lambda)
    return {"loss": loss, "silog": loss.detach(), "log_scale": -mu.mean()}


def depth_head_metrics(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, float]:
    """AbsRel and delta1 after per-sequence least-squares alignment to ground truth.

    abs_rel / delta1: one scale per sequence, in depth. abs_rel_ss / delta1_ss: one scale and shift
    per sequence in disparity (the affine-invariant video-depth protocol), back to depth, capped at
    the largest valid GT depth. Over `depth_valid` (or depth > 0) pixels; means over sequences.
    """
    pred = dense_output(outputs, "depth", 1).detach()
    gt = dense_target(batch, "depth", 1, pred)
    valid = depth_valid(batch, gt)
    if not bool(torch.isfinite(pred).all()):
        raise InputError("outputs['depth'] (B, 1, T, H, W) contains NaN or infinite values")
    scale = depth_metrics(pred, gt, valid, align="scale")
    ss = depth_metrics(pred, gt, valid, align="scale_shift_disparity")
    return {
        "abs_rel": scale["abs_rel"],
        "delta1": scale["delta1"],
        "abs_rel_ss": ss["abs_rel"],
        "delta1_ss": ss["delta1"],
    }


def visualize_depth(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, list]:
    """Colour maps (inverse depth, turbo, near = red) of the first sequence's frames.

    Returns {"depth": [(H, W, 3) uint8] * T} and, when the batch has ground truth of the same
    shape, {"depth_gt": ...} coloured independently (the prediction has its own scale).
    """
    pred = dense_output(outputs, "depth", 1).detach()
    images = {"depth": list(depth_to_color(pred[0, 0].float()))}
    gt = batch.get("depth")
    if isinstance(gt, torch.Tensor) and gt.shape == pred.shape:
        images["depth_gt"] = list(depth_to_color(gt[0, 0].float(), depth_valid(batch, gt)[0, 0]))
    return images


def build_depth_head(info: EncoderInfo, config: DepthConfig) -> DepthHead:
    return DepthHead(info, config)


def depth_baseline(batch: dict) -> dict[str, torch.Tensor]:
    """Trivial baseline: the median GT depth of each sequence everywhere (B, 1, T, H, W)."""
    depth = batch["depth"].float()
    valid = batch.get("depth_valid", depth > 0) & (depth > 0)
    medians = torch.stack([d[v].median() if v.any() else d.new_tensor(1.0) for d, v in zip(depth, valid)])
    return {"depth": medians.view(-1, 1, 1, 1, 1).expand_as(depth).clone()}


def depth_head_spec() -> HeadSpec:
    """The `depth` HeadSpec registered by this plugin."""
    return HeadSpec(
        name=NAME,
        version=__version__,
        config_model=DepthConfig,
        layers=lambda info, config: list(config.hook_layers(info)),
        build=build_depth_head,
        loss=depth_loss,
        metrics=depth_head_metrics,
        metric_protocols={
            "abs_rel": "scale per sequence, depth",
            "delta1": "scale per sequence, depth",
            "abs_rel_ss": "scale+shift per sequence, disparity",
            "delta1_ss": "scale+shift per sequence, disparity",
        },
        targets=("depth",),
        outputs=(
            OutputSpec(
                "depth",
                "(B, 1, T, H, W)",
                "z-depth > 0 of relative (arbitrary) scale; windows chained by scale/shift in disparity",
            ),
        ),
        baseline=depth_baseline,
        stitcher=lambda config: DisparityAffineStitcher("depth", time_dim=2, shift=config.stitch_shift),
        profiles={"official": {"stitch_shift": True}},
        visualize=visualize_depth,
        official_key_map=official_key_map,
        description="Video depth: per-frame relative z-depth from a 3D DPT head (SILog loss).",
    )
