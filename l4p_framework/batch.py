"""Canonical batch keys shared by datasets, heads, losses and metrics.

A *sample* (one clip, what a dataset's ``__getitem__`` returns) and a *batch* (what the collate
function returns, every tensor with a leading batch dim B) use the same keys. Conventions are
those of data-and-metrics.md: continuous pixel coordinates put the centre of the top-left pixel
at (0.5, 0.5); intrinsics are in pixels (fx, fy, cx, cy with the same +0.5 convention, i.e. a
point (x, y) in pixels projects as x = fx * X / Z + cx); poses are camera-to-world; depth is
z-depth in scene units (metres for real data).

=================  ===========================  ==============================================
key                sample shape                 meaning
=================  ===========================  ==============================================
video              (3, T, H, W) float [0, 1]    RGB frames
depth              (1, T, H, W) float           z-depth, 0 where invalid
depth_valid        (1, T, H, W) bool            valid depth pixels (absent: depth > 0)
flow               (2, T, H, W) float           backward flow t -> t-1 in pixels (u, v);
                                                frame 0 is undefined (zeros)
flow_valid         (1, T, H, W) bool            valid backward-flow pixels (frame 0 False)
flow_forward       (2, T, H, W) float           forward flow t -> t+1 (last frame zeros)
normals            (3, T, H, W) float           unit normals, camera frame (x right, y down,
                                                z forward), 0 where invalid
motion_mask        (1, T, H, W) float {0, 1}    1 on pixels of objects moving in the world
intrinsics         (T, 3, 3) float              pixel-unit K per frame
poses              (T, 4, 4) float              camera-to-world per frame
queries            (N, 3) float                 (t, x, y): frame index (float) and pixels
tracks             (N, T, 2) float              2D track positions in pixels
visibility         (N, T) bool                  track visible (not occluded, inside frame)
track_depth        (N, T) float                 z-depth of the track point in camera frame
tracks_3d          (N, T, 3) float              track points in the camera frame of each frame
query_valid        (N,) bool                    padding mask added by collation
seed / name        int / str                    provenance (kept as lists after collation)
=================  ===========================  ==============================================
"""

from __future__ import annotations

VIDEO = "video"
DEPTH = "depth"
DEPTH_VALID = "depth_valid"
FLOW = "flow"
FLOW_VALID = "flow_valid"
FLOW_FORWARD = "flow_forward"
NORMALS = "normals"
MOTION_MASK = "motion_mask"
INTRINSICS = "intrinsics"
POSES = "poses"
QUERIES = "queries"
TRACKS = "tracks"
VISIBILITY = "visibility"
TRACK_DEPTH = "track_depth"
TRACKS_3D = "tracks_3d"
QUERY_VALID = "query_valid"

QUERY_KEYS = (QUERIES, TRACKS, VISIBILITY, TRACK_DEPTH, TRACKS_3D)
"""Keys whose first sample dim is the query count N (padded by collation)."""
