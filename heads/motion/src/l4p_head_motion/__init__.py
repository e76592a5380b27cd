"""l4p-head-motion: the `motion` head plugin (moving-object segmentation logits) for l4p."""

__version__ = "0.1.0"

from .head import (  # noqa: E402  (the spec reads __version__)
    MotionConfig,
    MotionHead,
    motion_head_metrics,
    motion_head_spec,
    motion_loss,
    visualize_motion,
)

__all__ = [
    "MotionConfig",
    "MotionHead",
    "__version__",
    "motion_head_metrics",
    "motion_head_spec",
    "motion_loss",
    "visualize_motion",
]
