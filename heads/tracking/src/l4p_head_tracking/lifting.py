"""3D tracks from 2D tracks + track depth + camera (l4p-model.md §3.5).

Conventions (data-and-metrics.md): pixel coordinates put the centre of the top-left pixel at
(0.5, 0.5), and intrinsics K use the same convention, i.e. a camera-frame point (X, Y, Z) projects to
x = fx * X / Z + cx, y = fy * Y / Z + cy. Lifting inverts that with no extra half-pixel shift:
X = (x - cx) * z / fx, Y = (y - cy) * z / fy, Z = z. (If your K puts pixel centres at integers, add
0.5 to its cx, cy first.) Poses are camera-to-world (B, T, 4, 4).

The track depth of the L4P head is not aligned across windows and has no metric scale; the
explicit composite step `align_track_depth_to_dense` rescales it to a dense depth map (for example
the depth head's output) by the median ratio at visible track positions, as the official 4D
visualisation does. The tracking head never reads another head's output itself.
"""

from __future__ import annotations

import torch
from einops import rearrange

from l4p_framework.blocks.matching import sample_bilinear
from l4p_framework.errors import InputError, check_tensor


def _per_frame_k(intrinsics: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """(B, 3, 3) or (B, T, 3, 3) -> (B, T, 3, 3)."""
    check_tensor("intrinsics", intrinsics, "(B, 3, 3) or (B, T, 3, 3)")
    if intrinsics.ndim == 3 and intrinsics.shape == (b, 3, 3):
        return intrinsics[:, None].expand(b, t, 3, 3)
    if intrinsics.ndim == 4 and intrinsics.shape == (b, t, 3, 3):
        return intrinsics
    raise InputError(
        f"intrinsics must be (B, 3, 3) or (B, T, 3, 3) with B={b}, T={t} (pixel units), "
        f"got {tuple(intrinsics.shape)}"
    )


def lift_tracks(tracks: torch.Tensor, track_depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Camera-frame 3D points of 2D tracks.

    tracks: (B, N, T, 2) (x, y) pixels (+0.5 convention); track_depth: (B, N, T) z-depth (scene
    units); intrinsics: (B, 3, 3) or (B, T, 3, 3) pixel-unit K (same convention). Returns
    (B, N, T, 3) points ((x - cx) z / fx, (y - cy) z / fy, z) in the camera frame of each frame.
    """
    check_tensor("tracks", tracks, "(B, N, T, 2)", ndim=4, finite=False)
    b, n, t, c = tracks.shape
    if c != 2 or track_depth.shape != (b, n, t):
        raise InputError(
            f"tracks must be (B, N, T, 2) and track_depth (B, N, T), got {tuple(tracks.shape)} and "
            f"{tuple(track_depth.shape)}"
        )
    k = rearrange(_per_frame_k(intrinsics, b, t).to(tracks.dtype), "b t i j -> b 1 t i j")
    fx, fy, cx, cy = k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2]
    z = track_depth.to(tracks.dtype)
    x = (tracks[..., 0] - cx) * z / fx
    y = (tracks[..., 1] - cy) * z / fy
    return torch.stack([x, y, z], dim=-1)


def tracks_to_world(points: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """Camera-frame points (B, N, T, 3) -> world frame with camera-to-world poses (B, T, 4, 4)."""
    check_tensor("points", points, "(B, N, T, 3)", ndim=4, finite=False)
    b, n, t, _ = points.shape
    check_tensor("poses", poses, "(B, T, 4, 4) camera-to-world")
    if poses.shape != (b, t, 4, 4):
        raise InputError(
            f"poses must be (B, T, 4, 4) = {(b, t, 4, 4)} camera-to-world, got {tuple(poses.shape)}"
        )
    rot = rearrange(poses[..., :3, :3].to(points.dtype), "b t i j -> b 1 t i j")
    trans = rearrange(poses[..., :3, 3].to(points.dtype), "b t i -> b 1 t i")
    return torch.einsum("bntij,bntj->bnti", rot, points) + trans


def world_tracks(
    tracks: torch.Tensor, track_depth: torch.Tensor, intrinsics: torch.Tensor, poses: torch.Tensor
) -> torch.Tensor:
    """World-frame 3D tracks (B, N, T, 3) = `tracks_to_world(lift_tracks(...), poses)`."""
    return tracks_to_world(lift_tracks(tracks, track_depth, intrinsics), poses)


def sample_dense_depth(dense_depth: torch.Tensor, tracks: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of a depth map at track positions.

    dense_depth: (B, 1, T, H, W) or (B, T, H, W); tracks: (B, N, T, 2) pixels (+0.5 convention,
    `l4p_framework.blocks.matching.sample_bilinear`).
    Returns (B, N, T); positions outside the frame get NaN.
    """
    if dense_depth.ndim == 5:
        if dense_depth.shape[1] != 1:
            raise InputError(f"dense_depth must be (B, 1, T, H, W), got {tuple(dense_depth.shape)}")
        dense_depth = dense_depth[:, 0]
    if dense_depth.ndim != 4:
        raise InputError(
            f"dense_depth must be (B, 1, T, H, W) or (B, T, H, W), got {tuple(dense_depth.shape)}"
        )
    b, t, h, w = dense_depth.shape
    if tracks.shape[0] != b or tracks.shape[2] != t or tracks.shape[-1] != 2:
        raise InputError(
            f"tracks {tuple(tracks.shape)} must be (B={b}, N, T={t}, 2) to match dense_depth {tuple(dense_depth.shape)}"
        )
    img = rearrange(dense_depth.to(tracks.dtype), "b t h w -> (b t) 1 h w")
    samples = sample_bilinear(img, rearrange(tracks, "b n t c -> (b t) n 1 c"))
    samples = rearrange(samples, "(b t) 1 n 1 -> b n t", b=b)
    inside = (tracks[..., 0] >= 0) & (tracks[..., 0] <= w) & (tracks[..., 1] >= 0) & (tracks[..., 1] <= h)
    return torch.where(inside, samples, torch.full_like(samples, float("nan")))


def align_track_depth_to_dense(
    track_depth: torch.Tensor,
    tracks: torch.Tensor,
    visibility: torch.Tensor,
    dense_depth: torch.Tensor,
    per_frame: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale track depth to a dense depth map by the median ratio at visible track positions.

    An explicit composite step (the tracking head never reads other heads): dense depth (e.g. the
    depth head's) is sampled bilinearly at the tracks; over the (point, frame) pairs that are visible
    (bool, or logits > 0), inside the frame and have positive finite depths in both, the scale is
    median(dense / track) (the lower middle value for even counts, as `torch.nanmedian`).
    per_frame=False: one scale per video; True: one per frame (which also removes the per-window
    scale drift of the L4P track depth). Where no pair qualifies the scale is 1.

    track_depth: (B, N, T); tracks: (B, N, T, 2) pixels; visibility: (B, N, T) bool or logits;
    dense_depth: (B, 1, T, H, W) or (B, T, H, W). Returns (aligned track depth (B, N, T), scale
    (B,) or (B, T)).
    """
    if track_depth.shape != tracks.shape[:3] or visibility.shape != tracks.shape[:3]:
        raise InputError(
            f"track_depth {tuple(track_depth.shape)} and visibility {tuple(visibility.shape)} must be "
            f"(B, N, T) = {tuple(tracks.shape[:3])}"
        )
    vis = visibility if visibility.dtype == torch.bool else visibility > 0
    dense = sample_dense_depth(dense_depth, tracks.float())
    td = track_depth.float()
    ok = vis & torch.isfinite(dense) & (dense > 0) & torch.isfinite(td) & (td > 0)
    ratio = torch.where(ok, dense / td.clamp_min(1e-12), torch.full_like(td, float("nan")))
    if ratio.shape[1] == 0:  # no tracks: nothing to align
        ones = td.new_ones(ratio.shape[0], ratio.shape[2]) if per_frame else td.new_ones(ratio.shape[0])
        return track_depth, ones
    if per_frame:
        scale = torch.nanmedian(rearrange(ratio, "b n t -> b t n"), dim=-1).values  # (B, T)
        scale = torch.nan_to_num(scale, nan=1.0)
        return track_depth * scale[:, None, :].to(track_depth.dtype), scale
    scale = torch.nanmedian(ratio.flatten(1), dim=-1).values
    scale = torch.nan_to_num(scale, nan=1.0)
    return track_depth * scale[:, None, None].to(track_depth.dtype), scale
