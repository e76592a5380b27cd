"""ATE / RPE against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from l4p_framework.errors import InputError
from l4p_framework.geometry import apply_sim3, make_pose, transform_poses
from l4p_framework.metrics.pose import align_trajectory, ate, pose_metrics, rpe


def _rz(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_constant_offset_and_global_sim3_give_zero(synth):
    gt = synth.smooth_poses(1, 20, seed=21)[0]
    shifted = gt.clone()
    shifted[:, :3, 3] += torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    m = pose_metrics(shifted, gt)
    assert m["ate"] < 1e-12 and m["rpe_trans_rmse"] < 1e-12 and m["rpe_rot_rmse_deg"] < 1e-5
    # A whole trajectory moved by a Sim(3) (other world, other scale) is also perfect after alignment.
    s = torch.tensor([2.5], dtype=torch.float64)
    rot = synth.axis_angle(torch.tensor([[0.3, -0.2, 1.0]], dtype=torch.float64))
    moved = transform_poses(gt[None], s, rot, torch.tensor([[4.0, 0.0, -1.0]], dtype=torch.float64))[0]
    m = pose_metrics(moved, gt)
    assert m["ate"] < 1e-10 and m["rpe_trans_rmse"] < 1e-10 and m["rpe_rot_mean_deg"] < 1e-5
    assert abs(m["sim3_scale"] - 1 / 2.5) < 1e-12
    assert (align_trajectory(moved, gt) - gt).abs().max() < 1e-10


def test_one_displaced_frame_hand_computed():
    # GT centres: the origin and +-e_x, +-e_y, +-e_z (T = 7). Displacing the origin frame by delta keeps
    # the optimal rotation at I (cross-covariance = sum q q^T = 2 I), so with S = sum |q - mean|^2 = 6 and
    # a = |delta|^2 (T - 1) / T the Umeyama residual is S - S^2 / (S + a): ATE = sqrt((S - S^2/(S+a)) / T).
    centres = torch.tensor(
        [[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64
    )
    gt = make_pose(torch.eye(3, dtype=torch.float64).expand(7, 3, 3), centres)
    pred = gt.clone()
    delta = torch.tensor([0.3, 0.0, 0.4], dtype=torch.float64)  # |delta| = 0.5
    pred[0, :3, 3] += delta
    t, s_q = 7, 6.0
    a = 0.25 * (t - 1) / t
    expect = math.sqrt((s_q - s_q * s_q / (s_q + a)) / t)  # 0.171920...
    assert abs(ate(pred, gt) - expect) < 1e-12
    assert abs(expect - 0.17192) < 1e-5
    # Without the displacement there is no error; the alignment lowers the naive RMSE 0.5 / sqrt(7).
    assert ate(gt, gt) < 1e-12 and expect < 0.5 / math.sqrt(7)


def test_constant_extra_rotation_per_step_hand_computed(synth):
    # GT: identity rotations; prediction: same centres (so the alignment is the identity), rotation
    # Rz(i * theta) at frame i. Every relative error E_i = [Rz(theta) | Rz(-i theta) D_i - D_i], D_i the
    # GT step: RPE-rot = theta for every pair, RPE-trans_i = 2 |sin(i theta / 2)| |D_i,xy|.
    t, theta = 12, math.radians(2.0)
    centres = synth.smooth_poses(1, t, seed=22)[0, :, :3, 3]
    gt = make_pose(torch.eye(3, dtype=torch.float64).expand(t, 3, 3), centres)
    pred = make_pose(torch.stack([_rz(i * theta) for i in range(t)]), centres)
    out = rpe(pred, gt)
    assert abs(out["rpe_rot_rmse_deg"] - 2.0) < 1e-9 and abs(out["rpe_rot_mean_deg"] - 2.0) < 1e-9
    step = centres[1:] - centres[:-1]
    per = torch.tensor(
        [2 * abs(math.sin(i * theta / 2)) * step[i, :2].norm().item() for i in range(t - 1)],
        dtype=torch.float64,
    )
    assert abs(out["rpe_trans_mean"] - per.mean().item()) < 1e-12
    assert abs(out["rpe_trans_rmse"] - per.square().mean().sqrt().item()) < 1e-12
    assert ate(pred, gt) < 1e-12  # centres are exact


def test_batched_is_mean_of_sequences(synth):
    gt = synth.smooth_poses(3, 10, seed=23)
    g = torch.Generator().manual_seed(0)
    pred = gt.clone()
    pred[..., :3, 3] += 0.05 * torch.randn(3, 10, 3, generator=g, dtype=torch.float64)
    batched = pose_metrics(pred, gt)
    single = [pose_metrics(pred[i], gt[i]) for i in range(3)]
    lists = pose_metrics(pred, gt, per_sequence=True)
    for key in batched:
        assert abs(batched[key] - sum(m[key] for m in single) / 3) < 1e-12
        assert lists[key] == pytest.approx([m[key] for m in single], abs=1e-12)
    assert batched["ate"] > 0.01  # noise is visible
    # Scale of the prediction does not matter.
    scaled = pred.clone()
    scaled[..., :3, 3] *= 3.0
    assert abs(ate(scaled, gt) - batched["ate"]) < 1e-12


def test_metric_inputs_validated():
    eye = torch.eye(4).expand(5, 4, 4)
    with pytest.raises(InputError):
        ate(eye, torch.eye(4).expand(6, 4, 4))
    with pytest.raises(InputError):
        rpe(eye[:1], eye[:1])
    with pytest.raises(InputError):
        pose_metrics(torch.eye(3).expand(5, 3, 3), torch.eye(3).expand(5, 3, 3))


def test_apply_sim3_unbatched():
    p = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    out = apply_sim3(
        p,
        torch.tensor(2.0, dtype=torch.float64),
        _rz(math.pi / 2),
        torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
    )
    assert torch.allclose(out, torch.tensor([[0.0, 2.0, 1.0]], dtype=torch.float64), atol=1e-12)
