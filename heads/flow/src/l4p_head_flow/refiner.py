"""The flow head's learned refiner: corrects an initial (Lucas-Kanade) flow with what the frames and
the token decoder say (`FlowConfig.matching`, see `l4p_framework.blocks.matching`)."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from l4p_framework.blocks.matching import warp


class FlowRefiner(nn.Module):
    """A per-frame CNN that corrects an initial flow with what the frames and the tokens say.

    Input per frame: the initial flow (2), its confidence (1), the token decoder's flow (2), the
    current frame (3) and the photometric residual |frame - warp(previous frame, initial flow)| (3).
    Output: the correction (pixels) added to initial + token flow. The last convolution starts at
    zero, so an untrained refiner returns initial + token flow exactly.
    """

    IN_CHANNELS = 11

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

    def forward(
        self, video: torch.Tensor, initial: torch.Tensor, confidence: torch.Tensor, token_flow: torch.Tensor
    ) -> torch.Tensor:
        """video (B, 3, T, H, W); initial, token_flow (B, 2, T, H, W) px; confidence (B, 1, T, H, W)
        -> refined flow (B, 2, T, H, W) px = initial + token_flow + correction."""
        b = video.shape[0]
        frames = rearrange(video, "b c t h w -> (b t) c h w")
        previous = rearrange(
            torch.cat((video[:, :, :1], video[:, :, :-1]), dim=2), "b c t h w -> (b t) c h w"
        )
        init = rearrange(initial, "b c t h w -> (b t) c h w")
        residual = (frames - warp(previous.float(), init.float()).to(frames.dtype)).abs()
        x = torch.cat(
            (
                init,
                rearrange(confidence, "b c t h w -> (b t) c h w"),
                rearrange(token_flow, "b c t h w -> (b t) c h w"),
                frames,
                residual,
            ),
            dim=1,
        )
        correction = rearrange(self.net(x), "(b t) c h w -> b c t h w", b=b)
        return initial + token_flow + correction
