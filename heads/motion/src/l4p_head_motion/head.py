"""The motion-segmentation head: a DPT dense head predicting a moving-object logit per pixel.

Output `motion`: (B, 1, T, H, W) logit that the pixel belongs to an object moving in the world
(sigmoid > 0.5 is "moving"). Trained with binary cross-entropy on the logit against
`motion_mask`; long videos are stitched by overwriting (no alignment).

Calibration: a BCE whose positives weigh `pos_weight` = w is minimised by the decoder output
z = log w + logit(p), p the probability of "moving"; the head therefore outputs z - log w (a
calibrated logit) and the loss adds log w back, so training is unchanged and sigmoid(output) is
the probability, not w times the odds (the shipped head, w = 4, marked 2-3x too many pixels).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, model_validator

from l4p_framework import OutputSpec, OverwriteStitcher
from l4p_framework.blocks.dense_head import (
    DenseHead,
    DenseHeadConfig,
    dense_output,
    dense_target,
    official_to_dense_head,
)
from l4p_framework.errors import InputError
from l4p_framework.features import TokenFeatures
from l4p_framework.matching import shared_matching
from l4p_framework.metrics import motion_iou
from l4p_framework.official import official_key_map_for, official_module
from l4p_framework.specs import EncoderInfo, HeadSpec
from l4p_framework.viz import mask_overlay

from . import __version__
from .geometry import rigid_residual

NAME = "motion"
OFFICIAL_MODULE = official_module(NAME)
"""Key of this head in the official checkpoint: `l4p_model.task_heads.dyn_mask.task_head.dpt.*`."""
official_key_map = official_key_map_for(NAME, official_to_dense_head)
"""Official `task_head.dpt.*` weights (the head's own keys or the whole official state dict) -> `dpt.*`."""


class MotionConfig(DenseHeadConfig):
    """Motion head options (decoder architecture: see `DenseHeadConfig`).

    pos_weight: weight of the positive (moving) class in the BCE loss, e.g. the ratio of static to
        moving pixels of the training data (moving objects are usually a small fraction); None = 1.
    matching: "none" decodes the logits from the tokens alone (the official L4P head); "shared" also
        reads the composed model's shared frame matching and adds where pixels break the camera's
        rigid motion (`geometry.rigid_residual` over each of `residual_gaps` frames, at the input
        resolution): logit = w_decoder * decoder logit + sum_g w_g * log(1 + residual_g) + bias,
        output at the input resolution.
    fusion: (w_decoder, w_g for each gap, bias) of that sum; the default is what `python
        scripts/fit_motion_fusion.py --photos DIR` gives the shipped decoder (a logistic regression
        on 24 procedural and 24 photo-textured synth4d training clips, 16 frames at 240x320, its
        bias then moved to the best foreground IoU on 8 + 8 validation clips).
    residual_gaps: the frame gaps over which the residuals compare motion (distinct).
    residual_min_side: frames with a shorter side below this many pixels keep the decoder's logits
        (at 64x64 the matching is too coarse: IoU 0.115 fused vs 0.189 alone on synth4d test clips).
    """

    pos_weight: float | None = Field(None, gt=0.0)
    matching: Literal["none", "shared"] = "none"
    fusion: tuple[float, ...] = (0.472, 0.892, 0.86, -2.763)
    residual_gaps: tuple[PositiveInt, ...] = (2, 4)
    residual_min_side: int = Field(128, ge=0)

    @model_validator(mode="after")
    def _fusion_matches_gaps(self) -> MotionConfig:
        if len(set(self.residual_gaps)) != len(self.residual_gaps) or not self.residual_gaps:
            raise ValueError(f"residual_gaps must be distinct frame gaps, got {self.residual_gaps}")
        if len(self.fusion) != len(self.residual_gaps) + 2:
            raise ValueError(
                f"fusion needs {len(self.residual_gaps) + 2} weights (decoder, one per residual gap, bias) "
                f"for residual_gaps {self.residual_gaps}, got {len(self.fusion)}"
            )
        return self


class MotionHead(DenseHead):
    """DPT dense head -> {"motion": (B, 1, T, H, W) moving-object logit} for one window."""

    def __init__(self, info: EncoderInfo, config: MotionConfig) -> None:
        super().__init__(info, config, out_channels=1)
        self.config = config
        self.log_pos_weight = _log_pos_weight(config)

    def forward(
        self, features: TokenFeatures, batch: dict[str, Any] | None = None
    ) -> dict[str, torch.Tensor]:
        """{"motion": (B, 1, T, H, W) calibrated logit}: the decoder's output minus log pos_weight at
        the model window's resolution, or with matching "shared" fused with the rigid-motion
        residual at the input resolution (`MotionConfig`)."""
        logits = super().forward(features, batch) - self.log_pos_weight
        if self.config.matching == "none":
            return {"motion": logits}
        matches, _, transform = shared_matching(batch, NAME)
        if min(matches.backward.shape[-2:]) < self.config.residual_min_side:
            return {"motion": logits}
        logits = transform.invert_map(logits)
        residual = torch.log1p(
            rigid_residual(matches, self.config.residual_gaps).to(logits)
        )  # (B, G, T, H, W)
        w_decoder, *w_gaps, bias = self.config.fusion
        weights = torch.tensor(w_gaps, dtype=logits.dtype, device=logits.device)
        return {
            "motion": w_decoder * logits + torch.einsum("g,bgthw->bthw", weights, residual)[:, None] + bias
        }


def _log_pos_weight(config: MotionConfig) -> float:
    return float(np.log(config.pos_weight)) if config.pos_weight is not None else 0.0


def motion_loss(
    outputs: dict[str, torch.Tensor], batch: dict[str, Any], config: MotionConfig
) -> dict[str, torch.Tensor]:
    """Binary cross-entropy with logits, mean over all pixels (positives weighted by `pos_weight`).

    outputs["motion"]: (B, 1, T, H, W) calibrated logits (the head's output; log pos_weight is added
    back here, see the module docstring); batch["motion_mask"]: same shape, {0, 1} float or bool.
    Returns {"loss", "bce": detached loss}.
    """
    logits = dense_output(outputs, "motion", 1) + _log_pos_weight(config)
    target = dense_target(batch, "motion_mask", 1, logits)
    if target.is_floating_point() and not bool(torch.isfinite(target).all()):
        raise InputError("batch['motion_mask'] (B, 1, T, H, W) contains NaN or infinite values")
    pos_weight = None
    if config.pos_weight is not None:
        pos_weight = torch.tensor(config.pos_weight, device=logits.device)
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=pos_weight)
    return {"loss": loss, "bce": loss.detach()}


