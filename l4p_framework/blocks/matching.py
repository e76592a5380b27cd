"""Classical frame matching that heads can build on: pyramidal Lucas-Kanade flow and flow chaining.

The official L4P heads decode from tokens alone. A small encoder trained from scratch on a CPU budget
does not learn to match pixels, so the flow and tracking heads can start from these parameter-free
estimates computed from the window's frames (their `matching` option) and learn on top of them.

Conventions: video (B, 3, T, H, W) float in [0, 1]; flow (B, 2, T, H, W) backward, frame t -> t-1, in
pixels (channel 0: x, right; channel 1: y, down), pixel centres at +0.5; frame 0 of a window has no
previous frame and gets zero flow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..geometry.camera import pixel_centers


class LucasKanadeConfig(BaseModel):
    """Options of `lucas_kanade_flow`, for heads whose config offers frame matching.

    levels: pyramid levels (each halves H and W); window: box size in pixels (odd); iterations:
    damped least-squares steps per level; damping: Tikhonov term added to the structure tensor.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: int = Field(2, ge=1, le=5)
    window: int = Field(7, ge=3, le=31)
    iterations: int = Field(3, ge=1, le=10)
    damping: float = Field(1e-3, gt=0)

    @field_validator("window")
    @classmethod
    def _odd_window(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"window must be odd (a centred box), got {v}")
        return v


def sample_bilinear(image: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of image (N, C, H, W) at xy (N, H', W', 2) pixels (x, y; pixel centres at
    +0.5), border padding -> (N, C, H', W')."""
    h, w = image.shape[-2:]
    grid = xy * xy.new_tensor((2 / w, 2 / h)) - 1
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bilinear backward warp: out[x] = image[x + flow[x]] (border padding).

    image: (N, C, H, W); flow: (N, 2, H, W) pixels -> (N, C, H, W).
    """
    centres = pixel_centers(tuple(image.shape[-2:]), device=image.device, dtype=flow.dtype)
    return sample_bilinear(image, centres + rearrange(flow, "n c h w -> n h w c"))


def _gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences (N, C, H, W) -> (d/dx, d/dy), replicated borders, per pixel."""
    px = F.pad(image, (1, 1, 0, 0), mode="replicate")
    py = F.pad(image, (0, 0, 1, 1), mode="replicate")
    return (px[..., 2:] - px[..., :-2]) / 2, (py[..., 2:, :] - py[..., :-2, :]) / 2


def _structure(cur: torch.Tensor, prev_warped: torch.Tensor, window: int, damping: float):
    """Damped structure tensor [[a, b], [b, c]] and right-hand side (p, q), box-summed over `window`.

    cur, prev_warped: (N, C, H, W) -> five (N, 1, H, W) maps (sums over channels, box means).
    """
    gx, gy = _gradients(prev_warped)
    diff = cur - prev_warped
    products = torch.stack(
        [(x * y).sum(1) for x, y in ((gx, gx), (gx, gy), (gy, gy), (gx, diff), (gy, diff))], 1
    )
    boxed = F.avg_pool2d(products, window, 1, window // 2, count_include_pad=False)
    a, b, c, p, q = boxed.split(1, dim=1)
    return a + damping, b, c + damping, p, q


def lucas_kanade_flow(
    video: torch.Tensor, *, levels: int = 2, window: int = 7, iterations: int = 3, damping: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coarse-to-fine Lucas-Kanade backward flow of every frame to the one before it.

    video: (B, 3, T, H, W) in [0, 1]. Per pyramid level (each halves H and W, coarsest first), the
    previous frame is warped by the current flow and `iterations` damped least-squares steps solve
    grad(prev) . d = cur - warp(prev) over a `window` x `window` box. Computed in float32 (autocast off),
    without parameters; differentiable but normally used as a fixed input.

    Returns flow (B, 2, T, H, W) in pixels (frame 0: zeros) and confidence (B, 1, T, H, W): log of
    the smaller eigenvalue of the damped structure tensor at full resolution (low = untextured;
    frame 0 repeats frame 1's, a single frame gets log(damping)).
    """
    b, _, t, h, w = video.shape
    if t < 2:
        return video.new_zeros(b, 2, t, h, w).float(), video.new_full(
            (b, 1, t, h, w), math.log(damping)
        ).float()
    with torch.autocast(device_type=video.device.type, enabled=False):
        frames = video.float()
        cur = [rearrange(frames[:, :, 1:], "b c t h w -> (b t) c h w")]
        prev = [rearrange(frames[:, :, :-1], "b c t h w -> (b t) c h w")]
        for _ in range(levels - 1):
            cur.append(F.avg_pool2d(cur[-1], 2, ceil_mode=True))
            prev.append(F.avg_pool2d(prev[-1], 2, ceil_mode=True))
        flow = cur[-1].new_zeros(cur[-1].shape[0], 2, *cur[-1].shape[-2:])
        for c_img, p_img in zip(reversed(cur), reversed(prev)):
            size = c_img.shape[-2:]
            if flow.shape[-2:] != size:
                scale = torch.tensor([size[1] / flow.shape[-1], size[0] / flow.shape[-2]], device=flow.device)
                flow = (
                    F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
                    * scale[:, None, None]
                )
            for _ in range(iterations):
                a, bb, c, p, q = _structure(c_img, warp(p_img, flow), window, damping)
                det = a * c - bb * bb
                flow = flow + torch.cat(((c * p - bb * q) / det, (a * q - bb * p) / det), dim=1)
        a, bb, c, _, _ = _structure(cur[0], warp(prev[0], flow), window, damping)
        min_eig = (a + c) / 2 - torch.sqrt(((a - c) / 2).square() + bb.square())
        confidence = torch.log(min_eig.clamp_min(damping))
        flow = rearrange(flow, "(b t) c h w -> b c t h w", b=b)
        confidence = rearrange(confidence, "(b t) c h w -> b c t h w", b=b)
        first = flow.new_zeros(b, 2, 1, h, w)
        return torch.cat((first, flow), dim=2), torch.cat((confidence[:, :, :1], confidence), dim=2)


def forward_backward_flow(video: torch.Tensor, **lk_options) -> tuple[torch.Tensor, torch.Tensor]:
    """Lucas-Kanade flow both ways: video (B, 3, T, H, W) -> (forward, backward), each (B, 2, T, H, W)
    pixels; forward[t] maps frame t -> t+1 (last frame zeros), backward[t] maps t -> t-1 (frame 0
    zeros). Forward flow is the backward flow of the time-reversed clip. `lk_options`: see
    `lucas_kanade_flow`."""
    backward, _ = lucas_kanade_flow(video, **lk_options)
    reversed_backward, _ = lucas_kanade_flow(video.flip(2), **lk_options)
    return reversed_backward.flip(2), backward


def chain_tracks(
    forward: torch.Tensor,
    backward: torch.Tensor,
    points: torch.Tensor,
    frames: torch.Tensor,
    forward_occluded: torch.Tensor | None = None,
    backward_occluded: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Track points by chaining flow from their query frame, forwards and backwards in time.

    forward, backward: (B, 2, T, H, W) flow in pixels (see `forward_backward_flow`); points (B, n, 2)
    (x, y) pixels at frames (B, n) (integer frame index in [0, T)). Position at t > frame: position at
    t - 1 plus the forward flow of frame t - 1 sampled there (bilinear, border); likewise backwards.
    forward_occluded, backward_occluded: optional (B, 1, T, H, W) bool round-trip failures of those
    flows (`l4p_framework.matching.MatchFeatures`): a point whose step starts where the flow fails
    (bilinear sample > 0.5) is occluded from then on, away from its query frame (the chained
    position then follows whatever covered it).

    Returns tracks (B, n, T, 2) pixels, equal to `points` at each point's frame, and occluded
    (B, n, T) bool (also True where the position leaves the H x W image; all False at the query
    frame, and everywhere but outside the image when no occlusion maps are given).
    """
    t, (h, w) = forward.shape[2], forward.shape[-2:]

    def sample(field: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        return rearrange(sample_bilinear(field, rearrange(xy, "b n c -> b n 1 c")), "b c n 1 -> b n c")

    def step(flow, occluded_map, i, xy, occluded):
        moved = xy + sample(flow[:, :, i].float(), xy)
        if occluded_map is not None:
            occluded = occluded | (sample(occluded_map[:, :, i].float(), xy)[..., 0] > 0.5)
        return moved, occluded

    frames = frames.long()
    tracks, occlusion = [points] * t, [torch.zeros_like(points[..., 0], dtype=torch.bool)] * t
    xy, occ = points, occlusion[0]
    for i in range(1, t):  # forwards: points whose query frame is earlier move on
        moving = (frames < i)[..., None]
        new_xy, new_occ = step(forward, forward_occluded, i - 1, xy, occ)
        xy, occ = torch.where(moving, new_xy, points), new_occ & moving[..., 0]
        tracks[i], occlusion[i] = xy, occ
    xy, occ = points, occlusion[0]
    for i in range(t - 2, -1, -1):  # backwards
        moving = (frames > i)[..., None]
        new_xy, new_occ = step(backward, backward_occluded, i + 1, xy, occ)
        xy, occ = torch.where(moving, new_xy, points), new_occ & moving[..., 0]
        tracks[i] = torch.where(moving, xy, tracks[i])
        occlusion[i] = torch.where(moving[..., 0], occ, occlusion[i])
    tracks, occluded = torch.stack(tracks, dim=2), torch.stack(occlusion, dim=2)
    outside = (tracks < 0).any(-1) | (tracks[..., 0] > w) | (tracks[..., 1] > h)
    return tracks, occluded | outside
