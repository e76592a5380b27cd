"""Pinhole camera helpers: intrinsics, (un)projection, poses and rotations; batched torch.

Conventions (data-and-metrics.md, used everywhere in l4p):

- **Pixels.** Continuous pixel coordinates put the centre of the top-left pixel at (0.5, 0.5); pixel
  (column i, row j) has its centre at (i + 0.5, j + 0.5), and the image spans [0, W] x [0, H].
- **Intrinsics** K (3, 3) are in pixel units of that continuous convention: a camera-frame point
  (X, Y, Z) projects to x = fx * X / Z + s * Y / Z + cx, y = fy * Y / Z + cy. A principal point at the
  image centre is cx = W / 2, cy = H / 2. OpenCV's "integer pixel centre" K has cx, cy smaller by 0.5
  (`intrinsics_from_opencv` / `intrinsics_to_opencv` convert).
- **Normalised intrinsics** divide row 0 of K by W and row 1 by H (so the image spans [0, 1]^2); this is
  the same normalisation as the official code's, which first adds the 0.5 to an OpenCV K.
- **Camera frame**: x right, y down, z forward. Depth is z-depth, never distance to the centre.
- **Poses** are camera-to-world 4x4 matrices [R | c] (c = camera centre in the world).
- **Quaternions** are (x, y, z, w) in the last dim (TUM / scipy order), unit, returned with w >= 0.
"""

from __future__ import annotations

import torch

from ..errors import InputError, check_tensor

__all__ = [
    "normalize_intrinsics",
    "denormalize_intrinsics",
    "rescale_intrinsics",
    "intrinsics_from_opencv",
    "intrinsics_to_opencv",
    "make_intrinsics",
    "pixel_centers",
    "unproject_depth",
    "project_points",
    "unproject_tracks",
    "to_world",
    "invert_pose",
    "relative_to_first",
    "make_pose",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "rotation_angle",
    "skew_matrix",
]


def _check_size(name: str, size) -> tuple[int, int]:
    try:
        h, w = (int(size[0]), int(size[1]))
    except (TypeError, IndexError, ValueError):
        raise InputError(f"{name} must be a pair (height, width) of positive ints, got {size!r}") from None
    if h <= 0 or w <= 0 or len(size) != 2:
        raise InputError(f"{name} must be a pair (height, width) of positive ints, got {size!r}")
    return h, w


def _check_matrix(name: str, tensor, n: int, shape: str) -> None:
    check_tensor(name, tensor, shape)
    if tensor.ndim < 2 or tuple(tensor.shape[-2:]) != (n, n):
        raise InputError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise InputError(f"{name} {shape} must be a floating-point tensor, got {tensor.dtype}")


