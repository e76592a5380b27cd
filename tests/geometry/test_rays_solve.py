"""Plücker rays and the inverse solve (poses + intrinsics), round trips for all intrinsics modes."""

from __future__ import annotations

import pytest
import torch

from l4p_framework.errors import InputError
from l4p_framework.geometry import (
    fit_homography_dlt,
    make_intrinsics,
    normalize_intrinsics,
    plucker_rays,
    rays_to_cameras,
    relative_to_first,
    rq_decompose,
    split_rays,
)

CONFIGS = [((16, 16), (224, 224)), ((9, 16), (288, 512)), ((12, 8), (240, 160))]


def _k_for_mode(synth, mode, b, t, size, seed):
    return synth.random_intrinsics(b, t, size, seed=seed, shared=(mode == "fixed"))


def test_plucker_ray_properties(synth):
    poses = synth.smooth_poses(2, 4, seed=0)
    K = synth.random_intrinsics(2, 4, (224, 224), seed=0)
    rays = plucker_rays(K.float(), poses.float(), (16, 16), (224, 224))
    assert rays.shape == (2, 6, 4, 16, 16) and rays.dtype == torch.float32
    d, m = split_rays(rays.double())
    assert torch.allclose(d.norm(dim=-1), torch.ones(2, 4, 256, dtype=torch.float64), atol=1e-6)
    assert (d * m).sum(-1).abs().max() < 1e-6  # m = o x d is orthogonal to d
    assert m[:, 0].abs().max() < 1e-7  # frame 0 is the reference: centre at the origin
    # Frame 0, cell (row 5, col 3): direction K16^-1 [3.5, 5.5, 1] (cell centres at +0.5, grid pixels).
    k16 = K[:, 0].clone()
    k16[:, :2] *= 16 / 224
    expect = torch.linalg.solve(k16, torch.tensor([3.5, 5.5, 1.0], dtype=torch.float64).expand(2, 3))
    expect = expect / expect.norm(dim=-1, keepdim=True)
    assert torch.allclose(rays[:, :3, 0, 5, 3].double(), expect, atol=1e-6)
    # Moments of frame t are c_t x d with c_t the centre relative to frame 0.
    rel = relative_to_first(poses)
    assert torch.allclose(
        m[:, 2], torch.cross(rel[:, 2, None, :3, 3].expand(-1, 256, -1), d[:, 2], dim=-1), atol=1e-6
    )


@pytest.mark.parametrize("mode", ["known", "fixed", "per_frame"])
@pytest.mark.parametrize("grid,size", CONFIGS)
def test_round_trip_all_modes(synth, mode, grid, size):
    b, t = 2, 6
    poses = synth.smooth_poses(b, t, seed=1, rot_amp=0.6)
    K = _k_for_mode(synth, mode, b, t, size, seed=2)
    rays = plucker_rays(K.float(), poses.float(), grid, size)
    est, k_est = rays_to_cameras(
        rays, mode=mode, K_known=K.float() if mode == "known" else None, image_size=size
    )
    assert est.shape == (b, t, 4, 4) and k_est.shape == (b, t, 3, 3) and est.dtype == torch.float32
    assert (est.double() - relative_to_first(poses)).abs().max() < 1e-5
    k_err = normalize_intrinsics(k_est.double(), size) - normalize_intrinsics(K, size)
    assert k_err.abs().max() < 1e-5
    assert (k_est.double() - K).abs().max() < 1e-4 * max(size)  # pixels
    assert k_est[..., 0, 1].abs().max() < 1e-3  # zero skew recovered (kept, not forced)


def test_round_trip_large_rotations_per_frame_and_any_world(synth):
    # Rotations up to ~100 degrees from frame 0 (rays with d_z ~ 0 in the reference frame), poses given in
    # an arbitrary world: the solver returns them relative to the first camera.
    b, t = 2, 8
    poses = synth.smooth_poses(b, t, seed=4, rot_amp=1.8, trans_amp=3.0)
    K = synth.random_intrinsics(b, t, (224, 224), seed=5)
    rays = plucker_rays(K.float(), poses.float(), (16, 16), (224, 224))
    est, k_est = rays_to_cameras(rays, mode="per_frame", image_size=(224, 224))
    assert (est.double() - relative_to_first(poses)).abs().max() < 1e-5
    assert (
        normalize_intrinsics(k_est.double(), (224, 224)) - normalize_intrinsics(K, (224, 224))
    ).abs().max() < 1e-5


