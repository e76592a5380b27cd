"""Writers (and readers) for camera trajectories, intrinsics and point clouds.

- TUM trajectory text: one line per frame `timestamp tx ty tz qx qy qz qw`; the pose is camera-to-world
  (t = camera centre, q = rotation (x, y, z, w) of the camera-to-world rotation, w >= 0); '#' lines are
  comments.
- Intrinsics JSON: pixel-unit K per frame with the +0.5 pixel-centre convention and the image size.
- PLY: xyz float32 (+ rgb uint8) vertices, binary little-endian or ascii.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, check_tensor
from .camera import _check_size, make_pose, matrix_to_quaternion, quaternion_to_matrix

__all__ = ["save_tum", "load_tum", "save_intrinsics_json", "load_intrinsics_json", "save_ply"]

PathLike = str | os.PathLike


def save_tum(
    path: PathLike,
    poses: torch.Tensor,
    timestamps: torch.Tensor | np.ndarray | list[float] | None = None,
    fps: float | None = None,
    precision: int = 9,
) -> None:
    """Write a camera-to-world trajectory as TUM text (`timestamp tx ty tz qx qy qz qw` per line).

    poses: (T, 4, 4) camera-to-world; timestamps: (T,) seconds, default frame index / fps (fps None:
    the frame index itself); precision: decimals written.
    """
    check_tensor("poses", poses, "(T, 4, 4)", ndim=3)
    if poses.shape[-2:] != (4, 4):
        raise InputError(f"poses must have shape (T, 4, 4), got {tuple(poses.shape)}")
    t = poses.shape[0]
    if timestamps is None:
        ts = np.arange(t, dtype=np.float64) / (fps if fps else 1.0)
    else:
        ts = np.asarray(torch.as_tensor(timestamps, dtype=torch.float64).cpu(), dtype=np.float64).reshape(-1)
        if ts.shape[0] != t:
            raise InputError(f"timestamps must have one value per pose ({t}), got {ts.shape[0]}")
    p = poses.detach().double().cpu()
    q = matrix_to_quaternion(p[:, :3, :3]).numpy()
    c = p[:, :3, 3].numpy()
    lines = ["# timestamp tx ty tz qx qy qz qw (camera-to-world)"]
    for i in range(t):
        vals = [ts[i], *c[i], *q[i]]
        lines.append(" ".join(f"{v:.{precision}f}" for v in vals))
    Path(path).write_text("\n".join(lines) + "\n")


def load_tum(path: PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a TUM trajectory.

    Returns (timestamps (T,) float64 seconds, poses (T, 4, 4) float64 camera-to-world).
    """
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 8:
            raise InputError(
                f"{path}:{n}: a TUM line needs 8 numbers 'timestamp tx ty tz qx qy qz qw', got {line!r}"
            )
        try:
            rows.append([float(v) for v in parts])
        except ValueError:
            raise InputError(f"{path}:{n}: not a number in {line!r}") from None
    if not rows:
        raise InputError(f"{path}: no poses found (expected lines 'timestamp tx ty tz qx qy qz qw')")
    arr = torch.tensor(rows, dtype=torch.float64)
    return arr[:, 0], make_pose(quaternion_to_matrix(arr[:, 4:8]), arr[:, 1:4])


def save_intrinsics_json(path: PathLike, K: torch.Tensor, image_size: tuple[int, int]) -> None:
    """Write pixel intrinsics to JSON.

    K: (T, 3, 3) or (3, 3) pixels of an image of `image_size` = (H, W), +0.5 pixel-centre convention.
    Fields: convention, height, width, K (list of 3x3 per frame), fx, fy, cx, cy, skew (lists per frame).
    """
    check_tensor("K", K, "(T, 3, 3) or (3, 3)")
    if K.ndim == 2:
        K = K.unsqueeze(0)
    if K.ndim != 3 or K.shape[-2:] != (3, 3):
        raise InputError(f"K must have shape (T, 3, 3) or (3, 3), got {tuple(K.shape)}")
    h, w = _check_size("image_size", image_size)
    k = K.detach().double().cpu()
    data = {
        "convention": "pixels; centre of the top-left pixel at (0.5, 0.5); x = fx*X/Z + skew*Y/Z + cx",
        "height": h,
        "width": w,
        "K": k.tolist(),
        "fx": k[:, 0, 0].tolist(),
        "fy": k[:, 1, 1].tolist(),
        "cx": k[:, 0, 2].tolist(),
        "cy": k[:, 1, 2].tolist(),
        "skew": k[:, 0, 1].tolist(),
    }
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def load_intrinsics_json(path: PathLike) -> tuple[torch.Tensor, tuple[int, int]]:
    """Read `save_intrinsics_json` output. Returns (K (T, 3, 3) float64 pixels, (H, W))."""
    try:
        data = json.loads(Path(path).read_text())
        k = torch.tensor(data["K"], dtype=torch.float64)
        size = (int(data["height"]), int(data["width"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: not an l4p intrinsics JSON (needs 'K', 'height', 'width'): {e}") from None
    if k.ndim != 3 or k.shape[-2:] != (3, 3):
        raise InputError(f"{path}: 'K' must be a list of 3x3 matrices, got shape {tuple(k.shape)}")
    return k, size


def save_ply(
    path: PathLike,
    points: torch.Tensor,
    colors: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    binary: bool = True,
) -> int:
    """Write a point cloud (e.g. a point map) to PLY, keeping valid finite points only.

    points: (..., 3) e.g. (H, W, 3), (T, H, W, 3) or (N, 3), scene units;
    colors: (..., 3) matching, float in [0, 1] or uint8 (e.g. a video frame moved to channels-last);
    valid: (...) bool mask. binary: little-endian binary (default) or ascii.
    Returns the number of vertices written.
    """
    check_tensor("points", points, "(..., 3)", finite=False)
    if points.shape[-1] != 3:
        raise InputError(f"points must have shape (..., 3), got {tuple(points.shape)}")
    pts = points.detach().reshape(-1, 3).float().cpu()
    keep = torch.isfinite(pts).all(-1)
    if valid is not None:
        if tuple(valid.shape) != tuple(points.shape[:-1]):
            raise InputError(f"valid must have shape {tuple(points.shape[:-1])}, got {tuple(valid.shape)}")
        keep &= valid.detach().reshape(-1).bool().cpu()
    rgb = None
    if colors is not None:
        if tuple(colors.shape) != tuple(points.shape):
            raise InputError(
                f"colors must have the points' shape {tuple(points.shape)}, got {tuple(colors.shape)}"
            )
        c = colors.detach().reshape(-1, 3).cpu()
        if c.is_floating_point():
            c = (c.clamp(0, 1) * 255.0).round()
        rgb = c.to(torch.uint8)[keep].numpy()
    xyz = pts[keep].numpy()
    n = xyz.shape[0]
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", f"element vertex {n}"]
    header += ["property float x", "property float y", "property float z"]
    if rgb is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    head = ("\n".join(header) + "\n").encode("ascii")
    if binary:
        fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
        if rgb is not None:
            fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        rec = np.empty(n, dtype=np.dtype(fields))
        rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        if rgb is not None:
            rec["red"], rec["green"], rec["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        body = rec.tobytes()
    else:
        if rgb is not None:
            lines = [f"{x:.7g} {y:.7g} {z:.7g} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(xyz, rgb)]
        else:
            lines = [f"{x:.7g} {y:.7g} {z:.7g}" for x, y, z in xyz]
        body = ("\n".join(lines) + ("\n" if lines else "")).encode("ascii")
    Path(path).write_bytes(head + body)
    return n
