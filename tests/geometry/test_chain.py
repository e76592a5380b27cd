"""Chaining windowed trajectories (each in its own first camera and scale) into one trajectory."""

from __future__ import annotations

import pytest
import torch

from l4p_framework.errors import InputError
from l4p_framework.geometry import (
    chain_windows,
    invert_pose,
    make_intrinsics,
    relative_to_first,
    to_world,
    unproject_depth,
)
from l4p_framework.metrics.pose import ate

T, WIN, STRIDE = 40, 16, 8
STARTS = list(range(0, T - WIN + 1, STRIDE))  # 0, 8, 16, 24


def _windows(gt: torch.Tensor, scales: torch.Tensor) -> list[torch.Tensor]:
    """Each window re-expressed in its own first camera, translations multiplied by scales[w]."""
    out = []
    for w, s0 in enumerate(STARTS):
        rel = invert_pose(gt[:, s0 : s0 + 1]) @ gt[:, s0 : s0 + WIN]
        rel[..., :3, 3] *= scales[w]
        out.append(rel.float())
    return out


@pytest.mark.parametrize("method", ["poses", "centres"])
def test_chain_recovers_trajectory_up_to_one_sim3(synth, method):
    gt = synth.smooth_poses(2, T, seed=11, rot_amp=0.5, trans_amp=2.0)
    scales = 0.2 + 3.0 * torch.rand(
        len(STARTS), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    res = chain_windows(_windows(gt, scales), STARTS, method=method)
    assert res.poses.shape == (2, T, 4, 4) and res.s.shape == (2, len(STARTS)) and res.success.all()
    for b in range(2):
        assert ate(res.poses[b], gt[b]) < 1e-4
    # Window 0 defines frame and scale: the result is the GT relative to frame 0 at window 0's scale.
    expect = relative_to_first(gt)
    expect[..., :3, 3] *= scales[0]
    assert (res.poses.double() - expect).abs().max() < 1e-4
    # The returned scale of window w maps its own units into window 0's.
    assert torch.allclose(res.s.double(), (scales[0] / scales).expand(2, -1), rtol=1e-4)


def test_chain_with_point_maps_and_outliers(synth):
    b, h, w = 1, 6, 8
    gt = synth.smooth_poses(b, T, seed=12, rot_amp=0.4)
    g = torch.Generator().manual_seed(1)
    K = make_intrinsics(10.0, 10.0, 4.0, 3.0).expand(b, T, 3, 3).double()
    depth = 2.0 + 3.0 * torch.rand(b, T, h, w, generator=g, dtype=torch.float64)
    world = to_world(unproject_depth(depth, K), gt)  # (B, T, H, W, 3)
    scales = torch.tensor([1.0, 0.5, 2.0, 3.0], dtype=torch.float64)
    wins, pts, valid = _windows(gt, scales), [], []
    for k, s0 in enumerate(STARTS):
        local = to_world(world[:, s0 : s0 + WIN], invert_pose(gt[:, s0 : s0 + 1]).expand(b, WIN, 4, 4))
        local = local * scales[k]
        bad = torch.rand(b, WIN, h, w, generator=g) < 0.2
        local = torch.where(
            bad[..., None], local + 5.0 * torch.randn(local.shape, generator=g, dtype=torch.float64), local
        )
        pts.append(local.float())
        valid.append(torch.rand(b, WIN, h, w, generator=g) > 0.1)
    res = chain_windows(wins, STARTS, points=pts, valid=valid, frame_step=3, seed=0)
    assert res.success.all()
    assert ate(res.poses[0], gt[0]) < 1e-4
    assert torch.allclose(res.s[0].double(), scales[0] / scales, rtol=1e-4)
    # Same seed, same answer.
    again = chain_windows(wins, STARTS, points=pts, valid=valid, frame_step=3, seed=0)
    assert torch.equal(again.poses, res.poses)


def test_chain_overlap_rule(synth):
    gt = synth.smooth_poses(1, 24, seed=13)
    w0 = relative_to_first(gt[:, :16])
    w1 = invert_pose(gt[:, 8:9]) @ gt[:, 8:24]
    w1_noisy = w1.clone()
    w1_noisy[:, 3, :3, 3] += 0.01  # disagree on one overlap frame (global frame 11)
    later = chain_windows([w0, w1_noisy], [0, 8], keep="later")
    earlier = chain_windows([w0, w1_noisy], [0, 8], keep="earlier")
    assert torch.equal(earlier.poses[:, :16], w0)  # earlier windows keep the overlap
    moved = later.poses[:, 11, :3, 3] - earlier.poses[:, 11, :3, 3]
    assert moved.norm() > 5e-3  # the later window overwrote it
    assert torch.allclose(later.poses[:, 16:], earlier.poses[:, 16:])


def test_chain_errors():
    eye = torch.eye(4).expand(1, 8, 4, 4)
    with pytest.raises(InputError):
        chain_windows([eye, eye], [0, 8])  # no overlap
    with pytest.raises(InputError):
        chain_windows([eye, eye], [0])
    with pytest.raises(InputError):
        chain_windows([eye, eye], [4, 2])


def test_chain_points_ransac_failure_falls_back_to_poses(synth):
    gt = synth.smooth_poses(1, 24, seed=14)
    wins = [relative_to_first(gt[:, :16]), invert_pose(gt[:, 8:9]) @ gt[:, 8:24]]
    wins[1][..., :3, 3] *= 2.0
    g = torch.Generator().manual_seed(2)
    pts = [
        torch.randn(1, 16, 4, 4, 3, generator=g, dtype=torch.float64) for _ in range(2)
    ]  # unrelated clouds
    res = chain_windows(wins, [0, 8], points=pts, threshold=1e-4)
    assert res.success.tolist() == [[True, False]]
    assert abs(res.s[0, 1].item() - 0.5) < 1e-9 and ate(res.poses[0], gt[0]) < 1e-6