def test_non_unit_directions_same_lines(synth):
    poses = synth.smooth_poses(1, 4, seed=6)
    K = synth.random_intrinsics(1, 4, (224, 224), seed=6, shared=True)
    rays = plucker_rays(K, poses, (16, 16), (224, 224))  # float64 in, float64 out
    lam = 0.5 + torch.rand(1, 1, 4, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    est, k_est = rays_to_cameras(rays * lam, mode="fixed", image_size=(224, 224))
    assert est.dtype == torch.float64
    assert (est - relative_to_first(poses)).abs().max() < 1e-10
    assert (k_est - K).abs().max() < 1e-8


def test_robust_iterations_resist_outlier_rays(synth):
    b, t = 2, 4
    poses = synth.smooth_poses(b, t, seed=1)
    K = synth.random_intrinsics(b, t, (224, 224), seed=2, shared=True)
    rays = plucker_rays(K.float(), poses.float(), (16, 16), (224, 224))
    g = torch.Generator().manual_seed(0)
    noisy = rays.clone()
    noisy[:, :3] += 0.002 * torch.randn(noisy[:, :3].shape, generator=g)
    bad = torch.rand(b, 1, t, 16, 16, generator=g) < 0.1
    noisy[:, :3] = torch.where(
        bad, noisy[:, :3] + 0.5 * torch.randn(noisy[:, :3].shape, generator=g), noisy[:, :3]
    )
    rel = relative_to_first(poses)
    for mode in ("fixed", "per_frame"):
        errs = {}
        for iters in (0, 5):
            est, k_est = rays_to_cameras(noisy, mode=mode, image_size=(224, 224), robust_iters=iters)
            errs[iters] = ((k_est.double() - K).abs().max(), (est.double() - rel).abs().max())
        assert errs[5][0] < 2.0 and errs[5][1] < 0.01  # pixels; rotation entries / centre units
        assert errs[0][0] > 10 * errs[5][0] and errs[0][1] > 10 * errs[5][1]


def test_rq_and_homography_exact():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(5, 3, 3, dtype=torch.float64, generator=g)
    upper, orth = rq_decompose(m)
    assert torch.allclose(upper @ orth, m, atol=1e-12)
    assert torch.allclose(torch.tril(upper, -1), torch.zeros_like(upper))
    assert (upper.diagonal(dim1=-2, dim2=-1) > 0).all()
    assert torch.allclose(orth @ orth.mT, torch.eye(3, dtype=torch.float64).expand(5, 3, 3), atol=1e-12)
    h_true = torch.randn(3, 3, dtype=torch.float64, generator=g)
    xy = torch.rand(20, 2, dtype=torch.float64, generator=g) * 100
    dst = torch.cat([xy, torch.ones(20, 1, dtype=torch.float64)], -1) @ h_true.T
    h = fit_homography_dlt(
        xy, dst * torch.randn(20, 1, dtype=torch.float64, generator=g)
    )  # any per-point sign
    h_ref = h_true / h_true.norm() * torch.sign(torch.linalg.det(h_true))
    assert torch.allclose(h, h_ref, atol=1e-10)


def test_known_mode_accepts_shared_k_and_errors(synth):
    poses = synth.smooth_poses(2, 3, seed=7)
    K = make_intrinsics(180.0, 190.0, 110.0, 115.0).expand(2, 3, 3, 3)
    rays = plucker_rays(K, poses.float(), (16, 16), (224, 224))
    est, k_est = rays_to_cameras(rays, mode="known", K_known=K[:, 0], image_size=(224, 224))
    assert torch.equal(k_est, K) and (est.double() - relative_to_first(poses)).abs().max() < 1e-5
    with pytest.raises(InputError):
        rays_to_cameras(rays, mode="known")
    with pytest.raises(InputError):
        rays_to_cameras(rays, mode="bogus")
    with pytest.raises(InputError):
        rays_to_cameras(rays[:, :5], mode="fixed")
    with pytest.raises(InputError):
        rays_to_cameras(rays, mode="known", K_known=torch.eye(3).expand(3, 3, 3))
