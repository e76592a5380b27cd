"""Frame-to-frame motion from the shared matching: exact two-view geometry on generated flow fields."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from einops import rearrange
from l4p_head_pose.odometry import compose_window, matched_window_poses, pair_motion, window_motion

from l4p_framework.matching import MatchFeatures

H, W = 120, 160
K = torch.tensor([[140.0, 0.0, 80.0], [0.0, 140.0, 60.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def rot_y(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def matches_for(R: torch.Tensor, t: torch.Tensor) -> MatchFeatures:
    """Backward flow of frame 1 -> 0 for X_1 = R X_0 + t over a scene whose depth varies 2..6 (2 frames)."""
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).double()  # (H, W, 3)
    depth = 2 + 4 * (0.5 + 0.5 * torch.sin(xs / 9.0) * torch.cos(ys / 13.0)).double()
    X1 = depth[..., None] * (pix @ torch.linalg.inv(K).T)
    X0 = (X1 - t.double()) @ R.double()  # R^T (X1 - t), row vectors
    x0 = X0 @ K.T
    flow = torch.stack([x0[..., 0] / x0[..., 2] - xs, x0[..., 1] / x0[..., 2] - ys], 0).float()  # (2, H, W)
    backward = torch.stack([torch.zeros_like(flow), flow], 1)[None]  # (1, 2, 2, H, W)
    none = torch.zeros(1, 1, 2, H, W, dtype=torch.bool)
    return MatchFeatures(torch.zeros_like(backward), backward, none, none, torch.ones(1, 1, 2, H, W))


def angle_deg(R: torch.Tensor) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, (float(torch.trace(R)) - 1) / 2))))


def test_rotation_and_translation_direction_are_recovered():
    R_true, t_true = rot_y(2.0).double(), torch.tensor([0.05, -0.01, 0.02], dtype=torch.float64)
    R, direction, parallax, ok = pair_motion(matches_for(R_true, t_true), K.expand(1, 2, 3, 3))
    assert bool(ok[0, 1]) and float(parallax[0, 1]) > 1.0
    assert angle_deg(R[0, 1] @ R_true.T) < 0.05
    assert float(direction[0, 1] @ (t_true / t_true.norm())) > 0.995


def test_a_pan_is_rotation_only_and_turns_the_camera_the_right_way():
    """A camera panning right (its optical axis turns towards +x of the first camera): X_1 = rot_y(3)^T X_0."""
    R, direction, parallax, ok = pair_motion(matches_for(rot_y(3.0).T, torch.zeros(3)), K.expand(1, 2, 3, 3))
    assert bool(ok[0, 1]) and float(parallax[0, 1]) < 0.3 and float(direction[0, 1].norm()) == 0.0
    decoder = torch.eye(4).repeat(1, 2, 1, 1)
    decoder[0, 1, 0, 3] = 0.1  # the decoder's step length is used, its direction is not
    poses = compose_window(R, direction, ok, decoder)
    axis = poses[0, 1, :3, 2]  # the second camera's optical axis in the first camera's frame
    assert float(axis[0]) > 0.05 and abs(float(axis[1])) < 1e-3
    assert float(poses[0, 1, :3, 3].norm()) < 1e-9  # rotation only: the camera does not move


def test_pairs_without_usable_points_keep_the_decoders_motion():
    matches = matches_for(rot_y(1.0).T, torch.zeros(3))
    matches.confidence.zero_()  # no texture anywhere
    R, direction, _, ok = pair_motion(matches, K.expand(1, 2, 3, 3))
    assert not bool(ok[0, 1])
    decoder = torch.eye(4).repeat(1, 2, 1, 1)
    decoder[0, 1, :3, 3] = torch.tensor([0.3, 0.0, 0.1])
    torch.testing.assert_close(compose_window(R, direction, ok, decoder), decoder)


@pytest.mark.parametrize("step_deg", [0.8, -0.8])
def test_the_shipped_model_recovers_a_pan_and_its_direction(step_deg):
    """A camera panning 0.8 deg per frame about its vertical axis (frames warped from one wide view by
    the rotation homography): the shipped pose head (shared matching) turns the right way by the
    right angle and stays in place; without the matching the ray decoder barely turns."""
    import cv2

    from l4p_framework import L4P
    from l4p_framework.cli.common import REPO_REGISTRY

    rng = np.random.default_rng(0)
    f, h, w = 130.0, 120, 160
    wide = cv2.GaussianBlur(rng.integers(0, 255, (3 * h, 3 * w, 3), dtype=np.uint8), (0, 0), 1.2)
    K_wide = np.array([[f, 0, 1.5 * w], [0, f, 1.5 * h], [0, 0, 1]])
    K_frame = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    frames = [
        cv2.warpPerspective(
            wide,
            K_wide
            @ rot_y(step_deg * t).double().numpy()
            @ np.linalg.inv(K_frame),  # frame pixel -> wide view
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        )
        for t in range(24)
    ]
    video = rearrange(torch.from_numpy(np.stack(frames)), "t h w c -> 1 c t h w").float() / 255
    yaws = {}
    for matching in ("shared", "none"):
        model = L4P.from_registry(
            REPO_REGISTRY, heads=["pose"], overrides=[f"heads.pose.params.matching={matching}"]
        ).eval()
        with torch.no_grad():
            poses = model(video)["pose"]["poses"][0]
        axis = poses[-1, :3, 2]  # the last camera's optical axis in the first camera's frame
        yaws[matching] = math.degrees(math.atan2(float(axis[0]), float(axis[2])))
        if matching == "shared":
            assert float(poses[-1, :3, 3].norm()) < 1e-3  # a pan: the camera stays in place
    assert yaws["shared"] == pytest.approx(23 * step_deg, abs=2.0)
    assert abs(yaws["none"]) < 2.0  # what the ray decoder alone does: (almost) no turn


def _synth4d_window(num_frames: int = 16):
    """A 128x160 synth4d test clip whose objects stand still (the camera moves) and its exact matches from
    the GT flow (moving objects are outliers of any camera fit: the end-to-end tests have them)."""
    from l4p_framework.data.synth4d.dataset import Synth4D

    clip = Synth4D(
        "test",
        num_frames=num_frames,
        height=128,
        width=160,
        num_queries=0,
        min_objects=4,
        max_object_speed=0.0,
        max_object_spin=0.0,
    )[0]
    forward, backward = clip["flow_forward"][None], clip["flow"][None]
    matches = MatchFeatures(
        forward,
        backward,
        (forward == 0).all(1, keepdim=True),
        ~clip["flow_valid"][None].bool(),
        torch.ones_like(forward[:, :1]),
    )
    poses = torch.linalg.inv(clip["poses"][:1].double()) @ clip["poses"].double()  # relative to frame 0
    return matches, clip["intrinsics"][None].double(), poses


def test_the_window_fit_recovers_a_moving_cameras_rotations_and_path_direction():
    matches, K, truth = _synth4d_window()
    poses, ok, K_used = window_motion(matches, K)
    assert bool(ok[0]) and torch.equal(K_used, K)
    for f in range(1, truth.shape[0]):
        assert angle_deg(poses[0, f, :3, :3].T @ truth[f, :3, :3]) < 0.1, f
    # the unit-baseline centres point where the true ones do
    cos = torch.nn.functional.cosine_similarity(poses[0, 1:, :3, 3], truth[1:, :3, 3], dim=-1)
    assert float(cos.min()) > 0.99


@pytest.mark.parametrize("wrong_by", [0.7, 1.4])
def test_self_calibration_recovers_the_focal_length_from_the_tracks(wrong_by):
    matches, K, truth = _synth4d_window()
    start = K.clone()
    start[..., :2, :2] *= wrong_by
    poses, ok, calibrated = window_motion(matches, start, calibrate=True)
    assert bool(ok[0])
    assert abs(float(calibrated[0, 0, 0, 0] / K[0, 0, 0, 0]) - 1) < 0.05
    centre = torch.tensor([160 / 2, 128 / 2], dtype=torch.float64)
    torch.testing.assert_close(calibrated[0, :, :2, 2], centre.expand(16, 2))  # a centred pinhole
    assert angle_deg(poses[0, -1, :3, :3].T @ truth[-1, :3, :3]) < 0.3


def test_a_window_without_texture_falls_back_to_the_decoders_motion():
    matches, K, _ = _synth4d_window(4)
    matches.confidence.zero_()
    decoder = torch.eye(4, dtype=torch.float64).repeat(1, 4, 1, 1)
    decoder[0, :, 0, 3] = torch.arange(4) * 0.1
    poses, K_used = matched_window_poses(matches, K, decoder, calibrate=True)
    torch.testing.assert_close(poses, decoder)
    assert torch.equal(K_used, K)


def test_frames_too_small_to_calibrate_keep_the_given_focal_length():
    matches, K, _ = _synth4d_window(6)
    small = MatchFeatures(
        *(rearrange(x, "b c t h w -> b c t h w")[..., :100, :] for x in vars(matches).values())
    )
    start = K.clone()
    start[..., :2, :2] *= 1.3
    _, _, K_used = window_motion(small, start, calibrate=True)
    assert torch.equal(K_used, start)


def _projected_tracks(centres: np.ndarray, yaw_deg: np.ndarray, noise_px: float, seed: int = 0):
    """Tracks (P, T, 2) of random points 2-6 units in front of a camera at centres (T, 3) turned by
    yaw_deg (T,) about its vertical axis (frame 0 at the origin, unturned), with Gaussian pixel noise;
    returns tracks, seen (P, T) and the true camera-to-frame-0 poses (T, 4, 4)."""
    rng = np.random.default_rng(seed)
    K_np = K.numpy()
    pixels = rng.uniform([5, 5], [W - 5, H - 5], (600, 2))
    X = rng.uniform(2, 6, (600, 1)) * (np.concatenate([pixels, np.ones((600, 1))], 1) @ np.linalg.inv(K_np).T)
    poses = np.tile(np.eye(4), (len(centres), 1, 1))
    poses[:, :3, :3] = np.stack([rot_y(float(a)).double().numpy() for a in yaw_deg])
    poses[:, :3, 3] = centres
    world_to_camera = np.linalg.inv(poses)
    camera = np.einsum("tij,pj->pti", world_to_camera[:, :3, :3], X) + world_to_camera[None, :, :3, 3]
    uv = np.einsum("ij,ptj->pti", K_np, camera)
    tracks = uv[..., :2] / uv[..., 2:] + rng.normal(0, noise_px, (600, len(centres), 2))
    tracks[:, 0] = pixels
    return tracks, np.ones(tracks.shape[:2], dtype=bool), poses


def test_a_camera_that_steps_aside_and_back_is_no_pan_and_keeps_its_direction():
    """The camera moves 0.3 units sideways and returns by the window's last frame while turning a
    little: frame 0 and the last frame alone look like a pan (the old single-reference fit returned no
    translation at all). The multi-reference fit recovers the sideways path, to within 10 deg."""
    from l4p_head_pose.odometry import _window_fit

    t = np.arange(16)
    centres = np.stack([0.3 * np.sin(np.pi * t / 15), 0.02 * t / 15, 0 * t], -1)
    tracks, seen, truth = _projected_tracks(centres, 1.5 * t / 15, noise_px=0.2)
    poses = _window_fit(tracks, seen, np.broadcast_to(K.numpy(), (16, 3, 3)))
    assert poses is not None
    middle = poses[4:12, :3, 3]
    cos = (
        (middle * truth[4:12, :3, 3]).sum(-1)
        / np.linalg.norm(middle, axis=-1)
        / np.linalg.norm(truth[4:12, :3, 3], axis=-1)
    )
    assert cos.min() > math.cos(math.radians(10)), cos
    for f in range(16):
        assert angle_deg(torch.from_numpy(poses[f, :3, :3].T @ truth[f, :3, :3])) < 0.3, f
