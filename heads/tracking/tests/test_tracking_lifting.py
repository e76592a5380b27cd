"""3D lifting conventions against synth4d's exact ground truth, world frame, and depth alignment."""

from __future__ import annotations

import pytest
import torch
from l4p_head_tracking import (
    align_track_depth_to_dense,
    lift_tracks,
    sample_dense_depth,
    tracks_to_world,
    world_tracks,
)

from l4p_framework import InputError
from l4p_framework.testing import tiny_batch


@pytest.fixture(scope="module")
def clip():
    return tiny_batch(seed=3, frames=8, queries=24)


def test_lifting_matches_ground_truth_3d_tracks(clip):
    xyz = lift_tracks(clip["tracks"], clip["track_depth"], clip["intrinsics"])
    torch.testing.assert_close(xyz, clip["tracks_3d"], rtol=1e-4, atol=1e-4)
    # (B, 3, 3) intrinsics broadcast over frames
    k0 = clip["intrinsics"][:, 0]
    torch.testing.assert_close(
        lift_tracks(clip["tracks"], clip["track_depth"], k0),
        lift_tracks(clip["tracks"], clip["track_depth"], k0[:, None].expand(1, 8, 3, 3)),
    )


def test_formula_and_pixel_centre_convention():
    k = torch.tensor([[[100.0, 0, 32.0], [0, 50.0, 16.0], [0, 0, 1]]])
    tracks = torch.tensor([[[[32.0, 16.0], [132.0, 66.0]]]])  # principal point, then +1 focal length
    z = torch.tensor([[[2.0, 3.0]]])
    xyz = lift_tracks(tracks, z, k)
    assert xyz.tolist() == [[[[0.0, 0.0, 2.0], [3.0, 3.0, 3.0]]]]


def test_world_frame_points_of_static_scene_points_do_not_move(clip):
    world = world_tracks(clip["tracks"], clip["track_depth"], clip["intrinsics"], clip["poses"])
    cam = lift_tracks(clip["tracks"], clip["track_depth"], clip["intrinsics"])
    # inverse pose brings them back to the camera frame
    inv = torch.linalg.inv(clip["poses"])
    back = tracks_to_world(world, inv)
    torch.testing.assert_close(back, cam, rtol=1e-4, atol=1e-4)
    # synth4d room points (static) keep one world position; at least one query lies on the room
    spread = (world - world[:, :, :1]).norm(dim=-1).amax(-1)[0]  # (N,)
    assert (spread < 1e-3).sum() >= 1
    with pytest.raises(InputError, match="camera-to-world"):
        tracks_to_world(world, clip["poses"][:, :3])


def test_sampling_dense_depth_at_tracks(clip):
    sampled = sample_dense_depth(clip["depth"], clip["tracks"])
    vis = clip["visibility"]
    rel = ((sampled - clip["track_depth"]).abs() / clip["track_depth"])[vis]
    assert rel.median() < 0.02  # bilinear samples at the exact projections (edges blur a little)
    outside = sample_dense_depth(clip["depth"], torch.full((1, 1, 8, 2), -3.0))
    assert torch.isnan(outside).all()


def test_align_track_depth_to_dense(clip):
    scaled = clip["track_depth"] * 0.25
    aligned, scale = align_track_depth_to_dense(scaled, clip["tracks"], clip["visibility"], clip["depth"])
    assert scale.shape == (1,) and abs(float(scale[0]) - 4.0) < 0.08
    vis = clip["visibility"]
    assert ((aligned - clip["track_depth"]).abs() / clip["track_depth"])[vis].median() < 0.02
    # per frame: a different wrong scale in each frame is undone frame by frame
    drift = torch.linspace(0.5, 2.0, 8)
    per, scales = align_track_depth_to_dense(
        clip["track_depth"] * drift,
        clip["tracks"],
        torch.where(vis, 5.0, -5.0),
        clip["depth"],
        per_frame=True,
    )
    assert scales.shape == (1, 8)
    torch.testing.assert_close(scales[0], 1 / drift, rtol=0.05, atol=0)
    # nothing visible: scale 1
    _, one = align_track_depth_to_dense(scaled, clip["tracks"], torch.zeros_like(vis), clip["depth"])
    assert one.tolist() == [1.0]
