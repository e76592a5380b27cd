"""The joint depth + pose alignment composite: known per-window Sim(3) distortions are undone."""

from __future__ import annotations

import pytest
import torch
from l4p_head_pose import (
    JointDepthPoseAligner,
    PoseConfig,
    flatten_poses,
    joint_depth_pose_alignment,
    joint_windowed,
    pose_head_spec,
    ray_targets,
)
from pydantic import BaseModel, ConfigDict
from torch import nn

from l4p_framework import L4P, DisparityAffineStitcher, OutputSpec
from l4p_framework.errors import PluginError
from l4p_framework.geometry import quaternion_to_matrix, relative_to_first, transform_poses
from l4p_framework.metrics.pose import ate
from l4p_framework.specs import HeadSpec
from l4p_framework.testing import tiny_batch, tiny_encoder

WINDOW, STARTS = 8, (0, 4, 8, 12)
SIGMAS = (1.7, 0.6, 2.5, 0.9)


@pytest.fixture(scope="module")
def gt():
    b = tiny_batch(frames=20)
    return {k: b[k] for k in ("video", "depth", "depth_valid", "intrinsics", "poses")}


def distortion(w: int):
    """A known Sim(3) per window: scale SIGMAS[w], a rotation and a translation."""
    gen = torch.Generator().manual_seed(100 + w)
    q = torch.randn(4, generator=gen, dtype=torch.float64)
    rot = quaternion_to_matrix((q / q.norm()).reshape(1, 4))
    return (
        torch.tensor([SIGMAS[w]], dtype=torch.float64),
        rot,
        torch.randn(1, 3, generator=gen, dtype=torch.float64),
    )


def make_windows(gt, outliers: float = 0.0, outlier_from: int = 0):
    """Per-window (depth, poses, K): GT relative to each window's first camera, then moved by distortion(w).

    A fraction `outliers` of the depth pixels of windows >= outlier_from gets random depths.
    """
    gen = torch.Generator().manual_seed(5)
    depth, poses, K = [], [], []
    for w, s in enumerate(STARTS):
        sig, rot, t = distortion(w)
        rel = relative_to_first(gt["poses"][:, s : s + WINDOW].double())
        poses.append(transform_poses(rel, sig, rot, t))
        d = gt["depth"][:, :, s : s + WINDOW].double() * sig
        if outliers > 0 and w >= outlier_from:
            bad = torch.rand(d.shape, generator=gen, dtype=torch.float64) < outliers
            noise = torch.rand(d.shape, generator=gen, dtype=torch.float64) * 3 * d.max()
            d = torch.where(bad, noise + 1e-3, d)
        depth.append(d.float())
        K.append(gt["intrinsics"][:, s : s + WINDOW])
    return depth, poses, K


def check_recovered(result, gt, tol=1e-4):
    assert result.poses.shape == (1, 20, 4, 4) and result.depth.shape == (1, 1, 20, 64, 64)
    assert ate(result.poses, gt["poses"]) < tol
    expected = SIGMAS[0] / torch.tensor(SIGMAS)
    assert torch.allclose(result.depth_factor[0].double(), expected.double(), rtol=tol)


def test_recovers_known_distortions(gt):
    depth, poses, K = make_windows(gt)
    result = joint_depth_pose_alignment(depth, poses, K, STARTS)
    check_recovered(result, gt)
    assert bool(result.success.all()) and result.starts == STARTS
    # depth and poses re-scaled by the same factor: every frame's depth is GT x sigma_0
    assert torch.allclose(result.depth, gt["depth"] * SIGMAS[0], rtol=1e-4)
    # the world is window 0's frame
    assert torch.allclose(result.poses[:, :WINDOW].double(), poses[0], atol=1e-5)


def test_recovers_with_30_percent_outliers(gt):
    depth, poses, K = make_windows(gt, outliers=0.3)
    result = joint_depth_pose_alignment(depth, poses, K, STARTS, pixel_step=2)
    check_recovered(result, gt)
    assert bool(result.success.all())


