"""The surface-normal head: a DPT dense head predicting unit normals in the camera frame.

Output `normals`: (B, 3, T, H, W) float, unit length along dim 1, in the camera frame of each frame
(x right, y down, z forward, as l4p's data use them): a surface facing the camera has z < 0. The raw
3-channel DPT map is normalised per pixel with `F.normalize` (a raw vector of exactly zero length, which a
trained head practically never produces, stays zero).

Loss, over valid pixels (GT normal finite and non-zero, AND `depth_valid` when the batch has it):
`cosine_weight * mean(1 - cos(n, n*)) + l1_weight * mean(|n - n*|_1)`, with prediction and GT both
normalised to unit length first. Metrics: the angular-error statistics of data-and-metrics.md §2 in
degrees (`l4p_framework.metrics.normal_metrics`). Long videos: later windows overwrite the overlap.

Written only against l4p's public API (`l4p_framework` and its public subpackages), as a third-party
plugin would be.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from l4p_framework import (
    EncoderInfo,
    HeadSpec,
    InputError,
    OutputSpec,
    OverwriteStitcher,
    TokenFeatures,
)
from l4p_framework.blocks import DenseHead, DenseHeadConfig
from l4p_framework.metrics import normal_metrics
from l4p_framework.viz import normals_to_color

from . import __version__

NAME = "normals"
CAMERA_FACING = (0.0, 0.0, -1.0)
"""The trivial baseline's normal: pointing from the surface straight back at the camera (z forward)."""


class NormalsConfig(DenseHeadConfig):
    """Normals head options (decoder architecture: see `DenseHeadConfig`, presets small/cpu/official).

    cosine_weight: weight of the angular term mean(1 - cos(n, n*)) over valid pixels, >= 0 (range [0, 2]).
    l1_weight: weight of the L1 term mean(|n - n*|_1) between unit vectors over valid pixels, >= 0
        (per-pixel sum over the 3 components, range [0, 2*sqrt(3)]).
    At least one weight must be positive.
    """

    cosine_weight: float = Field(1.0, ge=0.0)
    l1_weight: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _some_loss(self) -> NormalsConfig:
        if self.cosine_weight == 0.0 and self.l1_weight == 0.0:
            raise ValueError("cosine_weight and l1_weight are both 0: the loss would be empty")
        return self


class NormalsHead(DenseHead):
    """DPT dense head -> {"normals": (B, 3, T, H, W) unit camera-frame normals} for one window."""

    def __init__(self, info: EncoderInfo, config: NormalsConfig) -> None:
        super().__init__(info, config, out_channels=3)

    def forward(
        self, features: TokenFeatures, batch: dict[str, Any] | None = None
    ) -> dict[str, torch.Tensor]:
        """features: the hooked token layers (B, N, C_enc) of one window -> unit normals (B, 3, T, H, W)."""
        return {"normals": F.normalize(super().forward(features, batch), dim=1, eps=1e-12)}


# -- checks ---------------------------------------------------------------------------------------------


