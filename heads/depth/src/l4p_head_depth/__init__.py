"""l4p-head-depth: the `depth` head plugin (relative video z-depth) for l4p."""

__version__ = "0.1.0"

from .head import (  # noqa: E402  (the spec reads __version__)
    DepthConfig,
    DepthHead,
    depth_head_metrics,
    depth_head_spec,
    depth_loss,
    silog_loss,
    visualize_depth,
)

__all__ = [
    "DepthConfig",
    "DepthHead",
    "__version__",
    "depth_head_metrics",
    "depth_head_spec",
    "depth_loss",
    "silog_loss",
    "visualize_depth",
]
