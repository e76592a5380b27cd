"""Where a window's pixels break the camera's rigid motion: the geometric cue of `matching: shared`.

Each frame's pixels are followed `gap` frames back (forward for the window's first frames) through
the shared matching's flow; a RANSAC fit over a grid of confident points gives the dominant motion
between the two frames: a homography when it explains them (a pan, a still camera, a far scene),
else the fundamental matrix. The residual of every pixel is its transfer error to the homography or
its Sampson distance to the epipolar geometry, box-averaged and given in thousandths of the frame
diagonal: static scene points sit near 0, points of objects that move in the world do not (unless
they move along their epipolar line). Everything runs on a grid of at most `WORK_PIXELS` cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from l4p_framework.blocks.matching import sample_bilinear
from l4p_framework.geometry.camera import pixel_centers
from l4p_framework.matching import MatchFeatures

WORK_PIXELS = 20000
"""The residual is computed on a grid of at most about this many cells (a 240x320 frame: 120x160)."""
FIT_POINTS = 1000
"""About this many grid points per frame pair enter the RANSAC fits."""
CONFIDENCE = 0.2
"""Texture confidence (`MatchFeatures.confidence`) a fit point needs."""
HOMOGRAPHY_PIXELS = 0.3
"""A homography whose median transfer error is below this (working-grid cells) explains the pair."""
MIN_POINTS = 16
"""Pairs with fewer confident points get a zero residual (no evidence)."""


def follow(flow: torch.Tensor, start: int, steps: int, direction: int) -> list[torch.Tensor]:
    """Where every pixel of frame `start` lands after 1, 2, ..., `steps` frames along flow.

    flow: (2, T, H, W) pixels, frame t's flow towards t + direction (direction -1: the matching's
    backward flow, +1: its forward flow). Returns `steps` positions (H, W, 2) (x, y), pixel centres
    at +0.5.
    """
    xy = pixel_centers(tuple(flow.shape[-2:]), device=flow.device, dtype=flow.dtype)[None]  # (1, H, W, 2)
    landed = []
    for k in range(steps):
        moved = sample_bilinear(flow[None, :, start + direction * k], xy)  # (1, 2, H, W)
        xy = xy + rearrange(moved, "1 c h w -> 1 h w c")
        landed.append(xy[0])
    return landed


def rigid_residual(matches: MatchFeatures, gaps: Sequence[int] = (4,), box: int = 5) -> torch.Tensor:
    """(B, G, T, H, W) float32, one channel per gap of `gaps`: how far each pixel's motion over that
    many frames is from the frame pair's dominant rigid motion (module docstring), in thousandths of
    the frame's diagonal (2 px of a 240x320 frame = 5), box-averaged over box x box working cells.

    matches: the shared matching of one window at the input resolution (H, W). The work runs on a
    grid of at most about `WORK_PIXELS` cells (flow area-averaged), the result is upsampled
    bilinearly. Frame t pairs with t - gap when t >= gap, else with min(t + gap, T - 1) (the last
    frame of a short window: with frame 0); a window of one frame, or a pair with fewer than MIN_POINTS confident points or a failed fit, gets zeros.
    """
    b, _, t, h, w = matches.backward.shape
    factor = max(1, math.ceil(math.sqrt(h * w / WORK_PIXELS)))
    hs, ws = max(1, h // factor), max(1, w // factor)
    scale = torch.tensor([ws / w, hs / h]).view(1, 2, 1, 1, 1)

    def shrink(x: torch.Tensor) -> torch.Tensor:
        flat = rearrange(x.float().cpu(), "b c t h w -> (b t) c h w")
        return rearrange(F.interpolate(flat, size=(hs, ws), mode="area"), "(b t) c h w -> b c t h w", b=b)

    flows = {-1: shrink(matches.backward) * scale, 1: shrink(matches.forward) * scale}
    confident = shrink(matches.confidence)[:, 0].numpy() > CONFIDENCE
    out = torch.zeros(b, len(gaps), t, hs, ws)
    step = max(1, int(np.sqrt(hs * ws / FIT_POINTS)))
    grid = np.zeros((hs, ws), dtype=bool)
    grid[step // 2 :: step, step // 2 :: step] = True
    here = rearrange(pixel_centers((hs, ws), dtype=torch.float64), "h w c -> (h w) c").numpy()
    for i in range(b):
        for f in range(t if t > 1 else 0):
            fit = (grid & confident[i, f]).ravel()
            if fit.sum() < MIN_POINTS:
                continue
            pairs = [_pair(f, g, t) for g in gaps]  # (direction, steps) per gap
            chains = {
                d: follow(flows[d][i], f, max(n for e, n in pairs if e == d), d)
                for d in {d for d, _ in pairs}
            }
            for c, (direction, steps) in enumerate(pairs):
                there = rearrange(chains[direction][steps - 1], "h w c -> (h w) c").double().numpy()
                residual = _residual(here, there, fit)
                if residual is not None:
                    out[i, c, f] = torch.from_numpy(residual.reshape(hs, ws)).float()
    out = out * (1000 / math.hypot(hs, ws))
    flat = rearrange(out, "b g t h w -> (b g t) 1 h w")
    smoothed = F.avg_pool2d(flat, box, stride=1, padding=box // 2, count_include_pad=False)
    full = F.interpolate(smoothed, size=(h, w), mode="bilinear", align_corners=False)
    return rearrange(full, "(b g t) 1 h w -> b g t h w", b=b, g=len(gaps)).to(matches.backward.device)


def _pair(frame: int, gap: int, frames: int) -> tuple[int, int]:
    """(direction, steps) of the frame a frame pairs with in a window of `frames` frames (> 1)."""
    if frame >= gap:
        return -1, gap
    if frame < frames - 1:
        return 1, min(gap, frames - 1 - frame)
    return -1, frame


def _residual(here: np.ndarray, there: np.ndarray, fit: np.ndarray) -> np.ndarray | None:
    """Per-pixel residual (P,) pixels of correspondences here (P, 2) <-> there (P, 2) against the
    homography (when it explains the fit points) or fundamental matrix fitted on here[fit]."""
    import cv2

    a, c = there[fit], here[fit]
    H, _ = cv2.findHomography(a, c, cv2.RANSAC, 1.0)
    if H is not None:
        transfer = _transfer_error(H, there, here)
        if float(np.median(transfer[fit])) < HOMOGRAPHY_PIXELS:
            return transfer
    Fm, _ = cv2.findFundamentalMat(a, c, cv2.FM_RANSAC, 0.5, 0.99)
    if Fm is None or Fm.shape != (3, 3):
        return None
    return _sampson(Fm, there, here)


def _transfer_error(H: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """|H a - c| (P,) pixels for points a, c (P, 2)."""
    moved = np.concatenate([a, np.ones((len(a), 1))], -1) @ H.T
    return np.linalg.norm(
        moved[:, :2] / np.where(np.abs(moved[:, 2:]) > 1e-12, moved[:, 2:], 1e-12) - c, axis=-1
    )


def _sampson(Fm: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Sampson distance (P,) pixels of correspondences a <-> c (P, 2) to c^T F a = 0."""
    a1 = np.concatenate([a, np.ones((len(a), 1))], -1)
    c1 = np.concatenate([c, np.ones((len(c), 1))], -1)
    Fa, Ftc = a1 @ Fm.T, c1 @ Fm
    error = (c1 * Fa).sum(-1)
    return np.abs(error) / np.sqrt(Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftc[:, 0] ** 2 + Ftc[:, 1] ** 2 + 1e-12)
