"""l4p-head-flow: the `flow` head plugin (backward optical flow, t -> t-1, pixels) for l4p."""

__version__ = "0.1.0"

from .head import (  # noqa: E402  (the spec reads __version__)
    FlowConfig,
    FlowHead,
    flow_head_metrics,
    flow_head_spec,
    flow_loss,
    visualize_flow,
)

__all__ = [
    "FlowConfig",
    "FlowHead",
    "__version__",
    "flow_head_metrics",
    "flow_head_spec",
    "flow_loss",
    "visualize_flow",
]
