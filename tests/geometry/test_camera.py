"""Intrinsics helpers, (un)projection, poses and quaternions."""

from __future__ import annotations

import math

import pytest
import torch

from l4p_framework.errors import InputError
from l4p_framework.geometry import (
    denormalize_intrinsics,
    intrinsics_from_opencv,
    intrinsics_to_opencv,
    invert_pose,
    make_intrinsics,
    matrix_to_quaternion,
    normalize_intrinsics,
    pixel_centers,
    project_points,
    quaternion_to_matrix,
    relative_to_first,
    rescale_intrinsics,
    rotation_angle,
    to_world,
    unproject_depth,
    unproject_tracks,
)


def test_normalise_rescale_hand_values():
    K = make_intrinsics(200.0, 210.0, 112.0, 100.0)
    kn = normalize_intrinsics(K, (224, 224))
    assert torch.allclose(kn, torch.tensor([[200 / 224, 0, 0.5], [0, 210 / 224, 100 / 224], [0, 0, 1]]))
    assert torch.allclose(denormalize_intrinsics(kn, (224, 224)), K)
    k16 = rescale_intrinsics(K, (224, 224), (16, 16))
    assert torch.allclose(k16, torch.tensor([[200 / 14, 0, 8.0], [0, 15.0, 100 / 14], [0, 0, 1]]))
    # Non-square: rows scale by their own axis.
    k2 = rescale_intrinsics(K, (224, 448), (112, 112))
    assert torch.allclose(k2[0], torch.tensor([50.0, 0.0, 28.0])) and torch.allclose(
        k2[1], torch.tensor([0, 105.0, 50])
    )


def test_opencv_half_pixel_shift():
    K = make_intrinsics(100.0, 100.0, 64.0, 48.0)
    cv = intrinsics_to_opencv(K)
    assert cv[0, 2].item() == 63.5 and cv[1, 2].item() == 47.5 and cv[0, 0].item() == 100.0
    assert torch.equal(intrinsics_from_opencv(cv), K)


def test_pixel_centres_and_unproject_hand_values():
    xy = pixel_centers((2, 3))
    assert xy.shape == (2, 3, 2) and xy[0, 0].tolist() == [0.5, 0.5] and xy[1, 2].tolist() == [2.5, 1.5]
    K = make_intrinsics(100.0, 50.0, 2.0, 2.0).expand(1, 1, 3, 3)
    depth = torch.full((1, 1, 4, 4), 2.0)
    pts = unproject_depth(depth, K)
    assert pts.shape == (1, 1, 4, 4, 3)
    # Pixel (0, 0) has its centre at (0.5, 0.5): X = (0.5 - 2) / 100 * 2, Y = (0.5 - 2) / 50 * 2.
    assert torch.allclose(pts[0, 0, 0, 0], torch.tensor([-0.03, -0.06, 2.0]))
    # The pixel whose centre is (2.5, 1.5): X = 0.5 / 100 * 2, Y = -0.5 / 50 * 2.
    assert torch.allclose(pts[0, 0, 1, 2], torch.tensor([0.01, -0.02, 2.0]))


def test_project_unproject_round_trip(synth):
    K = synth.random_intrinsics(2, 3, (24, 32), seed=1).float()
    depth = 0.5 + torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    pts = unproject_depth(depth, K)
    xy, z = project_points(pts, K)
    assert xy.shape == (2, 3, 24, 32, 2) and z.shape == (2, 3, 24, 32)
    assert torch.allclose(xy, pixel_centers((24, 32)).expand_as(xy), atol=1e-4)
    assert torch.allclose(z, depth, atol=1e-6)
    # Tracks at pixel centres unproject to the same points as the depth map.
    tr_xy = pixel_centers((24, 32)).reshape(1, -1, 1, 2).expand(2, -1, 3, -1)  # (B, N, T, 2)
    tr_z = depth.flatten(2).transpose(1, 2)  # (B, N, T)
    tracks = unproject_tracks(tr_xy.contiguous(), tr_z.contiguous(), K)
    assert torch.allclose(tracks, pts.flatten(2, 3).transpose(1, 2), atol=1e-6)


def test_poses_inverse_world_relative(synth):
    poses = synth.smooth_poses(2, 5, seed=3)
    eye = torch.eye(4, dtype=torch.float64).expand(2, 5, 4, 4)
    assert torch.allclose(poses @ invert_pose(poses), eye, atol=1e-12)
    rel = relative_to_first(poses)
    assert torch.allclose(rel[:, 0], eye[:, 0], atol=1e-12)
    pts = torch.randn(2, 5, 7, 3, dtype=torch.float64)
    world = to_world(pts, poses)
    back = to_world(world, invert_pose(poses))
    assert torch.allclose(back, pts, atol=1e-12)
    # A camera-frame point on the optical axis lands at centre + depth * (third column of R).
    on_axis = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64).expand(2, 5, 1, 3)
    expect = poses[..., :3, 3] + 2.0 * poses[..., :3, 2]
    assert torch.allclose(to_world(on_axis, poses)[:, :, 0], expect, atol=1e-12)


def test_quaternions(synth):
    s = math.sqrt(0.5)
    r = quaternion_to_matrix(torch.tensor([0.0, 0.0, s, s], dtype=torch.float64))
    assert torch.allclose(
        r, torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64), atol=1e-15
    )
    rots = synth.axis_angle(
        torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    )
    rots = torch.cat([rots, torch.diag(torch.tensor([1.0, -1, -1], dtype=torch.float64))[None]])  # angle pi
    q = matrix_to_quaternion(rots)
    assert (q[:, 3] >= 0).all() and torch.allclose(q.norm(dim=-1), torch.ones(201, dtype=torch.float64))
    assert torch.allclose(quaternion_to_matrix(q), rots, atol=1e-12)


def test_rotation_angle_small_and_pi(synth):
    angles = torch.tensor([1e-7, 0.3, 2.0, math.pi - 1e-6], dtype=torch.float64)
    axis = torch.nn.functional.normalize(torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64), dim=0)
    rots = synth.axis_angle(angles[:, None] * axis)
    assert torch.allclose(rotation_angle(rots), angles, rtol=1e-8, atol=1e-14)


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError):
        unproject_depth(torch.ones(1, 2, 4, 4), torch.eye(3).expand(1, 3, 3, 3))
    with pytest.raises(InputError):
        normalize_intrinsics(torch.eye(3), (0, 4))
    with pytest.raises(InputError):
        quaternion_to_matrix(torch.zeros(4))
    with pytest.raises(InputError):
        project_points(torch.ones(2, 5, 3), torch.eye(3).expand(3, 3, 3))
