"""Plücker ray maps of a window of cameras (the camera head's target and its input to the pose solver).

A ray map holds, for every cell of an (h, w) grid over the image and every frame, a 6-vector
(d, m): d is the unit ray direction and m = o x d its moment (o = camera centre), both expressed in
the frame of the **first camera of the window** (poses are re-referenced so frame 0 is the identity).
Grid cell (i, j) looks through its centre (i + 0.5, j + 0.5) in grid pixels with the image's K
rescaled to the grid (continuous +0.5 convention; identical rays to the official code's
integer-centre grid with its shifted K). Moments are not normalised: their scale is the scene's.
"""

from __future__ import annotations

import torch
from einops import rearrange

from ..errors import InputError, check_tensor
from .camera import _check_size, pixel_centers, relative_to_first, rescale_intrinsics

__all__ = ["camera_directions", "plucker_rays", "rays_to_lines", "split_rays"]


def camera_directions(K_grid: torch.Tensor, grid: tuple[int, int], normalize: bool = True) -> torch.Tensor:
    """Camera-frame directions K^-1 [x, y, 1] through the centres of an (h, w) grid.

    K_grid: (..., 3, 3) intrinsics in grid pixels (+0.5 convention); grid: (h, w).
    Returns (..., h * w, 3) float64, row-major over the grid (index j * w + i), unit if `normalize`.
    """
    h, w = _check_size("grid", grid)
    xy = rearrange(pixel_centers((h, w), device=K_grid.device, dtype=torch.float64), "h w c -> (h w) c")
    homog = torch.cat([xy, torch.ones_like(xy[:, :1])], dim=-1)
    dirs = torch.einsum("...ij,nj->...ni", torch.linalg.inv(K_grid.double()), homog)
    return dirs / dirs.norm(dim=-1, keepdim=True) if normalize else dirs


def plucker_rays(
    K: torch.Tensor,
    poses: torch.Tensor,
    grid: tuple[int, int],
    image_size: tuple[int, int],
) -> torch.Tensor:
    """Plücker rays of every grid cell and frame, relative to the first camera of the window.

    K: (B, T, 3, 3) intrinsics in pixels of an image of `image_size` = (H, W) (+0.5 convention);
    poses: (B, T, 4, 4) camera-to-world (any world; re-referenced to frame 0 here);
    grid: (h, w) ray grid, e.g. (16, 16) for a 224x224 image.
    Returns (B, 6, T, h, w) in K's dtype: channels 0-2 unit direction d = R_t K_grid^-1 [x, y, 1] / norm,
    channels 3-5 moment m = c_t x d, with R_t, c_t the pose of frame t relative to frame 0.
    Computed in float64 and cast back.
    """
    check_tensor("K", K, "(B, T, 3, 3)", ndim=4)
    check_tensor("poses", poses, "(B, T, 4, 4)", ndim=4)
    if K.shape[-2:] != (3, 3) or poses.shape[-2:] != (4, 4) or K.shape[:2] != poses.shape[:2]:
        raise InputError(
            f"plucker_rays expects K (B, T, 3, 3) and poses (B, T, 4, 4) with the same B, T; got "
            f"{tuple(K.shape)} and {tuple(poses.shape)}"
        )
    h, w = _check_size("grid", grid)
    size = _check_size("image_size", image_size)
    dtype = K.dtype if K.is_floating_point() else torch.float32
    rel = relative_to_first(poses.double())
    k_grid = rescale_intrinsics(K.double(), size, (h, w))
    dirs_cam = camera_directions(k_grid, (h, w))  # (B, T, N, 3)
    dirs = torch.einsum("btij,btnj->btni", rel[..., :3, :3], dirs_cam)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    centres = rel[..., :3, 3].unsqueeze(-2).expand_as(dirs)
    moments = torch.cross(centres, dirs, dim=-1)
    rays = torch.cat([dirs, moments], dim=-1)
    return rearrange(rays, "b t (h w) c -> b c t h w", h=h, w=w).to(dtype)


def split_rays(rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray map to per-ray lists: (B, 6, T, h, w) -> directions, moments, each (B, T, h * w, 3)."""
    check_tensor("rays", rays, "(B, 6, T, h, w)", ndim=5)
    if rays.shape[1] != 6:
        raise InputError(
            f"rays must have shape (B, 6, T, h, w) (6 Plücker channels), got {tuple(rays.shape)}"
        )
    flat = rearrange(rays, "b c t h w -> b t (h w) c")
    return flat[..., :3], flat[..., 3:]


def rays_to_lines(directions: torch.Tensor, moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plücker (d, m) to (point on the line nearest the origin, unit direction).

    directions, moments: (..., 3), d need not be unit. Returns (p, d_hat), each (..., 3):
    p = d x m / |d|^2 (equals o - (o . d_hat) d_hat when m = o x d), d_hat = d / |d|.
    """
    sq = (directions * directions).sum(-1, keepdim=True).clamp_min(torch.finfo(directions.dtype).tiny)
    points = torch.cross(directions, moments, dim=-1) / sq
    return points, directions / sq.sqrt()
