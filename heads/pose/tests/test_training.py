"""Loss targets, scale-free normalisation, metrics and a short training run of the pose head."""

from __future__ import annotations

import math

import torch
from l4p_head_pose import PoseConfig, first_frame_depth_scale, pose_head_spec, ray_targets, solve_rays

from l4p_framework import L4P
from l4p_framework.geometry import plucker_rays, relative_to_first
from l4p_framework.testing import tiny_batch, tiny_encoder


def test_targets_follow_plucker_rays_and_are_scale_free():
    batch = tiny_batch()
    raw, unit = ray_targets(batch, (8, 8), depth_normalized=False)
    expected = plucker_rays(batch["intrinsics"], batch["poses"], (8, 8), (64, 64))
    assert torch.allclose(raw, expected, atol=1e-6) and torch.equal(unit, torch.ones(1, dtype=torch.float64))
    norm, unit = ray_targets(batch, (8, 8))
    med = batch["depth"][0, 0, 0].double().median()
    assert torch.allclose(unit, med.reshape(1), rtol=1e-6)
    assert torch.allclose(norm[:, :3], raw[:, :3]) and torch.allclose(
        norm[:, 3:] * unit.float(), raw[:, 3:], atol=1e-5
    )
    # the same scene at 3x the size gives the same normalised targets
    big = dict(batch)
    big["poses"] = batch["poses"].clone()
    big["poses"][..., :3, 3] *= 3.0
    big["depth"] = batch["depth"] * 3.0
    assert torch.allclose(ray_targets(big, (8, 8))[0], norm, atol=1e-5)
    # and they solve back to the GT cameras (translation in units of the first-frame median depth)
    poses, K = solve_rays(norm, "fixed", image_size=(64, 64))
    rel = relative_to_first(batch["poses"].double())
    assert torch.allclose(poses[..., :3, 3].double() * unit, rel[..., :3, 3], atol=1e-4)
    assert torch.allclose(K, batch["intrinsics"], rtol=1e-4, atol=1e-3)


def test_first_frame_depth_scale_ignores_invalid_pixels():
    batch = tiny_batch()
    depth = batch["depth"].clone()
    depth[:, :, 0, :32] = 0.0
    scale = first_frame_depth_scale({"depth": depth})
    assert torch.allclose(scale, batch["depth"][0, 0, 0, 32:].double().median().reshape(1))
    assert first_frame_depth_scale({}) is None
    assert first_frame_depth_scale({"depth": torch.zeros(1, 1, 2, 4, 4)}).item() == 1.0


def test_perfect_prediction_has_zero_loss_and_metrics():
    spec, config = pose_head_spec(), PoseConfig(moment_scale=3.0)
    batch = tiny_batch()
    rays, _ = ray_targets(batch, (8, 8))
    poses, K = solve_rays(rays, "fixed", image_size=(64, 64))
    outputs = {"rays": rays, "poses": poses, "intrinsics": K}
    losses = spec.loss(outputs, batch, config)
    assert set(losses) == {"loss", "dir_l1", "moment_l1"} and losses["loss"].item() < 1e-6
    metrics = spec.metrics(outputs, batch)
    assert metrics["ate"] < 1e-5 and metrics["rpe_rot_mean_deg"] < 1e-3
    assert metrics["focal_rel_err"] < 1e-5 and metrics["focal_rel_err_rays"] < 1e-5
    single = spec.metrics({k: v[:, :1] for k, v in outputs.items()}, {k: batch[k][:, :1] for k in ("poses",)})
    assert math.isnan(single["ate"])  # one frame: no trajectory metric, no crash


def test_loss_decreases_with_adamw():
    torch.manual_seed(0)
    spec, config = pose_head_spec(), PoseConfig()
    batch = tiny_batch()
    model = L4P(tiny_encoder())
    head = model.add_head(spec, config)
    with torch.no_grad():
        features = model.encode(batch["video"]).select(model.layers_of(spec, config))
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = spec.loss(head(features, batch), batch, config)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses
