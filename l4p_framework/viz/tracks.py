"""Point-track overlays: coloured discs with trails, hollow circles for hidden points.

Track positions use l4p's continuous pixel convention (centre of the top-left pixel at
(0.5, 0.5)); PIL puts pixel centres at integers, so positions are shifted by -0.5 when drawn.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from .colormaps import to_numpy


def track_colors(tracks, visible, image_size: tuple[int, int]) -> np.ndarray:
    """One colour per track from where it starts: hue from x, brightness from y.

    tracks: (N, T, 2) pixels; visible: (N, T) bool; image_size: (H, W). The anchor is the
    position at the track's first visible frame (frame 0 if never visible): hue = x / W around
    the colour circle, value = 1 - 0.4 y / H (lower in the image is darker), saturation 0.85.
    Returns (N, 3) uint8.
    """
    tr = to_numpy(tracks).astype(np.float64)
    vis = to_numpy(visible).astype(bool)
    h, w = image_size
    n = tr.shape[0]
    first = np.where(vis.any(1), vis.argmax(1), 0) if n else np.zeros(0, dtype=np.int64)
    anchor = tr[np.arange(n), first] if n else np.zeros((0, 2))
    anchor = np.nan_to_num(anchor, nan=0.0, posinf=0.0, neginf=0.0)
    out = np.zeros((n, 3), dtype=np.uint8)
    for i, (x, y) in enumerate(anchor):
        hue = float(np.clip(x / w, 0.0, 1.0)) * 0.9  # stop short of wrapping back to red
        val = 1.0 - 0.4 * float(np.clip(y / h, 0.0, 1.0))
        out[i] = np.rint(np.array(colorsys.hsv_to_rgb(hue, 0.85, val)) * 255.0)
    return out


def draw_tracks(
    frames,
    tracks,
    visible,
    trail: int = 8,
    radius: int | None = None,
    line_width: int = 1,
    colors=None,
) -> np.ndarray:
    """Draw point tracks on a video.

    frames: (T, H, W, 3) uint8. tracks: (N, T, 2) (x, y) pixels, +0.5 convention. visible: (N, T)
    bool. For frame t, each track gets a trail of line segments over frames t - trail .. t (a
    segment only where both ends are visible), then a filled disc of `radius` (default
    max(2, min(H, W) // 100)) if visible at t, or a hollow circle if hidden. colors: (N, 3) uint8,
    default `track_colors`. Non-finite positions are skipped. Returns a new (T, H, W, 3) uint8.
    """
    fr = to_numpy(frames)
    if fr.ndim != 4 or fr.shape[-1] != 3 or fr.dtype != np.uint8:
        raise InputError(f"frames must be (T, H, W, 3) uint8, got {fr.shape} {fr.dtype}")
    t_len, h, w, _ = fr.shape
    tr = to_numpy(tracks).astype(np.float64)
    vis = to_numpy(visible).astype(bool)
    if tr.ndim != 3 or tr.shape[1:] != (t_len, 2):
        raise InputError(f"tracks must be (N, {t_len}, 2) to match {t_len} frames, got {tr.shape}")
    if vis.shape != tr.shape[:2]:
        raise InputError(f"visible must be (N, T) = {tr.shape[:2]}, got {vis.shape}")
    cols = track_colors(tr, vis, (h, w)) if colors is None else to_numpy(colors).astype(np.uint8)
    if cols.shape != (tr.shape[0], 3):
        raise InputError(f"colors must be (N, 3) = {(tr.shape[0], 3)} uint8, got {cols.shape}")
    r = max(2, min(h, w) // 100) if radius is None else int(radius)
    pts = tr - 0.5  # to PIL's integer pixel centres
    finite = np.isfinite(pts).all(-1)
    drawable = vis & finite
    out = np.empty_like(fr)
    for t in range(t_len):
        img = Image.fromarray(fr[t])
        draw = ImageDraw.Draw(img)
        for i in range(tr.shape[0]):
            c = tuple(int(v) for v in cols[i])
            for s in range(max(0, t - trail), t):
                if drawable[i, s] and drawable[i, s + 1]:
                    a, b = pts[i, s], pts[i, s + 1]
                    draw.line(
                        [(float(a[0]), float(a[1])), (float(b[0]), float(b[1]))], fill=c, width=line_width
                    )
        for i in range(tr.shape[0]):
            if not finite[i, t]:
                continue
            c = tuple(int(v) for v in cols[i])
            x, y = int(round(pts[i, t, 0])), int(round(pts[i, t, 1]))
            box = [x - r, y - r, x + r, y + r]
            if vis[i, t]:
                draw.ellipse(box, fill=c)
            else:
                draw.ellipse(box, outline=c, width=1)
        out[t] = np.asarray(img)
    return out
