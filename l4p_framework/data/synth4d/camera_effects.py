"""What a real camera does to a rendered synth4d video: blur, exposure drift, noise, compression.

Every function takes and returns a video (3, T, H, W) float32 RGB in [0, 1] (intermediate steps may
leave it slightly outside; `apply_camera_effects` clamps) and changes only the video, never the
labels. `apply_camera_effects` draws all parameters of one clip from a generator, so a seed gives
the same artefacts every time, and applies the effects in the order a camera does: optics and
exposure time (motion blur, defocus), gains (exposure, white balance), sensor noise, then JPEG.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange


def camera_velocity(flow: torch.Tensor, flow_valid: torch.Tensor, flow_forward: torch.Tensor) -> torch.Tensor:
    """Mean image velocity (2, T) of each frame in pixels per frame, (x, y).

    flow (2, T, H, W) = position at t-1 minus position at t (valid where flow_valid (1, T, H, W));
    flow_forward (2, T, H, W) = position at t+1 minus at t (zero where undefined). The velocity is
    the mean of the forward flow and the negated backward flow where each is defined.
    """
    valid_b = flow_valid[0].float()
    valid_f = (flow_forward != 0).any(0).float()
    back = -(flow * valid_b).sum((-2, -1)) / valid_b.sum((-2, -1)).clamp(min=1)
    fwd = (flow_forward * valid_f).sum((-2, -1)) / valid_f.sum((-2, -1)).clamp(min=1)
    has_b = (valid_b.sum((-2, -1)) > 0).float()
    has_f = (valid_f.sum((-2, -1)) > 0).float()
    return (back * has_b + fwd * has_f) / (has_b + has_f).clamp(min=1)


def motion_blur(video: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Average of each frame over shifts from -shift/2 to +shift/2 (a box blur along a line).

    shift (2, T) pixels (x, y): the image motion during the exposure of each frame. Sub-pixel taps
    are at most one pixel apart (bilinear, border-replicated); shifts under 0.25 px leave the frame.
    """
    length = float(shift.norm(dim=0).max())
    if length < 0.25:
        return video
    _, n_t, h, w = video.shape
    taps = min(17, math.ceil(length) + 1)
    frames = rearrange(video, "c t h w -> t c h w")
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    xs, ys = xs * (w - 1) / w, ys * (h - 1) / h  # pixel centres for align_corners=False
    base = torch.stack([xs, ys], -1).expand(n_t, h, w, 2)
    to_grid = torch.tensor([2.0 / w, 2.0 / h])  # pixels -> normalised grid units
    out = torch.zeros_like(frames)
    for a in torch.linspace(-0.5, 0.5, taps):
        offset = (a * shift.T * to_grid)[:, None, None, :]  # (T, 1, 1, 2)
        out += F.grid_sample(
            frames, base + offset, mode="bilinear", padding_mode="border", align_corners=False
        )
    return rearrange(out / taps, "t c h w -> c t h w")


