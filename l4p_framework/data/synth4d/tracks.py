"""Query points and their exact 2D/3D tracks with visibility for synth4d clips."""

from __future__ import annotations

import torch
from einops import rearrange

from .render import NEAR, VIS_ABS_TOL, VIS_REL_TOL, cast, move_points, project, to_camera, unproject_dirs
from .scene import Scene


def sample_tracks(
    scene: Scene,
    object_id: torch.Tensor,
    num_queries: int,
    first_frame_fraction: float,
    moving_fraction: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Sample N query points on visible surfaces and track them through the clip.

    object_id (T, H, W) is the rendered id map (0 room, k object k-1). Each query gets a frame
    (frame 0 with probability `first_frame_fraction`, else uniform), a pixel (on a moving object
    with probability `moving_fraction` when that frame shows one) and a uniform sub-pixel offset;
    its ray is cast exactly and the hit point is attached rigidly to its surface.

    Returns queries (N, 3) as (t, x, y) pixels; tracks (N, T, 2) pixels; visibility (N, T) bool
    (in front of the camera, inside [0, W) x [0, H) and the first hit along the ray through the
    point within 1e-3 + 1e-4 z of it); track_depth (N, T) camera z; tracks_3d (N, T, 3) camera
    frame. Points behind the camera (z <= 1e-3) are projected with z clamped to 1e-3.
    """
    g = generator
    n_t, height, width = object_id.shape
    n = num_queries
    if n == 0:
        return {
            "queries": torch.zeros(0, 3),
            "tracks": torch.zeros(0, n_t, 2),
            "visibility": torch.zeros(0, n_t, dtype=torch.bool),
            "track_depth": torch.zeros(0, n_t),
            "tracks_3d": torch.zeros(0, n_t, 3),
        }
    ids = object_id.reshape(n_t, -1)
    moving_ids = torch.cat([torch.zeros(1, dtype=torch.bool), scene.obj_moving])
    moving_px = moving_ids[ids]  # (T, P)

    q_frame = torch.randint(0, n_t, (n,), generator=g)
    q_frame = torch.where(torch.rand(n, generator=g) < first_frame_fraction, 0, q_frame)
    want_moving = torch.rand(n, generator=g) < moving_fraction
    # Pixel: uniform over the image, or uniform over the moving pixels of the query frame.
    cum = moving_px.cumsum(-1)  # (T, P)
    count = cum[:, -1][q_frame]  # (N,)
    u = torch.rand(n, generator=g)
    k_moving = (u * count).long().clamp(max=(count - 1).clamp(min=0)) + 1
    pix_moving = torch.searchsorted(cum[q_frame], k_moving[:, None])[:, 0]
    pix_any = (u * ids.shape[1]).long().clamp(max=ids.shape[1] - 1)
    pixel = torch.where(want_moving & (count > 0), pix_moving, pix_any)
    jitter = torch.rand(n, 2, generator=g)
    xy = torch.stack([pixel % width, pixel // width], -1).float() + jitter  # (N, 2)

    # Exact hit of each query ray at its query frame.
    arange = torch.arange(n)
    q_dirs = unproject_dirs(scene.intrinsics, xy.T[:, None].expand(2, n_t, n))  # (3, T, N)
    q_hits = cast(scene, q_dirs)
    q_depth = q_hits.depth[q_frame, arange]
    q_obj = q_hits.obj[q_frame, arange]
    q_world = scene.cam_pos[q_frame].T + q_depth * q_hits.world_dirs[:, q_frame, arange]  # (3, N)

    # Rigidly attached positions at every frame, in world then camera coordinates.
    frames = torch.arange(n_t)
    world = move_points(
        scene,
        q_world[:, None].expand(3, n_t, n),
        q_obj.expand(n_t, n),
        q_frame.expand(n_t, n),
        frames[:, None].expand(n_t, n),
    )
    cam = to_camera(scene, world, frames)  # (3, T, N)
    z = cam[2]
    front = z > NEAR
    safe = torch.cat([cam[:2], z.clamp(min=NEAR)[None]])
    uv = project(scene.intrinsics, safe)  # (2, T, N)
    inside = (uv[0] >= 0) & (uv[0] < width) & (uv[1] >= 0) & (uv[1] < height)

    # Occlusion: cast the ray through each point and compare its first hit with the point.
    hits = cast(scene, safe / safe[2:])
    same = (hits.obj == q_obj) & ((hits.depth - z).abs() <= VIS_ABS_TOL + VIS_REL_TOL * z.abs())
    visible = front & inside & same

    queries = torch.cat([q_frame.float()[:, None], xy], -1)
    return {
        "queries": queries,
        "tracks": rearrange(uv, "c t n -> n t c").contiguous(),
        "visibility": visible.T.contiguous(),
        "track_depth": z.T.contiguous(),
        "tracks_3d": rearrange(cam, "c t n -> n t c").contiguous(),
    }
