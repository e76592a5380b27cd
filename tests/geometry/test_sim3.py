"""Umeyama, seeded RANSAC Sim(3) with outliers and its guarded fallback."""

from __future__ import annotations

import math

import pytest
import torch

from l4p_framework.errors import InputError
from l4p_framework.geometry import apply_sim3, ransac_sim3, sim3_to_matrix, transform_poses, umeyama


def _known_sim3(synth, b, seed):
    g = torch.Generator().manual_seed(seed)
    s = 0.3 + 2.0 * torch.rand(b, dtype=torch.float64, generator=g)
    rot = synth.axis_angle(torch.randn(b, 3, dtype=torch.float64, generator=g))
    t = 3.0 * torch.randn(b, 3, dtype=torch.float64, generator=g)
    return s, rot, t


def test_umeyama_exact_batched_and_weighted(synth):
    s, rot, t = _known_sim3(synth, 3, seed=0)
    src = torch.randn(3, 50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dst = apply_sim3(src, s, rot, t)
    s2, r2, t2 = umeyama(src, dst)
    assert torch.allclose(s2, s, atol=1e-12) and torch.allclose(r2, rot, atol=1e-12)
    assert torch.allclose(t2, t, atol=1e-12)
    # Corrupt 10 points but give them zero weight: same answer.
    bad = dst.clone()
    bad[:, :10] += 5.0  # outliers in dst
    w = torch.ones(3, 50, dtype=torch.float64)
    w[:, :10] = 0
    s3, r3, _ = umeyama(src, bad, weights=w)
    assert torch.allclose(s3, s, atol=1e-12) and torch.allclose(r3, rot, atol=1e-12)
    # Rigid fit keeps s = 1; unbatched input drops B.
    s4, r4, _ = umeyama(
        src[0], apply_sim3(src[0], torch.tensor(1.0, dtype=torch.float64), rot[0], t[0]), with_scale=False
    )
    assert s4.shape == () and s4.item() == 1.0 and torch.allclose(r4, rot[0], atol=1e-12)


def test_sim3_matrix_and_pose_transform_agree(synth):
    s, rot, t = _known_sim3(synth, 2, seed=3)
    poses = synth.smooth_poses(2, 5, seed=3)
    moved = transform_poses(poses, s, rot, t)
    # pose' = T_sim @ pose with the rotation block divided by s.
    ref = sim3_to_matrix(s, rot, t)[:, None] @ poses
    ref[..., :3, :3] /= s[:, None, None, None]
    assert torch.allclose(moved, ref, atol=1e-12)
    assert torch.allclose(
        moved[..., :3, :3] @ moved[..., :3, :3].mT,
        torch.eye(3, dtype=torch.float64).expand(2, 5, 3, 3),
        atol=1e-12,
    )


def test_ransac_recovers_sim3_with_30_percent_outliers(synth):
    b, n = 2, 400
    s, rot, t = _known_sim3(synth, b, seed=4)
    g = torch.Generator().manual_seed(5)
    src = torch.randn(b, n, 3, dtype=torch.float64, generator=g)
    dst = apply_sim3(src, s, rot, t)
    outlier = torch.rand(b, n, generator=g) < 0.3
    dst = torch.where(
        outlier[..., None], dst + 2.0 + 3.0 * torch.rand(b, n, 3, dtype=torch.float64, generator=g), dst
    )
    fit = ransac_sim3(src.float(), dst.float(), threshold=0.01, seed=0)
    assert fit.success.all()
    assert torch.allclose(fit.s.double(), s, atol=1e-5) and torch.allclose(fit.R.double(), rot, atol=1e-5)
    assert torch.allclose(fit.t.double(), t, atol=1e-4)
    assert torch.equal(fit.inliers, ~outlier)
    resid = (apply_sim3(src, fit.s.double(), fit.R.double(), fit.t.double()) - dst).norm(dim=-1)
    assert resid[~outlier].max() < 1e-5  # inlier residual ~0 (float32 inputs)
    # Deterministic for a seed; unbatched input gives the same model as its batch row.
    again = ransac_sim3(src.float(), dst.float(), threshold=0.01, seed=0)
    assert torch.equal(again.s, fit.s) and torch.equal(again.R, fit.R)
    one = ransac_sim3(src[1], dst[1], threshold=0.01, seed=0, max_trials=200)
    assert bool(one.success) and one.s.shape == () and abs(one.s.item() - s[1].item()) < 1e-9


def test_ransac_subsampled_points(synth):
    s, rot, t = _known_sim3(synth, 1, seed=6)
    src = torch.randn(1, 5000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    dst = apply_sim3(src, s, rot, t)
    dst[:, ::3] += 10.0
    fit = ransac_sim3(src, dst, threshold=1e-3, max_points=500, seed=1)
    assert fit.success.all() and fit.inliers.shape == (1, 5000)
    assert fit.num_inliers.item() == 5000 - len(range(0, 5000, 3))
    assert torch.allclose(fit.s, s, atol=1e-10)


def test_ransac_all_outliers_falls_back_without_raising():
    g = torch.Generator().manual_seed(8)
    src = torch.rand(300, 3, generator=g)
    dst = torch.rand(300, 3, generator=g) * 4.0
    fit = ransac_sim3(src, dst, threshold=1e-3, seed=0)
    assert not bool(fit.success)
    assert torch.equal(fit.R, torch.eye(3)) and math.isfinite(fit.s.item()) and fit.s.item() > 0
    # Fallback scale = median ratio of distances to the median centroids.
    ns = (src - src.median(0).values).norm(dim=-1)
    nd = (dst - dst.median(0).values).norm(dim=-1)
    assert abs(fit.s.item() - (nd / ns).median().item()) < 1e-5
    # Too few points for a sample, and no points at all: fallbacks too.
    few = ransac_sim3(src[:2], dst[:2], threshold=0.1)
    assert not bool(few.success) and math.isfinite(few.s.item())
    none = ransac_sim3(torch.zeros(0, 3), torch.zeros(0, 3), threshold=0.1)
    assert not bool(none.success) and none.s.item() == 1.0 and none.inliers.shape == (0,)


def test_ransac_bad_inputs():
    with pytest.raises(InputError):
        ransac_sim3(torch.zeros(10, 3), torch.zeros(11, 3), threshold=0.1)
    with pytest.raises(InputError):
        ransac_sim3(torch.zeros(10, 3), torch.zeros(10, 3), threshold=0.0)
    with pytest.raises(InputError):
        ransac_sim3(torch.zeros(10, 3), torch.zeros(10, 3), threshold=0.1, min_samples=2)
