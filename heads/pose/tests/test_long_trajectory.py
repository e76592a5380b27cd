"""The shipped pose head on long videos (issue 20): 240 frames, chained over 29 windows. Slow: each clip
is rendered and run at 240x320 (about a minute per clip on 2 cores)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from einops import rearrange

pytestmark = pytest.mark.slow

FRAMES = 240


@pytest.fixture(scope="module")
def shipped_pose():
    from l4p_framework import L4P
    from l4p_framework.cli.common import REPO_REGISTRY

    return L4P.from_registry(REPO_REGISTRY, heads=["pose"]).eval()


def _path_length(poses: torch.Tensor) -> float:
    return float((poses[1:, :3, 3] - poses[:-1, :3, 3]).norm(dim=-1).sum())


@pytest.mark.parametrize("clip", [0, 1, 2])
def test_a_long_moving_camera_keeps_its_scale_and_beats_a_static_camera(shipped_pose, clip):
    """Held-out synth4d clips whose camera moves throughout (a sinusoid per axis: it goes back and forth
    inside the room, so a wandering estimate drifts away from a path that returns). After the
    evaluation's Sim(3) alignment (evo's Umeyama) the predicted path is 0.5-2x the true one (measured
    0.81 / 0.92 / 0.60 on clips 0-2; 0.39-0.76 with one two-view start per window, whose mirror
    solutions sent whole windows 130 deg off), and with the first window's path as the unit too (the
    collapse of issue 20 gave ~0). ATE, RPE-trans and RPE-rot are below a static camera's."""
    from l4p_framework.data.synth4d.dataset import Synth4D
    from l4p_framework.metrics.pose import pose_metrics

    sample = Synth4D("test", num_frames=FRAMES, height=240, width=320, num_queries=0)[clip]
    with torch.no_grad():
        poses = shipped_pose(sample["video"][None])["pose"]["poses"][0].double()
    truth = sample["poses"].double()
    metrics = pose_metrics(poses[None], truth[None])
    static = pose_metrics(torch.eye(4, dtype=torch.float64).expand_as(truth)[None].clone(), truth[None])
    first_window_unit = _path_length(truth[:16]) / _path_length(poses[:16])
    assert 0.5 <= _path_length(poses) * first_window_unit / _path_length(truth) <= 2.0
    assert 0.5 <= _path_length(poses) * metrics["sim3_scale"] / _path_length(truth) <= 2.0
    assert metrics["ate"] < 0.9 * static["ate"], (metrics["ate"], static["ate"])
    assert metrics["rpe_trans_rmse"] < static["rpe_trans_rmse"]
    assert metrics["rpe_rot_rmse_deg"] < static["rpe_rot_rmse_deg"]


@pytest.mark.parametrize("step_deg", [0.12, -0.12])
def test_a_long_pan_turns_the_right_way_by_the_right_angle(shipped_pose, step_deg):
    """240 frames of a camera turning about its vertical axis (warped from one wide view): the last
    camera looks 28.7 deg to the side it turned to, within 15 %, and has not moved."""
    import cv2

    rng = np.random.default_rng(1)
    f, h, w = 130.0, 120, 160
    wide = cv2.GaussianBlur(rng.integers(0, 255, (3 * h, 3 * w, 3), dtype=np.uint8), (0, 0), 1.2)
    K_wide = np.array([[f, 0, 1.5 * w], [0, f, 1.5 * h], [0, 0, 1]])
    K_frame = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])

    def turned(deg: float) -> np.ndarray:
        a = math.radians(deg)
        R = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        homography = K_wide @ R @ np.linalg.inv(K_frame)  # frame pixel -> wide-view pixel
        return cv2.warpPerspective(wide, homography, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)

    frames = np.stack([turned(step_deg * t) for t in range(FRAMES)])
    video = rearrange(torch.from_numpy(frames), "t h w c -> 1 c t h w").float() / 255
    with torch.no_grad():
        poses = shipped_pose(video)["pose"]["poses"][0]
    axis = poses[-1, :3, 2]  # the last camera's optical axis in the first camera's frame
    yaw = math.degrees(math.atan2(float(axis[0]), float(axis[2])))
    assert yaw == pytest.approx(step_deg * (FRAMES - 1), rel=0.15)
    assert _path_length(poses.double()) < 1e-2
