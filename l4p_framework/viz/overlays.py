"""Mask overlays, normal maps and camera-trajectory plots (uint8 RGB images)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError
from .colormaps import to_numpy


def mask_overlay(frame, mask, color: tuple[int, int, int] = (255, 0, 0), alpha: float = 0.5) -> np.ndarray:
    """Tint the masked pixels of a frame.

    frame: (H, W, 3) uint8; mask: (H, W) bool (or float, > 0.5 is inside). Masked pixels become
    (1 - alpha) * frame + alpha * color, rounded; others are unchanged. Returns (H, W, 3) uint8.
    """
    f = to_numpy(frame)
    m = to_numpy(mask)
    if f.ndim != 3 or f.shape[-1] != 3 or f.dtype != np.uint8:
        raise InputError(f"frame must be (H, W, 3) uint8, got {f.shape} {f.dtype}")
    if m.shape != f.shape[:2]:
        raise InputError(f"mask must be (H, W) = {f.shape[:2]}, got {m.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    m = m if m.dtype == bool else m > 0.5
    blend = (1.0 - alpha) * f.astype(np.float64) + alpha * np.asarray(color, dtype=np.float64)
    out = f.copy()
    out[m] = np.clip(np.rint(blend[m]), 0, 255).astype(np.uint8)
    return out


def normals_to_color(normals, valid=None) -> np.ndarray:
    """Colour camera-frame unit normals as RGB = (n + 1) / 2 * 255.

    normals: (3, H, W) or (3, T, H, W) with x right (red), y down (green), z forward (blue); they
    are normalised first. valid: (H, W) / (T, H, W) bool, optional. Zero-length, non-finite or
    invalid normals are black. Returns (H, W, 3) or (T, H, W, 3) uint8.
    """
    n = to_numpy(normals).astype(np.float64)
    if n.ndim not in (3, 4) or n.shape[0] != 3:
        raise InputError(f"normals must be (3, H, W) or (3, T, H, W), got {n.shape}")
    n = np.moveaxis(n, 0, -1)
    length = np.linalg.norm(n, axis=-1)
    ok = np.isfinite(length) & (length > 1e-6)
    if valid is not None:
        v = to_numpy(valid)
        if v.shape != ok.shape:
            raise InputError(f"valid must have shape {ok.shape}, got {v.shape}")
        ok &= v.astype(bool)
    unit = np.where(ok[..., None], n / np.where(ok, length, 1.0)[..., None], 0.0)
    rgb = np.rint((unit + 1.0) / 2.0 * 255.0)
    rgb[~ok] = 0
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _centres(poses, name: str) -> np.ndarray:
    """Camera centres (T, 3) from camera-to-world (T, 4, 4) or (T, 3, 4) poses."""
    p = to_numpy(poses).astype(np.float64)
    if p.ndim != 3 or p.shape[1:] not in ((4, 4), (3, 4)) or p.shape[0] == 0:
        raise InputError(f"{name} must be camera-to-world (T, 4, 4) or (T, 3, 4) with T >= 1, got {p.shape}")
    c = p[:, :3, 3]
    if not np.isfinite(c).all():
        raise InputError(f"{name} contains NaN or infinite camera positions")
    return c


def _nice_length(span: float) -> float:
    """A 1/2/5 x 10^k length close to a fifth of `span`, for a scale bar."""
    if span <= 0:
        return 1.0
    target = span / 5.0
    k = math.floor(math.log10(target))
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * 10**k >= target:
            return m * 10**k
    return 10.0 ** (k + 1)


PRED_COLOR = (220, 40, 40)
GT_COLOR = (40, 90, 220)


def trajectory_plot(
    poses,
    gt=None,
    size: tuple[int, int] = (256, 512),
) -> np.ndarray:
    """Plot camera centres from above (x-z) and from the side (z-y), prediction and optional GT.

    poses, gt: (T, 4, 4) or (T, 3, 4) camera-to-world. The left panel shows x (right) against z
    (up on screen); the right panel z (right) against -y (up on screen, since camera y points
    down). Both axes of a panel share one scale (equal aspect) covering every plotted centre.
    Prediction is red, GT blue; each path starts with a ring and ends with a disc; a scale bar
    gives the length unit. Returns (H, W, 3) uint8 with (H, W) = size.
    """
    h, w = size
    if h < 64 or w < 128:
        raise InputError(f"trajectory_plot size must be at least (64, 128), got {size}")
    paths = [(_centres(poses, "poses"), PRED_COLOR)]
    if gt is not None:
        paths.insert(0, (_centres(gt, "gt"), GT_COLOR))
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    pw = w // 2
    views = (
        ("top (x-z)", lambda c: c[:, 0], lambda c: c[:, 2]),
        ("side (z-y)", lambda c: c[:, 2], lambda c: -c[:, 1]),
    )
    margin, top, bottom = 10, 18, 14  # title strip above, scale-bar strip below
    for k, (title, hx, vy) in enumerate(views):
        x0 = k * pw
        draw.rectangle([x0 + 2, 2, x0 + pw - 3, h - 3], outline=(200, 200, 200))
        draw.text((x0 + 6, 4), title, fill=(0, 0, 0), font=font)
        us = np.concatenate([hx(c) for c, _ in paths])
        vs = np.concatenate([vy(c) for c, _ in paths])
        span = max(float(us.max() - us.min()), float(vs.max() - vs.min()))
        span = span if span > 1e-9 else 1.0  # a static camera: show a unit-sized view
        box_w, box_h = pw - 2 * margin, h - top - bottom - 2 * margin
        scale = min(box_w, box_h) / span
        cu, cv = (us.max() + us.min()) / 2.0, (vs.max() + vs.min()) / 2.0
        ox, oy = x0 + margin + box_w / 2.0, top + margin + box_h / 2.0

        def to_px(u, v, scale=scale, cu=cu, cv=cv, ox=ox, oy=oy):
            return ox + (u - cu) * scale, oy - (v - cv) * scale

        for c, color in paths:
            xy = [to_px(u, v) for u, v in zip(hx(c), vy(c))]
            if len(xy) > 1:
                draw.line(xy, fill=color, width=2)
            (sx, sy), (ex, ey) = xy[0], xy[-1]
            draw.ellipse([sx - 4, sy - 4, sx + 4, sy + 4], outline=color, width=2)
            draw.ellipse([ex - 3, ey - 3, ex + 3, ey + 3], fill=color)
        bar = _nice_length(span)
        bar_px = bar * scale
        by = h - 9
        draw.line([(x0 + 8, by), (x0 + 8 + bar_px, by)], fill=(0, 0, 0), width=2)
        draw.text((x0 + 12 + bar_px, by - 10), f"{bar:g}", fill=(0, 0, 0), font=font)
    legend = [("pred", PRED_COLOR)] + ([("gt", GT_COLOR)] if gt is not None else [])
    for i, (name, color) in enumerate(legend):
        draw.text((w - 40, 4 + 11 * i), name, fill=color, font=font)
    return np.asarray(img).copy()
