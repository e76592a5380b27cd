"""Colour maps built from small control-point tables, and depth colouring.

The ramps are defined here (not taken from another library): a few RGB control points on
[0, 1], linearly interpolated. ``"turbo"`` is a rainbow-like ramp (dark indigo -> blue -> cyan
-> green -> yellow -> orange -> dark red) for depth; ``"magma"`` a dark-to-light ramp (black ->
purple -> pink -> orange -> pale yellow) whose lightness rises monotonically; ``"gray"`` is linear.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

_TABLES: dict[str, np.ndarray] = {
    "turbo": np.array(
        [
            [0.00, 48, 18, 59],
            [0.12, 66, 92, 216],
            [0.25, 40, 170, 240],
            [0.38, 30, 220, 170],
            [0.50, 120, 245, 80],
            [0.62, 200, 235, 50],
            [0.75, 250, 185, 45],
            [0.88, 232, 98, 24],
            [1.00, 122, 4, 3],
        ]
    ),
    "magma": np.array(
        [
            [0.00, 0, 0, 4],
            [0.20, 44, 17, 96],
            [0.40, 114, 31, 129],
            [0.60, 184, 55, 121],
            [0.80, 246, 113, 92],
            [0.90, 253, 176, 122],
            [1.00, 252, 250, 190],
        ]
    ),
    "gray": np.array([[0.0, 0, 0, 0], [1.0, 255, 255, 255]]),
}

COLORMAPS: tuple[str, ...] = tuple(_TABLES)


def to_numpy(x) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor (detached, on CPU) or a nested sequence."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def apply_colormap(
    x,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "turbo",
    invalid_color: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Map scalars to RGB through a colour ramp.

    x: (...,) float array or tensor, e.g. (H, W) or (T, H, W). Values are normalised by
    (x - vmin) / (vmax - vmin) and clipped to [0, 1]; vmin / vmax default to the min / max of the
    finite values. Non-finite values get `invalid_color`. Returns (..., 3) uint8.
    """
    if cmap not in _TABLES:
        raise InputError(f"unknown colour map {cmap!r}; choose one of {COLORMAPS}")
    a = to_numpy(x).astype(np.float64)
    finite = np.isfinite(a)
    if vmin is None or vmax is None:
        vals = a[finite]
        lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    span = vmax - vmin
    u = (a - vmin) / span if span > 0 else np.zeros_like(a)
    u = np.clip(np.where(finite, u, 0.0), 0.0, 1.0)
    table = _TABLES[cmap]
    rgb = np.stack([np.interp(u, table[:, 0], table[:, c]) for c in (1, 2, 3)], axis=-1)
    rgb = np.where(finite[..., None], rgb, np.asarray(invalid_color, dtype=np.float64))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def depth_to_color(
    depth,
    valid=None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    cmap: str = "turbo",
) -> np.ndarray:
    """Colour a depth map (or a depth video) by inverse depth with robust limits.

    depth: (H, W) or (T, H, W) z-depth; valid: same shape, bool, optional (default: finite and
    > 0). Inverse depth is mapped linearly between its `percentiles` over all valid pixels (of
    all frames, so a video's colours are consistent over time): near is the top of the ramp (red
    for "turbo"), far the bottom. Invalid pixels are black. Returns (..., 3) uint8.
    """
    d = to_numpy(depth).astype(np.float64)
    if d.ndim not in (2, 3):
        raise InputError(f"depth must be (H, W) or (T, H, W), got shape {d.shape}")
    ok = np.isfinite(d) & (d > 0)
    if valid is not None:
        v = to_numpy(valid)
        if v.shape != d.shape:
            raise InputError(f"valid must have the depth's shape {d.shape}, got {v.shape}")
        ok &= v.astype(bool)
    inv = np.full(d.shape, np.nan)
    inv[ok] = 1.0 / d[ok]
    if ok.any():
        lo, hi = np.percentile(inv[ok], percentiles)
    else:
        lo, hi = 0.0, 1.0
    return apply_colormap(inv, vmin=float(lo), vmax=float(hi), cmap=cmap)
