"""Task metrics, exactly as defined in data-and-metrics.md §2.

Every function takes torch tensors (batched, or a single sequence without the batch dim) and
returns a dict of python floats: each metric is computed per sequence (batch element) and then
averaged over sequences; ``per_sequence=True`` returns the per-sequence lists instead, for
accumulating over a dataset. Camera-pose metrics live in ``l4p_framework.metrics.pose``.
"""

from __future__ import annotations

from .depth import ALIGN_MODES, AffineFit, align_depth, depth_metrics, fit_affine
from .flow import endpoint_error, flow_metrics
from .normals import angular_error, normal_metrics
from .segmentation import motion_iou
from .tracking import PIXEL_THRESHOLDS, tapvid3d_metrics, tapvid_metrics

__all__ = [
    "ALIGN_MODES",
    "AffineFit",
    "PIXEL_THRESHOLDS",
    "align_depth",
    "angular_error",
    "depth_metrics",
    "endpoint_error",
    "fit_affine",
    "flow_metrics",
    "motion_iou",
    "normal_metrics",
    "tapvid3d_metrics",
    "tapvid_metrics",
]
