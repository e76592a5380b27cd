"""The flow head's learned refiner: corrects the shared frame matching's flow with what the frames
and the token decoder say (`FlowConfig.matching = "shared"`, see `l4p_framework.matching`)."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from l4p_framework.blocks.matching import warp
from l4p_framework.matching import MatchFeatures


class FlowRefiner(nn.Module):
    """A per-frame CNN at the input resolution that corrects the matching flow.

    Input per frame: the matching's backward flow (2), its texture confidence (1) and round-trip
    failure (1), the token decoder's flow (2, upsampled to the input resolution), the current frame
    (3) and the photometric residual |frame - warp(previous frame, matching flow)| (3). Output: the
    correction (pixels) added to the matching flow; the token flow is an input, not a term of the
    sum (at the input resolution the 64x64 decoder's flow is mostly noise that a sum would have to
    learn to cancel). The last convolution starts at zero, so an untrained refiner returns the
    matching flow exactly.
    """

    IN_CHANNELS = 12

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(self.IN_CHANNELS, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4),
            nn.GELU(),
            nn.Conv2d(width, 2, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    CHUNK_PIXELS = 1_000_000
    """The CNN runs on frames in chunks of about this many pixels: its activations at 1280x720 would
    otherwise take about 2 GB per layer for a 16-frame window. Chunking changes no value."""

    def forward(self, frames: torch.Tensor, matches: MatchFeatures, token_flow: torch.Tensor) -> torch.Tensor:
        """frames (B, 3, T, H, W) in [0, 1]; matches of those frames; token_flow (B, 2, T, H, W) px
        -> refined flow (B, 2, T, H, W) px = matches.backward + correction."""
        b, _, t, h, w = frames.shape
        previous = torch.cat((frames[:, :, :1], frames[:, :, :-1]), dim=2)
        inputs = [
            rearrange(x, "b c t h w -> (b t) c h w")
            for x in (
                frames,
                previous,
                matches.backward,
                matches.confidence,
                matches.backward_occluded.to(frames.dtype),
                token_flow,
            )
        ]
        step = max(1, self.CHUNK_PIXELS // (h * w))
        corrections = [self._correction(*(x[i : i + step] for x in inputs)) for i in range(0, b * t, step)]
        correction = rearrange(torch.cat(corrections), "(b t) c h w -> b c t h w", b=b)
        return matches.backward + correction

    def _correction(self, current, previous, init, confidence, occluded, token_flow) -> torch.Tensor:
        """The CNN on a chunk of frames, every input (F, C, H, W) -> (F, 2, H, W) pixels."""
        residual = (current - warp(previous.float(), init.float()).to(current.dtype)).abs()
        return self.net(torch.cat((init, confidence, occluded, token_flow, current, residual), dim=1))
