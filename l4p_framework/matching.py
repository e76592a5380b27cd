"""Dense frame matching, computed once per window at the video's input resolution and shared by heads.

`compute_matches` returns optical flow in both directions between consecutive frames, forward-backward
occlusion maps and a texture confidence. Two backends: OpenCV's DIS (Kroeger et al. 2016, CPU, the
default) and the torch pyramidal Lucas-Kanade of `blocks.matching` (runs on the video's device).
`benchmarks/matching.py` measures their accuracy and speed on synth4d.

Conventions (as in `blocks.matching`): flow channel 0 is x (right), channel 1 is y (down), in pixels;
pixel centres at +0.5. Nothing here has parameters or gradients: the outputs are fixed inputs.

Threads: DIS runs in OpenCV's own thread pool, whose size `cv2.setNumThreads` sets for the whole
process. This module leaves it as it is (OpenCV's default: one thread per core); a caller that wants
fewer threads (data-loader workers, a benchmark) sets it itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import BaseModel, ConfigDict

from .blocks.matching import (
    LucasKanadeConfig,
    _gradients,
    forward_backward_flow,
    lucas_kanade_flow,
    sample_bilinear,
)
from .errors import InputError, check_tensor
from .geometry.camera import pixel_centers

if TYPE_CHECKING:
    from .data.video import FrameTransform

CONFIDENCE_WINDOW = 7
"""Box size in pixels over which the structure tensor of `texture_confidence` is averaged."""

CONFIDENCE_SCALE = 1e-5
"""Half-confidence point c of `lam / (lam + c)`, lam in (intensity / pixel)^2 with intensity in [0, 1]:
an rms gradient of 0.0032 / px (0.8 grey levels per pixel) in the weakest direction gives 0.5. On
synth4d test clips the median pixel gets ~0.6, +-1 grey-level noise on a flat region ~0.16, and the
pixels where DIS's error rises (lam < 1e-6) below 0.1."""

_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as cv2.COLOR_RGB2GRAY


class MatchConfig(BaseModel):
    """Options of `compute_matches`.

    backend: "dis" (OpenCV DIS, CPU) or "lucas-kanade" (`blocks.matching`, torch). preset: DIS
    preset (more accurate and slower from "ultrafast" to "medium"). variational_refinement (DIS
    only): True keeps the preset's refinement iterations (OpenCV: 0 for "ultrafast", 5 otherwise,
    so "ultrafast" is the same either way), False turns refinement off. lucas_kanade: options of the
    Lucas-Kanade backend. occlusion_alpha, occlusion_beta: forward-backward consistency test
    (Sundaram et al. 2010), see `MatchFeatures`; beta in px^2.

    The defaults are the most accurate configuration that computes both directions in <= 150 ms per
    frame pair at 240x320 on the development CPU (benchmarks/README.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["dis", "lucas-kanade"] = "dis"
    preset: Literal["ultrafast", "fast", "medium"] = "medium"
    variational_refinement: bool = True
    lucas_kanade: LucasKanadeConfig = LucasKanadeConfig()
    occlusion_alpha: float = 0.01
    occlusion_beta: float = 0.5


@dataclass(frozen=True)
class MatchFeatures:
    """Dense matches between the consecutive frames of one window, all at the input resolution.

    forward: (B, 2, T, H, W) float32 pixels, flow of frame t to t+1 (last frame: zeros).
    backward: (B, 2, T, H, W) float32 pixels, flow of frame t to t-1 (frame 0: zeros).
    forward_occluded, backward_occluded: (B, 1, T, H, W) bool, True where the flow fails the round
    trip: |w + w'(x + w)|^2 > alpha (|w|^2 + |w'(x + w)|^2) + beta, w the flow, w' the other
    direction's flow of the target frame sampled bilinearly at x + w; also True where x + w leaves the
    image. False where the flow is undefined (last frame forward, frame 0 backward).
    confidence: (B, 1, T, H, W) float32 in [0, 1], texture confidence of each frame (the same for
    every backend): `lam / (lam + CONFIDENCE_SCALE)`, lam the smaller eigenvalue of the grey-level
    structure tensor averaged over a `CONFIDENCE_WINDOW` box; low in untextured regions.
    """

    forward: torch.Tensor
    backward: torch.Tensor
    forward_occluded: torch.Tensor
    backward_occluded: torch.Tensor
    confidence: torch.Tensor


def _check_video(video: torch.Tensor) -> None:
    """Raise InputError unless video is a finite floating (B, 3, T, H, W) tensor in [0, 1]."""
    check_tensor("video", video, "(B, 3, T, H, W)", ndim=5, finite=False)  # aminmax below sees NaN
    if video.shape[1] != 3:
        raise InputError(
            f"video must have shape (B, 3, T, H, W) with 3 RGB channels, got {tuple(video.shape)}; "
            "a (B, T, 3, H, W) tensor needs rearrange(video, 'b t c h w -> b c t h w')"
        )
    if not video.is_floating_point():
        raise InputError(
            f"video must be a floating tensor in [0, 1], got dtype {video.dtype}; for uint8 frames "
            "pass video.float() / 255"
        )
    if min(video.shape) == 0:
        raise InputError(f"video has an empty dimension: shape {tuple(video.shape)}")
    low, high = (float(v) for v in torch.aminmax(video))  # NaN propagates
    if not (-1e-3 <= low and high <= 1 + 1e-3):
        raise InputError(
            f"video values must be finite and lie in [0, 1], got [{low:.3g}, {high:.3g}]; "
            "8-bit frames need / 255"
        )


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a size x size box (odd size) of x (N, C, H, W), over the pixels inside the image.

    Equals `F.avg_pool2d(x, size, 1, size // 2, count_include_pad=False)`, as sums of shifted slices
    (several times faster on CPU).
    """
    r = size // 2
    h, w = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r))
    rows = padded[..., :h, :].clone()
    for i in range(1, size):
        rows += padded[..., i : i + h, :]
    box = rows[..., :w].clone()
    for j in range(1, size):
        box += rows[..., j : j + w]

    def count(n: int) -> torch.Tensor:
        i = torch.arange(n, device=x.device)
        return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(x.dtype)

    return box / (count(h)[:, None] * count(w))


