"""Classical frame matching (l4p_framework.blocks.matching): Lucas-Kanade flow on known motion, flow
chaining into tracks, and the frame check that heads with matching use."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from l4p_framework.blocks.matching import (
    LucasKanadeConfig,
    chain_tracks,
    forward_backward_flow,
    lucas_kanade_flow,
    warp,
)
from l4p_framework.data.synth4d import Synth4D


def smooth_texture(h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) band-limited random texture in [0, 1] (blurred noise, like synth4d's textures)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, h // 4, w // 4, generator=g)
    return F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def translating_clip(shift: tuple[float, float], frames: int = 4) -> torch.Tensor:
    """(1, 3, T, H, W): frame t is the texture moved by t * shift pixels (x right, y down)."""
    image = smooth_texture(96, 96)
    out = []
    for t in range(frames):
        moved = warp(
            image, torch.tensor([-t * shift[0], -t * shift[1]]).view(1, 2, 1, 1).expand(1, 2, 96, 96)
        )
        out.append(moved[..., 16:80, 16:80])  # crop: no border effects
    return torch.stack(out, dim=2)


def test_warp_by_an_integer_shift_moves_pixels():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    flow = torch.zeros(1, 2, 4, 4)
    flow[:, 0] = 1.0  # sample one pixel to the right
    torch.testing.assert_close(warp(image, flow)[..., :3], image[..., 1:])


def test_lucas_kanade_recovers_a_subpixel_translation():
    """Frame t moves by (0.6, -0.4) px per frame: backward flow t -> t-1 is (-0.6, +0.4), found to
    within 0.1 px (the damping biases it slightly towards zero; zero flow would be 0.72 px off)."""
    video = translating_clip((0.6, -0.4))
    flow, confidence = lucas_kanade_flow(video)
    assert flow.shape == (1, 2, 4, 64, 64) and confidence.shape == (1, 1, 4, 64, 64)
    assert float(flow[:, :, 0].abs().max()) == 0.0  # frame 0 has no previous frame
    inner = flow[:, :, 1:, 8:-8, 8:-8]
    expected = torch.tensor([-0.6, 0.4]).view(1, 2, 1, 1, 1)
    err = (inner - expected).norm(dim=1).mean()
    assert float(err) < 0.1, f"mean end-point error {float(err):.3f} px on a pure translation"


def test_lucas_kanade_beats_zero_flow_on_synth4d():
    """On real synth4d clips (64 x 64) the classical estimate is well below the zero-flow EPE."""
    sample = Synth4D("val", height=64, width=64, num_frames=8)[0]
    flow, _ = lucas_kanade_flow(sample["video"][None])
    gt, valid = sample["flow"][None], sample["flow_valid"][None].clone()
    valid[:, :, 0] = False
    epe = (flow - gt).norm(dim=1, keepdim=True)[valid].mean()
    zero = gt.norm(dim=1, keepdim=True)[valid].mean()
    assert float(epe) < 0.75 * float(zero), (float(epe), float(zero))


def test_forward_and_backward_flow_point_opposite_ways():
    forward, backward = forward_backward_flow(translating_clip((0.5, 0.0)))
    assert float(forward[:, :, -1].abs().max()) == 0.0 and float(backward[:, :, 0].abs().max()) == 0.0
    inner = (slice(None), slice(None), slice(1, 3), slice(8, -8), slice(8, -8))
    torch.testing.assert_close(forward[inner].mean((2, 3, 4)), torch.tensor([[0.5, 0.0]]), atol=0.03, rtol=0)
    torch.testing.assert_close(
        backward[inner].mean((2, 3, 4)), torch.tensor([[-0.5, 0.0]]), atol=0.03, rtol=0
    )


def test_chained_tracks_follow_constant_flow_both_ways():
    t, h, w = 6, 32, 32
    forward = torch.zeros(1, 2, t, h, w)
    forward[:, 0] = 1.5  # x + 1.5 px per frame
    backward = -forward
    points = torch.tensor([[[10.5, 12.5], [20.0, 8.0]]])
    frames = torch.tensor([[0, 3]])
    tracks, occluded = chain_tracks(forward, backward, points, frames)
    assert tracks.shape == (1, 2, t, 2) and occluded.shape == (1, 2, t) and not occluded.any()
    steps = torch.arange(t, dtype=torch.float32)
    torch.testing.assert_close(tracks[0, 0, :, 0], 10.5 + 1.5 * steps)
    torch.testing.assert_close(tracks[0, 1, :, 0], 20.0 + 1.5 * (steps - 3))
    torch.testing.assert_close(tracks[0, :, :, 1], points[0, :, None, 1].expand(2, t))


def test_chained_tracks_are_occluded_from_a_failed_round_trip_on_and_outside_the_image():
    t, h, w = 6, 32, 32
    forward = torch.zeros(1, 2, t, h, w)
    forward[:, 0] = 4.0  # x + 4 px per frame
    backward = -forward
    fwd_occ = torch.zeros(1, 1, t, h, w, dtype=torch.bool)
    fwd_occ[:, :, 2, :, 16:20] = True  # frame 2's flow fails its round trip at x in [16, 20)
    bwd_occ = torch.zeros_like(fwd_occ)
    points = torch.tensor([[[10.5, 12.5], [2.0, 2.0], [30.5, 5.5]]])  # x = 18.5 at frame 2
    frames = torch.tensor([[0, 0, 5]])
    _, occluded = chain_tracks(forward, backward, points, frames, fwd_occ, bwd_occ)
    # point 0 steps from frame 2 where the round trip fails: occluded at frames 3, 4, 5 (sticky)
    assert occluded[0, 0].tolist() == [False, False, False, True, True, True]
    # point 1 never meets the failure (x = 2, 6, 10, ...); point 2 goes backwards from x = 30.5:
    # 26.5, 22.5, 18.5 (frame 2: visible, its backward flow never failed), then 14.5 and 10.5
    assert not occluded[0, 1].any() and not occluded[0, 2].any()
    # leaving the image: point 0 is at x = 34.5 > 32 on frame 6 of a longer clip
    long = torch.zeros(1, 2, 7, h, w)
    long[:, 0] = 4.0
    _, out = chain_tracks(long, -long, points[:, :1], frames[:, :1])
    assert out[0, 0].tolist() == [False] * 6 + [True]


def test_lucas_kanade_options_are_validated():
    with pytest.raises(ValueError, match="odd"):
        LucasKanadeConfig(window=6)
    with pytest.raises(ValueError):
        LucasKanadeConfig(levels=0)


def test_a_single_frame_has_zero_flow():
    flow, confidence = lucas_kanade_flow(torch.rand(2, 3, 1, 16, 16))
    assert flow.shape == (2, 2, 1, 16, 16) and float(flow.abs().max()) == 0.0
    assert confidence.shape == (2, 1, 1, 16, 16)