def test_all_outliers_fall_back_without_raising(gt):
    depth, poses, K = make_windows(gt, outliers=1.0, outlier_from=1)
    result = joint_depth_pose_alignment(depth, poses, K, STARTS)
    assert result.success[0].tolist() == [True, False, False, False]
    # the fallback is the pose fit, exact here because the poses are
    check_recovered(result, gt)
    # no valid depth at all in the overlap (zeros) and no overlap at all: still no exception
    zeros = [torch.zeros_like(d) for d in depth]
    assert not bool(joint_depth_pose_alignment(zeros, poses, K, STARTS).success[:, 1:].any())
    apart = joint_depth_pose_alignment(depth[:2], poses[:2], K[:2], (0, 8))
    assert apart.poses.shape == (1, 16, 4, 4) and torch.isfinite(apart.poses).all()


def test_batched_and_deterministic(gt):
    depth, poses, K = make_windows(gt, outliers=0.3)
    two = (
        [torch.cat([x, x]) for x in depth],
        [torch.cat([x, x]) for x in poses],
        [torch.cat([x, x]) for x in K],
    )
    r1 = joint_depth_pose_alignment(*two, STARTS, seed=3)
    r2 = joint_depth_pose_alignment(*two, STARTS, seed=3)
    assert torch.equal(r1.poses, r2.poses) and torch.equal(r1.depth, r2.depth)
    assert r1.poses.shape[0] == 2 and torch.allclose(r1.poses[0], r1.poses[1])
    assert flatten_poses(r1.poses).shape == (2, 16, 20)
    assert torch.equal(flatten_poses(r1.poses)[:, :, 3], r1.poses[:, 3].reshape(2, 16))


def test_options_are_checked():
    with pytest.raises(Exception, match="frame_step"):
        JointDepthPoseAligner(frame_step=0)
    with pytest.raises(Exception, match="depth_scale"):
        JointDepthPoseAligner(depth_scale="median")


# -- the windowed driver on a composed model with perfect stub heads ----------------------------------------


class _Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StubDepth(nn.Module):
    """Returns the window's GT depth at a different arbitrary scale per window (a relative-depth head)."""

    def __init__(self, depth: torch.Tensor):
        super().__init__()
        self.depth = depth
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, features, batch):
        s = batch["window"].start
        return {"depth": self.depth[:, :, s : s + WINDOW] * (1.0 + 0.25 * batch["window"].index)}


def stub_depth_spec() -> HeadSpec:
    return HeadSpec(
        name="depth",
        version="0",
        config_model=_Empty,
        layers=lambda info, config: [1],
        build=lambda info, config: nn.Identity(),
        loss=lambda o, b, c: {"loss": torch.zeros(())},
        metrics=lambda o, b: {},
        targets=("depth",),
        outputs=(OutputSpec("depth", "(B, 1, T, H, W)", "z-depth"),),
        stitcher=lambda config: DisparityAffineStitcher(),
    )


def test_joint_windowed_with_perfect_heads(gt):
    model = L4P(tiny_encoder(), window_stride=4)
    model.add_head(stub_depth_spec(), module=StubDepth(gt["depth"]))
    head = model.add_head(
        pose_head_spec(), PoseConfig()
    )  # depth_normalized_loss: translations in depth units

    def decode(features, batch):
        s = batch["window"].start
        sl = {k: gt[k][:, :, s : s + WINDOW] for k in ("video", "depth", "depth_valid")}
        sl.update({k: gt[k][:, s : s + WINDOW] for k in ("intrinsics", "poses")})
        return ray_targets(sl, head.grid)[0]

    head.decode = decode
    result = joint_windowed(model, gt["video"])  # depth_scale="pose_units" from the pose head's config
    assert ate(result.poses, gt["poses"]) < 1e-4
    unit = gt["depth"][0, 0, 0].median()
    assert torch.allclose(result.depth, gt["depth"] / unit, rtol=1e-4)
    assert bool(result.success.all())
    outputs = result.as_outputs()
    assert outputs["pose"]["poses"].shape == (1, 20, 4, 4) and outputs["depth"]["depth"].shape == (
        1,
        1,
        20,
        64,
        64,
    )
    known = joint_windowed(model, gt["video"], intrinsics=gt["intrinsics"])
    assert torch.equal(known.intrinsics, gt["intrinsics"]) and ate(known.poses, gt["poses"]) < 1e-4
    short = joint_windowed(model, gt["video"][:, :, :6])
    assert short.poses.shape == (1, 6, 4, 4) and short.depth.shape[2] == 6
    with pytest.raises(PluginError, match="flow"):
        joint_windowed(model, gt["video"], depth_head="flow")