CHUNK_PIXELS = 4_000_000
"""Texture confidence and round-trip tests run on this many pixels at a time (frames or frame
pairs): the same values in bounded memory at any resolution."""


def texture_confidence(video: torch.Tensor) -> torch.Tensor:
    """Texture confidence of each frame: video (B, 3, T, H, W) in [0, 1] -> (B, 1, T, H, W) in [0, 1].

    See `MatchFeatures.confidence`; gradients are central differences (replicated borders).
    """
    grey = torch.einsum("bcthw,c->bthw", video.float(), video.new_tensor(_GREY_WEIGHTS, dtype=torch.float32))
    grey = rearrange(grey, "b t h w -> (b t) 1 h w")
    step = max(1, CHUNK_PIXELS // (grey.shape[-2] * grey.shape[-1]))  # frames at a time: bounded memory
    confidence = torch.cat([_frame_confidence(chunk) for chunk in grey.split(step)])
    return rearrange(confidence, "(b t) 1 h w -> b 1 t h w", b=video.shape[0])


def _frame_confidence(grey: torch.Tensor) -> torch.Tensor:
    """grey (F, 1, H, W) -> (F, 1, H, W) texture confidence in [0, 1] (`texture_confidence`)."""
    gx, gy = _gradients(grey)
    a, bb, c = _box_mean(torch.cat((gx * gx, gx * gy, gy * gy), dim=1), CONFIDENCE_WINDOW).split(1, dim=1)
    lam = ((a + c) / 2 - torch.sqrt(((a - c) / 2).square() + bb.square())).clamp_min(0)
    return lam / (lam + CONFIDENCE_SCALE)


def _dis_min_size(patch_size: int, finest_scale: int) -> tuple[int, int]:
    """Smallest (short side, long side) at which DIS's pyramid reaches its finest scale.

    OpenCV's DIS picks the coarsest level as min(round(log2(long / (4 patch))), floor(log2(short /
    patch))). Below the finest scale it falls back to a width-only rule that reads out of bounds on
    short, wide frames (OpenCV 5.1 segfaults at 12x64 or 24x512), so smaller frames are padded.
    """
    short = patch_size * 2**finest_scale
    long = math.ceil(4 * patch_size * 2 ** (finest_scale - 0.5)) + 1
    return short, max(short, long)


def _dis_flows(
    video: torch.Tensor, config: MatchConfig, *, forward_too: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """DIS flow both ways: video (B, 3, T, H, W) in [0, 1], T >= 2 -> (forward, backward), each
    (B, 2, T, H, W) float32 pixels on the video's device; forward is all zeros unless forward_too."""
    import cv2

    preset = {
        "ultrafast": cv2.DISOpticalFlow_PRESET_ULTRAFAST,
        "fast": cv2.DISOpticalFlow_PRESET_FAST,
        "medium": cv2.DISOpticalFlow_PRESET_MEDIUM,
    }[config.preset]
    dis = cv2.DISOpticalFlow_create(preset)
    if not config.variational_refinement:
        dis.setVariationalRefinementIterations(0)
    b, _, t, h, w = video.shape
    short, long = _dis_min_size(dis.getPatchSize(), dis.getFinestScale())
    pad_h, pad_w = max(short - h, 0), max(short - w, 0)
    if max(h + pad_h, w + pad_w) < long:  # grow the long side
        pad_h, pad_w = (pad_h, long - w) if w >= h else (long - h, pad_w)

    rgb = (video * 255).round().clamp(0, 255).to(torch.uint8)
    rgb = np.ascontiguousarray(rearrange(rgb, "b c t h w -> (b t) h w c").cpu().numpy())
    grey = []
    for frame in rgb:
        g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if pad_h or pad_w:  # replicate the edges: no texture, no motion in the padding
            g = cv2.copyMakeBorder(g, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        grey.append(g)
    forward = np.zeros((b * t, h, w, 2), np.float32)
    backward = np.zeros((b * t, h, w, 2), np.float32)
    for i in range(b * t):
        if (i + 1) % t:  # frame i has a successor in its clip
            # calc(I0, I1, None) -> (H, W, 2) as (dx, dy), with I0(x) ~ I1(x + flow(x)).
            if forward_too:
                forward[i] = dis.calc(grey[i], grey[i + 1], None)[:h, :w]
            backward[i + 1] = dis.calc(grey[i + 1], grey[i], None)[:h, :w]
    forward, backward = (
        rearrange(torch.from_numpy(f), "(b t) h w c -> b c t h w", b=b).to(video.device)
        for f in (forward, backward)
    )
    return forward, backward


def round_trip_fails(flow: torch.Tensor, other: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Forward-backward consistency test of Sundaram et al. (2010) for one direction.

    flow: (N, 2, H, W) pixels from frame a to frame b; other: (N, 2, H, W) pixels from frame b back
    to frame a. Returns (N, 1, H, W) bool, True where |w + w'(x + w)|^2 > alpha (|w|^2 +
    |w'(x + w)|^2) + beta (w' sampled bilinearly, as `blocks.matching.warp`) or where x + w lies
    outside the image.
    """
    h, w = flow.shape[-2:]
    flow = flow.contiguous()
    target = rearrange(flow, "n c h w -> n h w c") + pixel_centers(
        (h, w), device=flow.device, dtype=flow.dtype
    )
    back = sample_bilinear(other.contiguous(), target)
    error = (flow + back).square().sum(1, keepdim=True)
    bound = alpha * (flow.square().sum(1, keepdim=True) + back.square().sum(1, keepdim=True)) + beta
    size = target.new_tensor((w, h))
    outside = ((target < 0) | (target > size)).any(-1)
    return (error > bound) | rearrange(outside, "n h w -> n 1 h w")


def backward_flow(video: torch.Tensor, config: MatchConfig | None = None) -> torch.Tensor:
    """Backward flow alone, as `compute_matches` computes it: video (B, 3, T, H, W) in [0, 1] ->
    (B, 2, T, H, W) float32 pixels, frame t -> t-1 (frame 0: zeros)."""
    config = config or MatchConfig()
    _check_video(video)
    b, _, t, h, w = video.shape
    with torch.no_grad(), torch.autocast(device_type=video.device.type, enabled=False):
        if t < 2:
            return video.new_zeros(b, 2, t, h, w, dtype=torch.float32)
        if config.backend == "dis":
            return _dis_flows(video, config, forward_too=False)[1]
        return lucas_kanade_flow(video.float(), **config.lucas_kanade.model_dump())[0]


def compute_matches(video: torch.Tensor, config: MatchConfig | None = None) -> MatchFeatures:
    """Flow both ways, occlusion maps and texture confidence of every frame of a window.

    video: (B, 3, T, H, W) float in [0, 1] at the input resolution (any H, W). DIS computes on the
    CPU from 8-bit grey frames (one DIS instance per call) and returns tensors on the video's device;
    Lucas-Kanade runs in torch on the video's device. A single frame (T = 1) gets zero flow and
    nothing occluded. See `MatchFeatures` for the outputs. Raises InputError on a wrong video.
    """
    config = config or MatchConfig()
    _check_video(video)
    b, _, t, h, w = video.shape
    with torch.no_grad(), torch.autocast(device_type=video.device.type, enabled=False):
        confidence = texture_confidence(video)
        if t < 2:
            zeros = video.new_zeros(b, 2, t, h, w, dtype=torch.float32)
            none = torch.zeros(b, 1, t, h, w, dtype=torch.bool, device=video.device)
            return MatchFeatures(zeros, zeros.clone(), none, none.clone(), confidence)
        if config.backend == "dis":
            forward, backward = _dis_flows(video, config)
        else:
            forward, backward = forward_backward_flow(video.float(), **config.lucas_kanade.model_dump())
        # Pairs (t, t+1): the forward flow of t against the backward flow of t+1, and vice versa.
        fwd = rearrange(forward[:, :, :-1], "b c t h w -> (b t) c h w")
        bwd = rearrange(backward[:, :, 1:], "b c t h w -> (b t) c h w")
        alpha, beta = config.occlusion_alpha, config.occlusion_beta
        step = max(1, CHUNK_PIXELS // (h * w))  # pairs at a time: bounded memory at any resolution
        fails = [
            (round_trip_fails(f, g, alpha, beta), round_trip_fails(g, f, alpha, beta))
            for f, g in zip(fwd.split(step), bwd.split(step))
        ]
        fwd_fails = rearrange(torch.cat([f for f, _ in fails]), "(b t) 1 h w -> b 1 t h w", b=b)
        bwd_fails = rearrange(torch.cat([g for _, g in fails]), "(b t) 1 h w -> b 1 t h w", b=b)
        undefined = torch.zeros(b, 1, 1, h, w, dtype=torch.bool, device=video.device)
        return MatchFeatures(
            forward=forward,
            backward=backward,
            forward_occluded=torch.cat((fwd_fails, undefined), dim=2),
            backward_occluded=torch.cat((undefined, bwd_fails), dim=2),
            confidence=confidence,
        )


def shared_matching(batch: dict | None, head: str) -> tuple[MatchFeatures, torch.Tensor, FrameTransform]:
    """(batch["matches"], batch["frames"], batch["transform"]) for a head that reads the shared matching.

    The composed model (`L4P.stream`) and the trainers put them in every window's batch when a
    head's spec `uses_matching`; `prepare_window` does the same for a batch of clips. Raises
    InputError naming `head` when they are missing.
    """
    batch = batch or {}
    missing = [k for k in ("matches", "frames", "transform") if k not in batch]
    if missing:
        raise InputError(
            f"the {head} head reads the shared frame matching but the batch has no {missing}; run it "
            "through L4P / compose (which computes the matching once per window), or call "
            "l4p_framework.matching.prepare_window(batch, image_size, MatchConfig()) first"
        )
    return batch["matches"], batch["frames"], batch["transform"]


def prepare_window(
    batch: dict, image_size: tuple[int, int], matching: MatchConfig | None, resize: str = "letterbox"
) -> dict:
    """A training/evaluation batch of clips -> the window batch `L4P.stream` gives heads.

    batch["video"]: (B, 3, T, H, W) at the input resolution. Returns a new dict with "frames" (that
    video), "video" (fitted into the model window `image_size` by `resize`), "transform" and, when
    `matching` is given, "matches" = compute_matches(frames, matching).
    """
    from .data.video import FrameTransform

    frames = batch["video"]
    transform = FrameTransform.from_sizes(frames.shape[-2:], image_size, resize)
    out = {**batch, "frames": frames, "transform": transform}
    if transform.in_size != transform.out_size:
        b = frames.shape[0]
        fitted = transform.apply(rearrange(frames, "b c t h w -> c (b t) h w"))
        out["video"] = rearrange(fitted, "c (b t) h w -> b c t h w", b=b)
    if matching is not None:
        out["matches"] = compute_matches(frames, matching)
    return out