def _shape(x: Any) -> Any:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def normals_output(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """outputs["normals"] checked to be a (B, 3, T, H, W) tensor; InputError otherwise."""
    if not isinstance(outputs, dict) or "normals" not in outputs:
        got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise InputError(f"outputs have no 'normals' (got {got}); pass the normals head's own outputs")
    x = outputs["normals"]
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != 3:
        raise InputError(f"outputs['normals'] must be (B, 3, T, H, W), got {_shape(x)}")
    return x


def _batch_tensor(batch: dict[str, Any], key: str, channels: int, like: torch.Tensor) -> torch.Tensor | None:
    """batch[key] as (B, channels, T, H, W) matching `like`'s B, T, H, W, or None if absent."""
    x = batch.get(key)
    if x is None:
        return None
    b, _, t, h, w = like.shape
    want = (b, channels, t, h, w)
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != want:
        raise InputError(
            f"batch[{key!r}] must have shape (B, {channels}, T, H, W) = {want} to match the prediction, "
            f"got {_shape(x)}"
        )
    return x


def normals_target(batch: dict[str, Any], like: torch.Tensor) -> torch.Tensor:
    """The ground truth batch["normals"] (B, 3, T, H, W) matching the prediction `like`."""
    gt = _batch_tensor(batch, "normals", 3, like)
    if gt is None:
        raise InputError(
            "batch has no 'normals'; it is needed as a target (B, 3, T, H, W) unit camera-frame normals "
            "(synth4d provides it)"
        )
    return gt


def normals_valid(batch: dict[str, Any], gt: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, H, W) bool: GT normal finite and non-zero, AND batch["depth_valid"] when present."""
    valid = torch.isfinite(gt).all(1, keepdim=True) & (
        torch.nan_to_num(gt).square().sum(1, keepdim=True) > 1e-12
    )
    mask = _batch_tensor(batch, "depth_valid", 1, gt)
    if mask is not None:
        valid = valid & (mask if mask.dtype == torch.bool else mask != 0)
    return valid


# -- loss, metrics, baseline, visualisation --------------------------------------------------------------


def normals_loss_terms(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean(1 - cos), mean(|n - n*|_1)) over the valid pixels of the whole batch, both scalars.

    pred, gt: (B, 3, T, H, W), any length (normalised here, in float32); valid: (B, 1, T, H, W) bool.
    Invalid pixels never reach the gradient. Without any valid pixel both terms are 0 (still
    connected to `pred`'s graph, so a backward pass works).
    """
    pred_u = F.normalize(pred.float(), dim=1, eps=1e-12)
    gt_u = F.normalize(torch.where(valid, gt.float(), torch.zeros((), device=gt.device)), dim=1, eps=1e-12)
    weight = valid.float()
    count = weight.sum()
    if count == 0:
        zero = pred_u.sum() * 0.0
        return zero, zero
    cosine = (pred_u * gt_u).sum(1, keepdim=True)
    cos_term = ((1.0 - cosine) * weight).sum() / count
    l1_term = ((pred_u - gt_u).abs().sum(1, keepdim=True) * weight).sum() / count
    return cos_term, l1_term


def normals_loss(
    outputs: dict[str, torch.Tensor], batch: dict[str, Any], config: NormalsConfig
) -> dict[str, torch.Tensor]:
    """{"loss": weighted total, "cosine": mean(1 - cos), "l1": mean |n - n*|_1} (terms detached).

    outputs["normals"]: (B, 3, T, H, W); batch["normals"]: same shape, camera-frame normals (zero =
    invalid); batch["depth_valid"] (optional): (B, 1, T, H, W) bool.
    """
    pred = normals_output(outputs)
    gt = normals_target(batch, pred)
    cos_term, l1_term = normals_loss_terms(pred, gt, normals_valid(batch, gt))
    total = config.cosine_weight * cos_term + config.l1_weight * l1_term
    return {"loss": total, "cosine": cos_term.detach(), "l1": l1_term.detach()}


def normals_head_metrics(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, float]:
    """Angular error in degrees over valid pixels, per sequence then averaged (data-and-metrics.md §2).

    Keys: mean_angle, median_angle (degrees), within_11.25, within_22.5, within_30 (fractions of
    pixels with error strictly below the threshold). Valid pixels as in `normals_valid`.
    """
    pred = normals_output(outputs).detach().float()
    gt = normals_target(batch, pred)
    return normal_metrics(pred, gt, normals_valid(batch, gt))


def camera_facing_baseline(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The trivial baseline: every pixel's normal is (0, 0, -1), facing the camera.

    Sized from batch["video"] (B, 3, T, H, W); returns {"normals": (B, 3, T, H, W) float32}.
    """
    video = batch.get("video")
    if not isinstance(video, torch.Tensor) or video.ndim != 5:
        raise InputError(
            f"the normals baseline needs batch['video'] of shape (B, 3, T, H, W), got {_shape(video)}"
        )
    b, _, t, h, w = video.shape
    normal = torch.tensor(CAMERA_FACING, dtype=torch.float32, device=video.device)
    return {"normals": normal.view(1, 3, 1, 1, 1).expand(b, 3, t, h, w).contiguous()}


def visualize_normals(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, list]:
    """RGB normal maps of the first sequence's frames, RGB = (n + 1) / 2 (x red, y green, z blue).

    Returns {"normals": [(H, W, 3) uint8] * T} and, when the batch has ground truth of the same
    shape, {"normals_gt": ...} with invalid pixels black.
    """
    pred = normals_output(outputs).detach().float()
    images = {"normals": list(normals_to_color(pred[0]))}
    gt = batch.get("normals")
    if isinstance(gt, torch.Tensor) and gt.shape == pred.shape:
        valid = normals_valid(batch, gt)
        images["normals_gt"] = list(normals_to_color(gt[0].float(), valid[0, 0]))
    return images


def build_normals_head(info: EncoderInfo, config: NormalsConfig) -> NormalsHead:
    return NormalsHead(info, config)


def normals_stitcher(config: NormalsConfig) -> OverwriteStitcher:
    """Long videos: each later window overwrites the frames it shares with the previous one."""
    return OverwriteStitcher({"normals": 2})


def normals_head_spec() -> HeadSpec:
    """The `normals` HeadSpec registered by this plugin."""
    return HeadSpec(
        name=NAME,
        version=__version__,
        config_model=NormalsConfig,
        layers=lambda info, config: list(config.hook_layers(info)),
        build=build_normals_head,
        loss=normals_loss,
        metrics=normals_head_metrics,
        metric_protocols={"mean_angle": "deg, valid pixels", "median_angle": "deg, valid pixels"},
        targets=("normals",),
        outputs=(
            OutputSpec(
                "normals",
                "(B, 3, T, H, W)",
                "unit surface normals in the camera frame (x right, y down, z forward; facing the camera: z < 0)",
                export_dtype="float16",
            ),
        ),
        stitcher=normals_stitcher,
        visualize=visualize_normals,
        baseline=camera_facing_baseline,
        description="Surface normals: per-pixel unit camera-frame normals from a 3D DPT head (cosine + L1 loss).",
    )