def motion_head_metrics(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, float]:
    """Foreground IoU of sigmoid(logit) > 0.5 against `motion_mask`, over all frames of a sequence."""
    logits = dense_output(outputs, "motion", 1).detach()
    target = dense_target(batch, "motion_mask", 1, logits)
    return motion_iou(logits.float(), target)


def _frames_uint8(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) float in [0, 1] -> (T, H, W, 3) uint8."""
    frames = (video.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


def visualize_motion(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, list]:
    """Predicted moving pixels (sigmoid > 0.5) tinted red on the first sequence's frames.

    Returns {"motion": [(H, W, 3) uint8] * T} (and "motion_gt" when the batch has `motion_mask`).
    Without a video of matching size in the batch, the masks are drawn on grey frames.
    """
    logits = dense_output(outputs, "motion", 1).detach()[0, 0].float()
    t, h, w = logits.shape
    video = batch.get("video")
    if isinstance(video, torch.Tensor) and video.ndim == 5 and tuple(video.shape[2:]) == (t, h, w):
        frames = _frames_uint8(video[0])
    else:
        frames = np.full((t, h, w, 3), 128, dtype=np.uint8)
    pred = (torch.sigmoid(logits) > 0.5).cpu().numpy()
    images = {"motion": [mask_overlay(f, m) for f, m in zip(frames, pred)]}
    gt = batch.get("motion_mask")
    if isinstance(gt, torch.Tensor) and tuple(gt.shape[-3:]) == (t, h, w):
        masks = (gt[0, 0] > 0.5).cpu().numpy()
        images["motion_gt"] = [mask_overlay(f, m, color=(0, 255, 0)) for f, m in zip(frames, masks)]
    return images


def build_motion_head(info: EncoderInfo, config: MotionConfig) -> MotionHead:
    return MotionHead(info, config)


def motion_baseline(batch: dict) -> dict[str, torch.Tensor]:
    """Trivial baseline: everything static (logit -10 everywhere, (B, 1, T, H, W))."""
    return {"motion": torch.full_like(batch["motion_mask"], -10.0, dtype=torch.float32)}


def motion_head_spec() -> HeadSpec:
    """The `motion` HeadSpec registered by this plugin."""
    return HeadSpec(
        name=NAME,
        version=__version__,
        config_model=MotionConfig,
        layers=lambda info, config: list(config.hook_layers(info)),
        build=build_motion_head,
        loss=motion_loss,
        metrics=motion_head_metrics,
        metric_protocols={"iou": "moving class, per sequence, sigmoid > 0.5"},
        targets=("motion_mask",),
        outputs=(
            OutputSpec(
                "motion",
                "(B, 1, T, H, W)",
                "logit that the pixel belongs to an object moving in the world (sigmoid > 0.5: moving)",
                values="logit",
            ),
        ),
        baseline=motion_baseline,
        uses_matching=lambda config: config.matching == "shared",
        stitcher=lambda config: OverwriteStitcher({"motion": 2}),
        visualize=visualize_motion,
        official_key_map=official_key_map,
        description="Motion segmentation: moving-object logits from a 3D DPT head (BCE loss).",
    )