def defocus_blur(video: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every frame with standard deviation `sigma` pixels (reflect edges)."""
    if sigma < 0.1:
        return video
    radius = max(1, math.ceil(3 * sigma))
    _, _, h, w = video.shape
    radius = min(radius, h - 1, w - 1)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = rearrange(video, "c t h w -> (c t) 1 h w")
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.reshape(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.reshape(1, 1, -1, 1))
    return rearrange(x, "(c t) 1 h w -> c t h w", c=3)


def drifting_gains(g: torch.Generator, num_frames: int) -> torch.Tensor:
    """Per-frame RGB gains (3, T): exposure and white balance that drift smoothly over the clip.

    log gain = clip-level exposure offset (+-0.25) + a slow sinusoidal exposure drift (up to 0.15),
    plus per channel a white-balance offset (+-0.1, red and blue relative to green) and a slow drift
    (up to 0.05). Periods are 20-120 frames, so neighbouring frames differ by a few percent at most.
    """

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    t = torch.arange(num_frames, dtype=torch.float32)
    exposure = uniform(-0.25, 0.25) + uniform(0.0, 0.15) * torch.sin(
        uniform(0.05, 0.3) * t + uniform(0.0, 2 * math.pi)
    )
    balance = uniform(-0.1, 0.1, 3) * torch.tensor([1.0, 0.0, 1.0])
    drift = uniform(0.0, 0.05, 3)[:, None] * torch.sin(
        uniform(0.05, 0.3, 3)[:, None] * t + uniform(0.0, 2 * math.pi, 3)[:, None]
    )
    return torch.exp(exposure[None] + balance[:, None] + drift)


def apply_gains(video: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """video (3, T, H, W) times per-channel, per-frame gains (3, T)."""
    return video * gains[:, :, None, None]


def sensor_noise(video: torch.Tensor, read_std: float, shot_gain: float, noise: torch.Tensor) -> torch.Tensor:
    """Add Gaussian read noise and signal-dependent shot noise.

    Per-pixel std = sqrt(read_std^2 + shot_gain * signal) with signal in [0, 1] intensity units
    (shot_gain = intensity per photo-electron); noise (3, T, H, W) is standard normal.
    """
    std = video.clamp(min=0).mul(shot_gain).add_(read_std**2).sqrt_()
    return video + std * noise


def jpeg_compress(video: torch.Tensor, qualities: list[int | None]) -> torch.Tensor:
    """JPEG-encode and decode frame t at quality qualities[t] (cv2, 0-100); None leaves the frame as is.

    video (3, T, H, W) in [0, 1] is quantised to 8 bits for the compressed frames only.
    """
    out = video.clone()
    for t, quality in enumerate(qualities):
        if quality is None:
            continue
        rgb = rearrange(video[:, t], "c h w -> h w c").clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
        ok, data = cv2.imencode(
            ".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
        )
        if not ok:
            raise RuntimeError(f"cv2 could not JPEG-encode frame {t}")
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        out[:, t] = rearrange(torch.from_numpy(bgr[..., ::-1].copy()), "h w c -> c h w").float() / 255.0
    return out


def apply_camera_effects(
    video: torch.Tensor,
    flow: torch.Tensor,
    flow_valid: torch.Tensor,
    flow_forward: torch.Tensor,
    g: torch.Generator,
) -> torch.Tensor:
    """The rendered video (3, T, H, W) in [0, 1] as a real camera would record it, in [0, 1].

    flow, flow_valid, flow_forward are the clip's labels (see `camera_velocity`); they are read,
    not changed. Parameters drawn from g: exposure time 20-70 % of the frame interval (motion blur
    along the frame's mean image motion), defocus sigma 0-1 px, drifting exposure/white-balance
    gains, read noise std 0.002-0.012, shot gain 0.0002-0.003, and JPEG at quality 40-90 on every
    frame (half of the clips) or on a random half of the frames.
    """
    n_t = video.shape[1]

    def uniform(lo: float, hi: float) -> float:
        return float(lo + (hi - lo) * torch.rand((), generator=g))

    exposure = uniform(0.2, 0.7)
    sigma = uniform(0.0, 1.0)
    gains = drifting_gains(g, n_t)
    read_std, shot_gain = uniform(0.002, 0.012), uniform(0.0002, 0.003)
    every_frame = bool(torch.rand((), generator=g) < 0.5)
    some = (torch.rand(n_t, generator=g) < 0.5).tolist()
    quality = torch.randint(40, 91, (n_t,), generator=g).tolist()
    qualities = [q if every_frame or pick else None for q, pick in zip(quality, some)]
    noise = torch.randn(video.shape, generator=g)

    out = motion_blur(video, exposure * camera_velocity(flow, flow_valid, flow_forward))
    out = defocus_blur(out, sigma)
    out = apply_gains(out, gains)
    out = sensor_noise(out, read_std, shot_gain, noise).clamp_(0.0, 1.0)
    return jpeg_compress(out, qualities)
