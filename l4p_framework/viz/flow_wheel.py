"""The standard (Middlebury-style) optical-flow colour wheel.

Hue encodes direction over a 55-colour wheel made of six segments (red-yellow 15, yellow-green 6,
green-cyan 4, cyan-blue 11, blue-magenta 13, magenta-red 6 colours); saturation encodes magnitude
relative to a maximum, so zero flow is white and the maximum is fully saturated. Flow pointing
right (+u) is red, down (+v, image y grows downwards) orange-yellow, left cyan-blue, up violet.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .colormaps import to_numpy

_SEGMENTS = (15, 6, 4, 11, 13, 6)  # RY, YG, GC, CB, BM, MR


def color_wheel() -> np.ndarray:
    """The 55 wheel colours, (55, 3) float in [0, 255], starting at red and going through yellow."""
    ry, yg, gc, cb, bm, mr = _SEGMENTS
    cols = []
    # each segment ramps one channel while another is held at 255
    cols += [(255.0, np.floor(255.0 * i / ry), 0.0) for i in range(ry)]
    cols += [(255.0 - np.floor(255.0 * i / yg), 255.0, 0.0) for i in range(yg)]
    cols += [(0.0, 255.0, np.floor(255.0 * i / gc)) for i in range(gc)]
    cols += [(0.0, 255.0 - np.floor(255.0 * i / cb), 255.0) for i in range(cb)]
    cols += [(np.floor(255.0 * i / bm), 0.0, 255.0) for i in range(bm)]
    cols += [(255.0, 0.0, 255.0 - np.floor(255.0 * i / mr)) for i in range(mr)]
    return np.array(cols, dtype=np.float64)


def _uv_to_color(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colour normalised flow components (|(u, v)| <= 1 is within the wheel) -> (..., 3) uint8."""
    wheel = color_wheel() / 255.0
    n = wheel.shape[0]
    rad = np.sqrt(u * u + v * v)
    # angle in [-1, 1]: +u maps to the wheel's end/start (red), +v a quarter of the way round
    a = np.arctan2(-v, -u) / np.pi
    fk = (a + 1.0) / 2.0 * (n - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = (k0 + 1) % n
    f = (fk - k0)[..., None]
    col = (1.0 - f) * wheel[k0 % n] + f * wheel[k1]
    inside = (rad <= 1.0)[..., None]
    # inside the wheel: desaturate towards white as the magnitude falls; beyond it: darken
    col = np.where(inside, 1.0 - rad[..., None] * (1.0 - col), col * 0.75)
    return np.clip(np.floor(255.0 * col), 0, 255).astype(np.uint8)


def flow_to_color(flow, max_mag: float | None = None) -> np.ndarray:
    """Colour an optical-flow field (or a flow video) with the standard wheel.

    flow: (2, H, W) or (2, T, H, W) (u, v) in pixels (l4p's channel-first layout). Magnitudes are
    divided by `max_mag` (default: the largest finite magnitude, over all frames for a video);
    larger ones are drawn darkened. Zero flow is white; non-finite flow is black.
    Returns (H, W, 3) or (T, H, W, 3) uint8.
    """
    f = to_numpy(flow).astype(np.float64)
    if f.ndim not in (3, 4) or f.shape[0] != 2:
        raise InputError(f"flow must be (2, H, W) or (2, T, H, W), got shape {f.shape}")
    u, v = f[0], f[1]
    finite = np.isfinite(u) & np.isfinite(v)
    u, v = np.where(finite, u, 0.0), np.where(finite, v, 0.0)
    mag = np.sqrt(u * u + v * v)
    if max_mag is None:
        max_mag = float(mag.max()) if mag.size else 0.0
    elif not max_mag > 0:
        raise InputError(f"max_mag must be positive (pixels), got {max_mag}")
    scale = max_mag if max_mag > 0 else 1.0
    img = _uv_to_color(u / scale, v / scale)
    img[~finite] = 0
    return img


def flow_wheel_legend(size: int = 128) -> np.ndarray:
    """An image of the colour wheel itself: (size, size, 3) uint8, white outside the disc.

    The flow at a pixel is its offset from the centre (x right, y down) divided by the radius, so
    the centre is white and the rim fully saturated.
    """
    c = size / 2.0
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    u, v = (xs - c) / c, (ys - c) / c
    img = _uv_to_color(u, v)
    img[np.sqrt(u * u + v * v) > 1.0] = 255
    return img
