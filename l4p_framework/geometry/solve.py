"""Camera poses and intrinsics from a Plücker ray map (the inverse of `rays.plucker_rays`).

Per frame: the camera centre is the least-squares point nearest all rays; the intrinsics come from a
homography between grid pixels and ray directions, RQ-decomposed into K and a rotation; or, with a
known or shared K, the rotation is an orthogonal Procrustes fit. Everything runs batched in float64
torch (CPU or GPU, deterministic) and is cast back to the rays' dtype.

Homography. With identity K, grid pixel x = (u, v, 1) (cell centres at i + 0.5, grid pixels) and the
predicted direction d (reference = first camera) satisfy d ~ H x with H = R_wc K^-1. We fit H by the
DLT on the homogeneous constraint d x (H x) = 0 with unit d, which is the fit to the projections
(dx/dz, dy/dz) of the description weighted per ray by |d_z|: it needs no division by d_z, so rays near
|d_z| = 0 (large rotations in "per_frame" mode) are harmless instead of being dropped. The grid pixels
are Hartley-normalised. H is negated when det(H) < 0, so H^-1 = K R_cw with det(R_cw) = +1; the RQ
decomposition gives K (upper-triangular, positive diagonal, K[2, 2] = 1; skew kept, not zeroed) and R_cw.

Robustness. `robust_iters` rounds of IRLS with Cauchy weights (scale from the median residual) are
applied to each least-squares fit (camera centre: point-to-line distance; homography: sine of the
angle between d and H x; Procrustes: chord between rotated and ideal directions). Exact rays are
reproduced exactly either way; with outlier rays (a few cells predicted badly) the robust fits are
much more accurate. robust_iters=0 gives the plain least-squares solution of the description.
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange

from ..errors import InputError, check_tensor
from .camera import _check_size, make_pose, pixel_centers, rescale_intrinsics
from .rays import camera_directions, rays_to_lines, split_rays

__all__ = [
    "rays_to_cameras",
    "nearest_point_to_lines",
    "fit_homography_dlt",
    "rq_decompose",
    "procrustes_rotation",
]

Mode = Literal["fixed", "per_frame", "known"]


def nearest_point_to_lines(
    points: torch.Tensor,
    directions: torch.Tensor,
    weights: torch.Tensor | None = None,
    robust_iters: int = 0,
) -> torch.Tensor:
    """Least-squares point nearest a set of 3D lines (normal equations, float64), optionally robust.

    points: (..., N, 3) a point on each line; directions: (..., N, 3) unit directions;
    weights: (..., N) optional non-negative per-line weights; robust_iters: Cauchy IRLS rounds on the
    point-to-line distances (0 = plain least squares).
    Solves sum_i w_i (I - d_i d_i^T) c = sum_i w_i (I - d_i d_i^T) p_i. Returns (..., 3) in float64.
    A tiny ridge (1e-12 * trace) keeps all-parallel line sets finite (the answer is then arbitrary
    along the common direction).
    """
    p, d = points.double(), directions.double()
    eye = torch.eye(3, dtype=torch.float64, device=p.device)
    proj = eye - d.unsqueeze(-1) * d.unsqueeze(-2)  # (..., N, 3, 3)
    base_w = torch.ones(p.shape[:-1], dtype=torch.float64, device=p.device)
    if weights is not None:
        base_w = base_w * weights.double()
    floor = 1e-9 * (1.0 + p.norm(dim=-1).amax(-1, keepdim=True))
    w = base_w
    for it in range(robust_iters + 1):
        wp = proj * w[..., None, None]
        a = wp.sum(-3)
        b = torch.einsum("...nij,...nj->...i", wp, p)
        ridge = 1e-12 * a.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-300)
        c = torch.linalg.solve(a + ridge[..., None, None] * eye, b.unsqueeze(-1)).squeeze(-1)
        if it < robust_iters:
            dist = torch.einsum("...nij,...nj->...ni", proj, c.unsqueeze(-2) - p).norm(dim=-1)
            w = _cauchy_weights(dist, base_w, floor)
    return c


def _cauchy_weights(resid: torch.Tensor, base_w: torch.Tensor, floor: float | torch.Tensor) -> torch.Tensor:
    """IRLS Cauchy weights (..., N) from non-negative residuals (..., N), times base_w.

    Scale sigma = 1.4826 x the median residual of the points with base weight > 0; the weight halves at
    2.5 sigma (w = 1 / (1 + (r / 2.5 sigma)^2)); `floor` bounds 2.5 sigma from below (exact data).
    """
    med = resid.masked_fill(base_w <= 0, float("nan")).nanmedian(dim=-1, keepdim=True).values
    delta = torch.maximum((2.5 * 1.4826 * med).nan_to_num(1.0), torch.as_tensor(floor).to(resid))
    r = resid / delta
    return base_w / (1.0 + r * r)


def _hartley(xy: torch.Tensor) -> torch.Tensor:
    """Similarity T (3, 3) moving 2D points (N, 2) to zero mean and mean distance sqrt(2)."""
    mean = xy.mean(0)
    dist = (xy - mean).norm(dim=-1).mean().clamp_min(1e-12)
    s = (2.0**0.5) / dist
    t = torch.eye(3, dtype=xy.dtype, device=xy.device)
    t[0, 0] = t[1, 1] = s
    t[:2, 2] = -s * mean
    return t


def fit_homography_dlt(
    src_xy: torch.Tensor,
    dst_dirs: torch.Tensor,
    weights: torch.Tensor | None = None,
    robust_iters: int = 5,
) -> torch.Tensor:
    """Homography H with dst ~ H [x, y, 1] by normalised DLT with Cauchy IRLS; batched, float64.

    src_xy: (N, 2) source points (shared by the batch), e.g. grid pixels;
    dst_dirs: (..., N, 3) homogeneous targets (e.g. ray directions; their sign per point is ignored);
    weights: (..., N) optional non-negative weights (0 drops a point); robust_iters: IRLS rounds on
    the sine of the angle between dst and H x (0 = plain algebraic DLT).
    Returns (..., 3, 3) float64 with unit Frobenius norm and det(H) >= 0.
    """
    x = src_xy.double()
    tr = _hartley(x)
    xs = torch.cat([x, torch.ones_like(x[:, :1])], -1) @ tr.T  # (N, 3)
    y = dst_dirs.double()
    y = y / y.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    zero = torch.zeros_like(y[..., :1]).expand(*y.shape[:-1], 3)
    xb = xs.expand_as(y)
    y1, y2, y3 = y[..., 0:1], y[..., 1:2], y[..., 2:3]
    # Rows of y x (H x) = 0 in the unknowns h = vec(H) (row-major).
    r1 = torch.cat([zero, -y3 * xb, y2 * xb], -1)
    r2 = torch.cat([y3 * xb, zero, -y1 * xb], -1)
    r3 = torch.cat([-y2 * xb, y1 * xb, zero], -1)
    rows = torch.stack([r1, r2, r3], -2)  # (..., N, 3, 9)
    base_w = torch.ones(y.shape[:-1], dtype=torch.float64, device=y.device)
    if weights is not None:
        base_w = base_w * weights.double()
    w = base_w
    h = None
    for it in range(robust_iters + 1):
        m = torch.einsum("...n,...nki,...nkj->...ij", w, rows, rows)
        _, vecs = torch.linalg.eigh(m)
        h = rearrange(vecs[..., :, 0], "... (r c) -> ... r c", r=3, c=3)
        if it == robust_iters:
            break
        pred = torch.einsum("...ij,nj->...ni", h, xs)
        pred = pred / pred.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        resid = torch.cross(pred, y, dim=-1).norm(dim=-1)  # |sin angle|, sign-invariant
        w = _cauchy_weights(resid, base_w, 1e-9)
    hmat = h @ tr
    hmat = hmat / hmat.flatten(-2).norm(dim=-1)[..., None, None]
    sign = torch.where(torch.linalg.det(hmat) < 0, -1.0, 1.0).to(hmat)
    return hmat * sign[..., None, None]


def rq_decompose(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RQ decomposition M = U Q of 3x3 matrices: U upper-triangular with positive diagonal, Q orthogonal.

    m: (..., 3, 3). Returns (U, Q), each (..., 3, 3); det(Q) = sign(det(M)).
    """
    flip = torch.flip(torch.eye(3, dtype=m.dtype, device=m.device), dims=[0])
    q1, r1 = torch.linalg.qr((flip @ m).mT)
    upper = flip @ r1.mT @ flip
    orth = flip @ q1.mT
    sign = torch.where(upper.diagonal(dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(m)
    return upper * sign.unsqueeze(-2), orth * sign.unsqueeze(-1)


def procrustes_rotation(
    src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None, robust_iters: int = 0
) -> torch.Tensor:
    """Rotation R (det +1) minimising sum_i w_i |R src_i - dst_i|^2 (Kabsch with reflection fix).

    src, dst: (..., N, 3) (unit vectors for the ray solver); weights: (..., N) optional;
    robust_iters: Cauchy IRLS rounds on |R src_i - dst_i| (0 = plain least squares).
    Returns (..., 3, 3) float64.
    """
    a, b = src.double(), dst.double()
    base_w = torch.ones(a.shape[:-1], dtype=torch.float64, device=a.device)
    if weights is not None:
        base_w = base_w * weights.double()
    w = base_w
    for it in range(robust_iters + 1):
        cov = torch.einsum("...n,...ni,...nj->...ij", w, b, a)  # sum w dst src^T
        u, _, vh = torch.linalg.svd(cov)
        det = torch.linalg.det(u @ vh)
        fix = torch.ones(*det.shape, 3, dtype=cov.dtype, device=cov.device)
        fix[..., 2] = torch.where(det < 0, -1.0, 1.0)
        rot = u @ (fix.unsqueeze(-1) * vh)
        if it < robust_iters:
            resid = (torch.einsum("...ij,...nj->...ni", rot, a) - b).norm(dim=-1)
            w = _cauchy_weights(resid, base_w, 1e-9)
    return rot


def rays_to_cameras(
    rays: torch.Tensor,
    mode: Mode = "fixed",
    K_known: torch.Tensor | None = None,
    image_size: tuple[int, int] = (224, 224),
    robust_iters: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-to-world poses and pixel intrinsics of every frame of a window from its ray map.

    rays: (B, 6, T, h, w) Plücker rays (d, m = o x d) in the first camera's frame (see `rays.py`);
    d need not be unit. mode: "fixed" = K estimated on frame 0 and shared by all frames (rotations by
    Procrustes); "per_frame" = K and rotation of each frame from its own homography + RQ; "known" =
    K_known (B, T, 3, 3) or (B, 3, 3) pixels of `image_size` (+0.5 convention), rotations by Procrustes.
    image_size: (H, W) of the image the grid covers (224x224 for L4P); robust_iters: Cauchy IRLS
    rounds of every fit (0 = plain least squares).
    Returns poses (B, T, 4, 4) camera-to-world in the frame of the rays (frame 0 ~ identity), the
    translation in the moments' units; K (B, T, 3, 3) in pixels of `image_size` (+0.5 convention).
    Both in the rays' dtype; solved in float64.

    To reproduce the official driver's fixed-K behaviour across windows (only window 0 estimates K),
    call window 0 with mode="fixed" and later windows with mode="known" and the K it gave (the official
    code uses the batch's dummy K there instead, a probable bug; see l4p-model.md §2.4).
    """
    check_tensor("rays", rays, "(B, 6, T, h, w)", ndim=5)
    if mode not in ("fixed", "per_frame", "known"):
        raise InputError(f"mode must be 'fixed', 'per_frame' or 'known', got {mode!r}")
    size = _check_size("image_size", image_size)
    b, _, t, h, w = rays.shape
    if h * w < 4:
        raise InputError(f"rays grid (h, w) = ({h}, {w}) is too small; at least 4 rays per frame are needed")
    out_dtype = rays.dtype if rays.is_floating_point() else torch.float32
    dirs, moments = split_rays(rays.double())  # (B, T, N, 3)
    if bool((dirs.norm(dim=-1) == 0).any()):
        raise InputError("rays contain zero direction vectors (channels 0-2); every ray needs a direction")
    points, dhat = rays_to_lines(dirs, moments)
    centres = nearest_point_to_lines(points, dhat, robust_iters=robust_iters)  # (B, T, 3)

    grid_xy = rearrange(pixel_centers((h, w), device=rays.device, dtype=torch.float64), "h w c -> (h w) c")
    if mode == "known":
        if K_known is None:
            raise InputError("mode='known' needs K_known (B, T, 3, 3) or (B, 3, 3) in image pixels")
        check_tensor("K_known", K_known, "(B, T, 3, 3) or (B, 3, 3)")
        if K_known.ndim == 3:
            K_known = K_known.unsqueeze(1)
        if (
            K_known.ndim != 4
            or K_known.shape[-2:] != (3, 3)
            or K_known.shape[0] not in (1, b)
            or (K_known.shape[1] not in (1, t))
        ):
            raise InputError(
                f"K_known must have shape (B, T, 3, 3) or (B, 3, 3) with B = {b}, T = {t}, got "
                f"{tuple(K_known.shape)}"
            )
        k_grid = rescale_intrinsics(K_known.double(), size, (h, w)).expand(b, t, 3, 3)
        rot_cw = procrustes_rotation(dhat, camera_directions(k_grid, (h, w)), robust_iters=robust_iters)
    else:
        frames = dhat[:, :1] if mode == "fixed" else dhat
        hom = fit_homography_dlt(grid_xy, frames, robust_iters=robust_iters)
        k_grid, rot = rq_decompose(torch.linalg.inv(hom))
        k_grid = k_grid / k_grid[..., 2:3, 2:3]
        if mode == "fixed":
            k_grid = k_grid.expand(b, t, 3, 3)
            rot_cw = procrustes_rotation(dhat, camera_directions(k_grid, (h, w)), robust_iters=robust_iters)
        else:
            rot_cw = rot
    poses = make_pose(rot_cw.mT, centres)  # inverse of [R_cw | -R_cw c]
    K = rescale_intrinsics(k_grid, (h, w), size)
    return poses.to(out_dtype), K.contiguous().to(out_dtype)
