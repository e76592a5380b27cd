"""l4p-head-tracking: 2D/3D point tracking for l4p (L4P's sparse two-way decoder with memory).

Public API:

- `tracking_spec()` / the `tracking` entry point: the HeadSpec.
- `TrackingHead`, `TrackingConfig`: the head module and its config.
- `track_bidirectional(model, video, queries)`: forward + backward tracking of mid-video queries.
- `lift_tracks`, `tracks_to_world`, `world_tracks`, `align_track_depth_to_dense`: 3D tracks.
- `official_key_map`: official L4P `track_2d` weights -> this head.
"""

from .bidirectional import track_bidirectional
from .head import TrackingConfig, TrackingHead, check_queries, grid_queries
from .lifting import (
    align_track_depth_to_dense,
    lift_tracks,
    sample_dense_depth,
    tracks_to_world,
    world_tracks,
)
from .memory import VISIBILITY_FILL, TrackMemory
from .objectives import tracking_loss, tracking_metrics
from .plugin import official_key_map, tracking_spec, visualize

__version__ = "0.1.0"

__all__ = [
    "VISIBILITY_FILL",
    "TrackMemory",
    "TrackingConfig",
    "TrackingHead",
    "align_track_depth_to_dense",
    "check_queries",
    "grid_queries",
    "lift_tracks",
    "official_key_map",
    "sample_dense_depth",
    "track_bidirectional",
    "tracking_loss",
    "tracking_metrics",
    "tracking_spec",
    "tracks_to_world",
    "visualize",
    "world_tracks",
]
