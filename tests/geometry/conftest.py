"""Shared synthetic cameras for the geometry tests (float64 ground truth, seeded)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from l4p_framework.geometry import make_intrinsics, make_pose, skew_matrix


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues: (..., 3) axis * angle (radians) -> (..., 3, 3)."""
    angle = aa.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    k = skew_matrix(aa / angle)
    eye = torch.eye(3, dtype=aa.dtype).expand(k.shape)
    return eye + torch.sin(angle)[..., None] * k + (1 - torch.cos(angle))[..., None] * (k @ k)


def smooth_poses(b: int, t: int, seed: int = 0, rot_amp: float = 0.4, trans_amp: float = 1.0) -> torch.Tensor:
    """(B, T, 4, 4) float64 camera-to-world poses on smooth random curves (sums of sinusoids)."""
    g = torch.Generator().manual_seed(seed)
    time = torch.linspace(0, 1, t, dtype=torch.float64)
    freq = 0.5 + 1.5 * torch.rand(b, 6, generator=g, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(b, 6, generator=g, dtype=torch.float64)
    amp = torch.rand(b, 6, generator=g, dtype=torch.float64)
    wave = amp[:, None] * torch.sin(2 * math.pi * freq[:, None] * time[None, :, None] + phase[:, None])
    rot = axis_angle_to_matrix(rot_amp * wave[..., :3])
    drift = torch.randn(b, 1, 3, generator=g, dtype=torch.float64) * time[None, :, None]
    centre = trans_amp * (wave[..., 3:] + drift)
    return make_pose(rot, centre)


def random_intrinsics(
    b: int, t: int, size: tuple[int, int], seed: int = 0, shared: bool = False
) -> torch.Tensor:
    """(B, T, 3, 3) float64 K in pixels of `size` = (H, W): fx, fy in [0.7, 1.3] * W, cx, cy near centre."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    n = 1 if shared else t
    fx = w * (0.7 + 0.6 * torch.rand(b, n, generator=g, dtype=torch.float64))
    fy = fx * (0.95 + 0.1 * torch.rand(b, n, generator=g, dtype=torch.float64))
    cx = w / 2 + 0.05 * w * torch.randn(b, n, generator=g, dtype=torch.float64)
    cy = h / 2 + 0.05 * h * torch.randn(b, n, generator=g, dtype=torch.float64)
    return make_intrinsics(fx, fy, cx, cy).expand(b, t, 3, 3).clone()


@pytest.fixture
def synth():
    return SimpleNamespace(
        smooth_poses=smooth_poses, random_intrinsics=random_intrinsics, axis_angle=axis_angle_to_matrix
    )
