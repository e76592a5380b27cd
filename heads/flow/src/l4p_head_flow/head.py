"""The backward optical-flow head: a DPT dense head predicting (u, v) in pixels, frame t -> t-1.

Output `flow`: (B, 2, T, H, W), linear (no activation), pixels; channel 0 is the horizontal (x,
right) and channel 1 the vertical (y, down) displacement from frame t to frame t - 1. The token-only
head (matching "none") decodes it at the model window's resolution; with matching "shared" it is at
the input video's resolution (the shared frame matching's flow plus learned corrections). Frame 0 of a window has no previous frame in the window, so it is excluded from the loss and
the metrics, and when stitching long videos each later window's first frame keeps the earlier
window's value.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from einops import rearrange
from pydantic import Field

from l4p_framework import OutputSpec, OverwriteStitcher
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
from l4p_framework.matching import shared_matching
from l4p_framework.metrics import flow_metrics
from l4p_framework.official import official_key_map_for, official_module
from l4p_framework.specs import EncoderInfo, HeadSpec
from l4p_framework.viz import flow_to_color

from . import __version__
from .refiner import FlowRefiner

NAME = "flow"
OFFICIAL_MODULE = official_module(NAME)
"""Key of this head in the official checkpoint: `l4p_model.task_heads.flow_2d_backward.task_head.dpt.*`."""
official_key_map = official_key_map_for(NAME, official_to_dense_head)
"""Official `task_head.dpt.*` weights (the head's own keys or the whole official state dict) -> `dpt.*`."""


class FlowConfig(DenseHeadConfig):
    """Flow head options (decoder architecture: see `DenseHeadConfig`).

    matching: "none" decodes flow from the tokens alone (the official L4P head); "shared" reads the
        composed model's shared frame matching (`batch["matches"]`, `l4p_framework.matching`, at the
        input resolution) and adds a learned per-frame refiner's correction at the input resolution,
        computed from the frames, the matching and the token flow: flow = matching + correction
        (`refiner.py`).
    refiner_width: channels of the refiner CNN.
    """

    matching: Literal["none", "shared"] = "none"
    refiner_width: int = Field(32, ge=4)


class FlowHead(DenseHead):
    """DPT dense head (+ optional frame matching) -> {"flow": (B, 2, T, H, W) backward flow t -> t-1
    in pixels} for one window."""

    def __init__(self, info: EncoderInfo, config: FlowConfig) -> None:
        super().__init__(info, config, out_channels=2)
        self.config = config
        self.refiner = FlowRefiner(config.refiner_width) if config.matching != "none" else None

    def forward(
        self, features: TokenFeatures, batch: dict[str, Any] | None = None
    ) -> dict[str, torch.Tensor]:
        token_flow = super().forward(features, batch)
        if self.refiner is None:
            return {"flow": token_flow}
        matches, frames, transform = shared_matching(batch, NAME)
        token_flow = rearrange(
            transform.invert_flow(rearrange(token_flow, "b c t h w -> b t c h w")), "b t c h w -> b c t h w"
        )
        return {"flow": self.refiner(frames, matches, token_flow)}


def flow_valid(batch: dict[str, Any], gt: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, H, W) bool: `flow_valid` if given, AND finite GT, AND not the clip's first frame.

    The first frame of a clip (a window) has no backward flow inside it: it is always invalid.
    """
    valid = torch.isfinite(gt).all(1, keepdim=True)
    mask = dense_mask(batch, "flow_valid", gt[:, :1])
    if mask is not None:
        valid = valid & mask
    valid[:, :, 0] = False
    return valid


def flow_loss(
    outputs: dict[str, torch.Tensor], batch: dict[str, Any], config: FlowConfig
) -> dict[str, torch.Tensor]:
    """L1 flow loss: mean over valid pixels of |du| + |dv| (pixels), first frame of the window masked.

    outputs["flow"]: (B, 2, T, H, W); batch["flow"]: same shape, backward flow in pixels;
    batch["flow_valid"] (optional): (B, 1, T, H, W) bool. The mean is over all valid pixels of the
    batch. Returns {"loss", "l1": detached loss, "epe": mean end-point error (detached)}.
    """
    pred = dense_output(outputs, "flow", 2)
    gt = dense_target(batch, "flow", 2, pred)
    valid = flow_valid(batch, gt)
    err = torch.where(valid, pred.float() - torch.nan_to_num(gt.float()), 0.0)
    n = valid.sum()
    if int(n) == 0:
        zero = pred.sum() * 0.0
        return {"loss": zero, "l1": zero.detach(), "epe": zero.detach()}
    loss = err.abs().sum() / n
    epe = err.detach().square().sum(1, keepdim=True).sqrt().sum() / n
    return {"loss": loss, "l1": loss.detach(), "epe": epe}


def flow_head_metrics(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, float]:
    """EPE (pixels), EPE<1 (fraction) and KITTI Fl over valid pixels, the clip's first frame excluded.

    Keys `epe`, `epe<1`, `fl`; per sequence over all its frames, then averaged over sequences.
    """
    pred = dense_output(outputs, "flow", 2).detach()
    gt = dense_target(batch, "flow", 2, pred)
    if not bool(torch.isfinite(pred).all()):
        raise InputError("outputs['flow'] (B, 2, T, H, W) contains NaN or infinite values")
    return flow_metrics(pred, gt, flow_valid(batch, gt))


def visualize_flow(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, list]:
    """Flow colour-wheel images of the first sequence's frames: {"flow": [(H, W, 3) uint8] * T}.

    Prediction and ground truth (`flow_gt`, when in the batch) share one magnitude scale: the
    largest ground-truth magnitude if there is GT, else the prediction's.
    """
    pred = dense_output(outputs, "flow", 2).detach()[0].float()
    gt = batch.get("flow")
    if isinstance(gt, torch.Tensor) and gt.shape[1:] == (2, *pred.shape[1:]):
        g = torch.nan_to_num(gt[0].float())
        scale = float(g.square().sum(0).sqrt().max())
        scale = scale if scale > 0 else None
        return {"flow": list(flow_to_color(pred, scale)), "flow_gt": list(flow_to_color(g, scale))}
    return {"flow": list(flow_to_color(pred))}


def build_flow_head(info: EncoderInfo, config: FlowConfig) -> FlowHead:
    return FlowHead(info, config)


def flow_baseline(batch: dict) -> dict[str, torch.Tensor]:
    """Trivial baseline: zero flow (B, 2, T, H, W)."""
    return {"flow": torch.zeros_like(batch["flow"], dtype=torch.float32)}


def flow_head_spec() -> HeadSpec:
    """The `flow` HeadSpec registered by this plugin."""
    return HeadSpec(
        name=NAME,
        version=__version__,
        config_model=FlowConfig,
        layers=lambda info, config: list(config.hook_layers(info)),
        build=build_flow_head,
        loss=flow_loss,
        metrics=flow_head_metrics,
        metric_protocols={"epe": "px, frames 1..T-1", "epe<1": "px", "fl": "kitti fl, >3px & >5%"},
        targets=("flow",),
        uses_matching=lambda config: config.matching == "shared",
        matching_baseline=lambda batch, matches: {"flow": matches.backward},
        outputs=(
            OutputSpec(
                "flow",
                "(B, 2, T, H, W)",
                "backward optical flow (u, v) in pixels from frame t to frame t-1; frame 0 undefined",
                kind="flow",
                undefined="first frame",
                export_dtype="float16",
            ),
        ),
        baseline=flow_baseline,
        stitcher=lambda config: OverwriteStitcher({"flow": 2}, keep_previous_first=True),
        visualize=visualize_flow,
        official_key_map=official_key_map,
        description="Backward optical flow (t -> t-1, pixels) from a 3D DPT head (L1 loss).",
    )
