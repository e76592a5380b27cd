"""l4p-head-normals: the `normals` head plugin (surface normals in the camera frame) for l4p."""

__version__ = "0.1.0"

from .head import (  # noqa: E402  (the spec reads __version__)
    NormalsConfig,
    NormalsHead,
    camera_facing_baseline,
    normals_head_metrics,
    normals_head_spec,
    normals_loss,
    normals_loss_terms,
    normals_valid,
    visualize_normals,
)

__all__ = [
    "NormalsConfig",
    "NormalsHead",
    "__version__",
    "camera_facing_baseline",
    "normals_head_metrics",
    "normals_head_spec",
    "normals_loss",
    "normals_loss_terms",
    "normals_valid",
    "visualize_normals",
]