def normalize_intrinsics(K: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Pixel-unit intrinsics to normalised intrinsics (image spans [0, 1]^2).

    K: (..., 3, 3) pixels, continuous +0.5 convention; image_size: (H, W) pixels.
    Returns (..., 3, 3): row 0 divided by W, row 1 by H.
    """
    _check_matrix("K", K, 3, "(..., 3, 3)")
    h, w = _check_size("image_size", image_size)
    scale = K.new_tensor([1.0 / w, 1.0 / h, 1.0]).unsqueeze(-1)
    return K * scale


def denormalize_intrinsics(K_norm: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Normalised intrinsics to pixel units for an image of `image_size` = (H, W).

    K_norm: (..., 3, 3) normalised. Returns (..., 3, 3) pixels (continuous +0.5 convention).
    """
    _check_matrix("K_norm", K_norm, 3, "(..., 3, 3)")
    h, w = _check_size("image_size", image_size)
    scale = K_norm.new_tensor([float(w), float(h), 1.0]).unsqueeze(-1)
    return K_norm * scale


def rescale_intrinsics(K: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> torch.Tensor:
    """Intrinsics of the same camera resampled from `from_size` (H, W) to `to_size` (H', W') pixels.

    E.g. the 16x16 Plücker ray grid of a 224x224 image: `rescale_intrinsics(K224, (224, 224), (16, 16))`.
    K: (..., 3, 3) pixels (+0.5 convention). Returns (..., 3, 3) pixels of the new size.
    """
    return denormalize_intrinsics(normalize_intrinsics(K, from_size), to_size)


def intrinsics_from_opencv(K_cv: torch.Tensor) -> torch.Tensor:
    """OpenCV K (integer pixel centres: top-left pixel centre at (0, 0)) to l4p's +0.5 convention.

    K_cv: (..., 3, 3) pixels. Returns (..., 3, 3) with cx, cy increased by 0.5 (times K[2, 2]).
    """
    _check_matrix("K_cv", K_cv, 3, "(..., 3, 3)")
    out = K_cv.clone()
    out[..., 0, 2] = K_cv[..., 0, 2] + 0.5 * K_cv[..., 2, 2]
    out[..., 1, 2] = K_cv[..., 1, 2] + 0.5 * K_cv[..., 2, 2]
    return out


def intrinsics_to_opencv(K: torch.Tensor) -> torch.Tensor:
    """l4p K (+0.5 pixel-centre convention) to OpenCV's integer-centre convention (cx, cy - 0.5).

    K: (..., 3, 3) pixels. Returns (..., 3, 3) pixels.
    """
    _check_matrix("K", K, 3, "(..., 3, 3)")
    out = K.clone()
    out[..., 0, 2] = K[..., 0, 2] - 0.5 * K[..., 2, 2]
    out[..., 1, 2] = K[..., 1, 2] - 0.5 * K[..., 2, 2]
    return out


def make_intrinsics(
    fx: torch.Tensor | float,
    fy: torch.Tensor | float,
    cx: torch.Tensor | float,
    cy: torch.Tensor | float,
    skew: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Build K from its entries (broadcast together), pixels in the +0.5 convention.

    Each argument: float or tensor of a common broadcast shape (...). Returns (..., 3, 3) float.
    """
    fx, fy, cx, cy, skew = torch.broadcast_tensors(*(torch.as_tensor(v) for v in (fx, fy, cx, cy, skew)))
    dtype = fx.dtype if fx.is_floating_point() else torch.get_default_dtype()
    zero, one = torch.zeros_like(fx, dtype=dtype), torch.ones_like(fx, dtype=dtype)
    rows = [
        torch.stack([fx.to(dtype), skew.to(dtype), cx.to(dtype)], -1),
        torch.stack([zero, fy.to(dtype), cy.to(dtype)], -1),
        torch.stack([zero, zero, one], -1),
    ]
    return torch.stack(rows, -2)


def pixel_centers(size: tuple[int, int], *, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Continuous coordinates of every pixel centre of an (H, W) image.

    Returns (H, W, 2) with [j, i] = (i + 0.5, j + 0.5) = (x, y) pixels (x = column, y = row).
    """
    h, w = _check_size("size", size)
    ys = torch.arange(h, device=device, dtype=dtype) + 0.5
    xs = torch.arange(w, device=device, dtype=dtype) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def unproject_depth(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Lift a z-depth map to camera-frame 3D points, pixel centres at (i + 0.5, j + 0.5).

    depth: (B, T, H, W) z-depth (scene units; 0 where invalid gives the point (0, 0, 0));
    K: (B, T, 3, 3) pixels for this H, W (+0.5 convention).
    Returns (B, T, H, W, 3) points in each frame's camera frame: depth * K^-1 [x, y, 1].
    """
    check_tensor("depth", depth, "(B, T, H, W)", ndim=4)
    _check_matrix("K", K, 3, "(B, T, 3, 3)")
    b, t, h, w = depth.shape
    if K.ndim != 4 or tuple(K.shape[:2]) != (b, t):
        raise InputError(f"K must have shape (B, T, 3, 3) = ({b}, {t}, 3, 3), got {tuple(K.shape)}")
    dtype = torch.promote_types(depth.dtype, K.dtype)
    xy = pixel_centers((h, w), device=depth.device, dtype=torch.float64)
    homog = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)  # (H, W, 3)
    k_inv = torch.linalg.inv(K.double())  # (B, T, 3, 3)
    rays = torch.einsum("btij,hwj->bthwi", k_inv, homog)
    return (rays * depth.double().unsqueeze(-1)).to(dtype)


def project_points(
    points: torch.Tensor, K: torch.Tensor, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera-frame points to pixels (+0.5 convention).

    points: (*lead, *rest, 3) camera frame; K: (*lead, 3, 3) pixels, one K per leading index
    (e.g. points (B, T, H, W, 3) with K (B, T, 3, 3), or points (B, T, N, 3)).
    Returns (xy (*lead, *rest, 2) pixels, z (*lead, *rest) z-depth). Points with |z| < eps are divided
    by eps with z's sign (finite but meaningless; mask them with z > 0).
    """
    check_tensor("points", points, "(*lead, ..., 3)")
    _check_matrix("K", K, 3, "(*lead, 3, 3)")
    lead = K.shape[:-2]
    if points.shape[-1] != 3 or tuple(points.shape[: len(lead)]) != tuple(lead):
        raise InputError(
            f"points must have shape (*lead, ..., 3) with lead = K's leading shape {tuple(lead)}, "
            f"got {tuple(points.shape)}"
        )
    rest = points.shape[len(lead) : -1]
    flat = points.reshape(*lead, -1, 3)
    cam = torch.einsum("...ij,...nj->...ni", K.to(points.dtype), flat)
    z = cam[..., 2]
    safe = torch.where(z.abs() < eps, torch.full_like(z, eps).copysign(z), z)
    xy = cam[..., :2] / safe.unsqueeze(-1)
    return xy.reshape(*lead, *rest, 2), flat[..., 2].reshape(*lead, *rest)


def unproject_tracks(xy: torch.Tensor, z: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Lift 2D tracks with z-depth to camera-frame 3D points of their own frame.

    xy: (B, N, T, 2) pixels (+0.5 convention); z: (B, N, T) z-depth; K: (B, T, 3, 3) pixels.
    Returns (B, N, T, 3) = z * K_t^-1 [x, y, 1].
    """
    check_tensor("xy", xy, "(B, N, T, 2)", ndim=4)
    check_tensor("z", z, "(B, N, T)", ndim=3)
    _check_matrix("K", K, 3, "(B, T, 3, 3)")
    b, n, t, two = xy.shape
    if two != 2 or tuple(z.shape) != (b, n, t) or tuple(K.shape) != (b, t, 3, 3):
        raise InputError(
            f"unproject_tracks expects xy (B, N, T, 2), z (B, N, T), K (B, T, 3, 3); got "
            f"{tuple(xy.shape)}, {tuple(z.shape)}, {tuple(K.shape)}"
        )
    dtype = torch.promote_types(xy.dtype, K.dtype)
    homog = torch.cat([xy.double(), torch.ones_like(xy[..., :1], dtype=torch.float64)], dim=-1)
    rays = torch.einsum("btij,bntj->bnti", torch.linalg.inv(K.double()), homog)
    return (rays * z.double().unsqueeze(-1)).to(dtype)


def to_world(points: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """Map camera-frame points to the world with camera-to-world poses.

    points: (B, T, *rest, 3) in each frame's camera frame; poses: (B, T, 4, 4) camera-to-world.
    Returns (B, T, *rest, 3) world points R p + c.
    """
    check_tensor("points", points, "(B, T, ..., 3)")
    _check_matrix("poses", poses, 4, "(B, T, 4, 4)")
    lead = poses.shape[:-2]
    if points.shape[-1] != 3 or tuple(points.shape[: len(lead)]) != tuple(lead):
        raise InputError(
            f"points must have shape (*lead, ..., 3) with lead = poses' leading shape {tuple(lead)}, "
            f"got {tuple(points.shape)}"
        )
    rest = points.shape[len(lead) : -1]
    flat = points.reshape(*lead, -1, 3)
    rot, trans = poses[..., :3, :3].to(points.dtype), poses[..., :3, 3].to(points.dtype)
    out = torch.einsum("...ij,...nj->...ni", rot, flat) + trans.unsqueeze(-2)
    return out.reshape(*lead, *rest, 3)


def invert_pose(pose: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid 4x4 transforms [R | t] -> [R^T | -R^T t] (exact, no general inverse).

    pose: (..., 4, 4) rigid (rotation block orthonormal). Returns (..., 4, 4).
    """
    _check_matrix("pose", pose, 4, "(..., 4, 4)")
    rot_t = pose[..., :3, :3].transpose(-1, -2)
    trans = -torch.einsum("...ij,...j->...i", rot_t, pose[..., :3, 3])
    return make_pose(rot_t, trans)


def make_pose(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Assemble 4x4 transforms from rotation (..., 3, 3) and translation (..., 3). Returns (..., 4, 4)."""
    out = torch.zeros(*rotation.shape[:-2], 4, 4, dtype=rotation.dtype, device=rotation.device)
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def relative_to_first(poses: torch.Tensor) -> torch.Tensor:
    """Re-reference camera-to-world poses so frame 0 is the identity: inv(P_0) @ P_t.

    poses: (B, T, 4, 4) camera-to-world. Returns (B, T, 4, 4) camera-to-"first camera" poses.
    """
    _check_matrix("poses", poses, 4, "(B, T, 4, 4)")
    if poses.ndim != 4:
        raise InputError(f"poses must have shape (B, T, 4, 4), got {tuple(poses.shape)}")
    return invert_pose(poses[:, :1]) @ poses


def skew_matrix(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix [v]_x with [v]_x u = v x u. v: (..., 3). Returns (..., 3, 3)."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        [torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1)], -2
    )


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (x, y, z, w) to rotation matrices (q is normalised first).

    q: (..., 4) in (x, y, z, w) order. Returns (..., 3, 3).
    """
    check_tensor("q", q, "(..., 4)")
    if q.shape[-1] != 4:
        raise InputError(f"q must have shape (..., 4) in (x, y, z, w) order, got {tuple(q.shape)}")
    norm = q.norm(dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise InputError("q contains zero quaternions; every quaternion needs a non-zero norm")
    x, y, z, w = (q / norm).unbind(-1)
    rows = [
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ]
    return torch.stack(rows, -2)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices to unit quaternions (x, y, z, w) with w >= 0 (Shepperd's method, batched).

    R: (..., 3, 3) rotation. Returns (..., 4) in (x, y, z, w) order.
    """
    _check_matrix("R", R, 3, "(..., 3, 3)")
    m = R
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate solutions; each is accurate when its divisor (4 * the largest component) is large.
    cands = torch.stack(
        [
            torch.stack(
                [
                    1 + m00 - m11 - m22,
                    m[..., 0, 1] + m[..., 1, 0],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 2, 1] - m[..., 1, 2],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 1] + m[..., 1, 0],
                    1 - m00 + m11 - m22,
                    m[..., 1, 2] + m[..., 2, 1],
                    m[..., 0, 2] - m[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 1, 2] + m[..., 2, 1],
                    1 - m00 - m11 + m22,
                    m[..., 1, 0] - m[..., 0, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] - m[..., 0, 1],
                    1 + m00 + m11 + m22,
                ],
                -1,
            ),
        ],
        -2,
    )  # (..., 4 candidates, 4)
    diag = torch.stack(
        [1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22, 1 + m00 + m11 + m22], -1
    )
    best = diag.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., 3:] < 0, -q, q)


def rotation_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation angle in radians in [0, pi], accurate near 0 and pi (atan2 of sine and cosine parts).

    R: (..., 3, 3) rotation. Returns (...,).
    """
    _check_matrix("R", R, 3, "(..., 3, 3)")
    cos = 0.5 * (R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2] - 1.0)
    axis = torch.stack(
        [R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1
    )
    sin = 0.5 * axis.norm(dim=-1)
    return torch.atan2(sin, cos)
