"""The shared frame-matching stage (l4p_framework.matching): flow of both backends on a known
sub-pixel translation, occlusion maps from the forward-backward test, texture confidence, edge
cases and input checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import ValidationError

from l4p_framework import InputError
from l4p_framework.matching import MatchConfig, MatchFeatures, compute_matches, round_trip_fails

H, W = 64, 96
SHIFT = (1.5, -0.75)  # frame 1 is frame 0 moved right by 1.5 px and up by 0.75 px
INTERIOR = (..., slice(8, -8), slice(8, -8))  # 8 px from the border


def texture(h: int, w: int, seed: int, shift: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """(1, 3, H, W) smooth random colour texture in [0, 1], moved by `shift` (x, y) pixels.

    A sum of 24 plane waves (wavelengths 6-24 px, random directions and colours) evaluated at the
    pixel centres minus `shift`: an exact sub-pixel translation, without the blur that resampling
    one frame (and not the other) would add.
    """
    g = torch.Generator().manual_seed(seed)
    n = 24
    angle = torch.rand(n, generator=g) * 2 * math.pi
    k = 2 * math.pi / (6 + 18 * torch.rand(n, generator=g))
    phase = torch.rand(n, generator=g) * 2 * math.pi
    colour = torch.rand(3, n, generator=g)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5 - shift[1], torch.arange(w) + 0.5 - shift[0], indexing="ij")
    arg = k[:, None, None] * (angle.cos()[:, None, None] * xs + angle.sin()[:, None, None] * ys)
    waves = torch.cos(arg + phase[:, None, None])
    return (torch.einsum("cn,nhw->chw", colour, waves) * 2 / n + 0.5).clamp(0, 1)[None]


def translating_pair() -> torch.Tensor:
    """(1, 3, 2, H, W): frame 1 is frame 0 translated by SHIFT."""
    return torch.stack((texture(H, W, 0), texture(H, W, 0, SHIFT)), dim=2)


BACKENDS = {
    "dis-medium": MatchConfig(backend="dis", preset="medium"),
    "lucas-kanade": MatchConfig(backend="lucas-kanade"),
}


@pytest.mark.parametrize(
    ("name", "bound"),
    # Measured mean interior EPE (backward, forward): DIS medium 0.028, 0.034 px; Lucas-Kanade
    # 0.080, 0.080 px. Zero flow would be 1.68 px off.
    [("dis-medium", 0.1), ("lucas-kanade", 0.15)],
)
def test_both_backends_recover_a_subpixel_translation_both_ways(name: str, bound: float):
    m = compute_matches(translating_pair(), BACKENDS[name])
    assert isinstance(m, MatchFeatures)
    assert m.forward.shape == m.backward.shape == (1, 2, 2, H, W)
    assert m.forward.dtype == m.backward.dtype == torch.float32
    assert float(m.backward[:, :, 0].abs().max()) == 0.0  # frame 0 has no previous frame
    assert float(m.forward[:, :, 1].abs().max()) == 0.0  # the last frame has no next frame
    expected = torch.tensor(SHIFT)[:, None, None]
    backward_epe = (m.backward[:, :, 1][INTERIOR] + expected).norm(dim=1).mean()
    forward_epe = (m.forward[:, :, 0][INTERIOR] - expected).norm(dim=1).mean()
    assert float(backward_epe) < bound, f"{name}: backward EPE {float(backward_epe):.3f} px"
    assert float(forward_epe) < bound, f"{name}: forward EPE {float(forward_epe):.3f} px"
    # For a translation, the forward flow is the negated backward flow (measured 0.03 / 0.12 px).
    opposite = (m.forward[:, :, 0] + m.backward[:, :, 1])[INTERIOR].norm(dim=1).mean()
    assert float(opposite) < 2 * bound


@pytest.mark.parametrize("name", list(BACKENDS))
def test_a_pure_translation_is_consistent_except_where_pixels_leave_the_image(name: str):
    m = compute_matches(translating_pair(), BACKENDS[name])
    assert m.forward_occluded.shape == m.backward_occluded.shape == (1, 1, 2, H, W)
    assert m.forward_occluded.dtype == torch.bool
    assert not bool(m.forward_occluded[:, :, 1].any())  # no forward flow at the last frame
    assert not bool(m.backward_occluded[:, :, 0].any())  # no backward flow at frame 0
    assert float(m.forward_occluded[0, 0, 0][INTERIOR].float().mean()) < 0.005  # measured 0
    assert float(m.backward_occluded[0, 0, 1][INTERIOR].float().mean()) < 0.005  # measured 0
    # Moving right by 1.5 px, the last column of frame 0 lands outside frame 1.
    assert float(m.forward_occluded[0, 0, 0, 8:-8, -1].float().mean()) > 0.9


def test_round_trip_test_flags_exactly_the_inconsistent_pixels():
    """Ground-truth flows of a 4x4 square moving 3 px right over a static background: the background
    it covers fails forwards, the background it uncovers fails backwards, nothing else."""
    square = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    square[..., 6:10, 4:8] = True
    forward = torch.zeros(1, 2, 16, 16)
    forward[:, 0][square[:, 0]] = 3.0  # frame 0 -> 1
    moved = square.roll(3, dims=-1)
    backward = torch.zeros(1, 2, 16, 16)
    backward[:, 0][moved[:, 0]] = -3.0  # frame 1 -> 0
    assert torch.equal(round_trip_fails(forward, backward, 0.01, 0.5), moved & ~square)
    assert torch.equal(round_trip_fails(backward, forward, 0.01, 0.5), square & ~moved)


SQUARE, START, MOTION = 24, (30, 20), (6, 3)  # side, top-left (x, y) in frame 0, motion (x, y) px


def square_mask(frame: int, margin: int = 0) -> torch.Tensor:
    """(H, W) bool: the moving square in `frame` (0 or 1), shrunk by `margin` px on each side."""
    x, y = START[0] + frame * MOTION[0] + margin, START[1] + frame * MOTION[1] + margin
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[y : y + SQUARE - 2 * margin, x : x + SQUARE - 2 * margin] = True
    return mask


def moving_square() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A textured square moving MOTION px over a static textured background.

    Returns video (1, 3, 2, H, W) and three (H, W) bool masks: background covered in frame 1,
    background uncovered in frame 1, and pixels far (> 8 px) from the square and the image border.
    """
    frames = []
    for t in (0, 1):
        frame = texture(H, W, 1)
        frame[..., square_mask(t)] = rearrange(texture(SQUARE, SQUARE, 2), "1 c h w -> c (h w)")
        frames.append(frame)
    first, second = square_mask(0), square_mask(1)
    near = F.max_pool2d((first | second).float()[None, None], 17, 1, 8)[0, 0] > 0
    far = ~near
    far[:4], far[-4:], far[:, :4], far[:, -4:] = False, False, False, False
    return torch.stack(frames, dim=2), second & ~first, first & ~second, far


def test_dis_follows_a_moving_object_both_ways():
    """Measured mean EPE on the square (4 px inside its edges): 0.27 px forward, 0.17 px backward;
    on the part of the square that only one frame has (2 px inside its edges), where each flow has
    to come from its own frame pair: 1.04 px forward, 0.38 px backward (a flow taken from the other
    frame would be 6.7 px off there); 0.009 px on the far background. (The default Lucas-Kanade,
    2 levels, loses a 6.7 px motion.)"""
    video, _, _, far = moving_square()
    m = compute_matches(video, BACKENDS["dis-medium"])
    motion = torch.tensor(MOTION, dtype=torch.float32)[:, None]

    def epe(flow: torch.Tensor, mask: torch.Tensor, expected: torch.Tensor) -> float:
        return float((flow[:, mask] - expected).norm(dim=0).mean())

    forward, backward = m.forward[0, :, 0], m.backward[0, :, 1]
    assert epe(forward, square_mask(0, 4), motion) < 0.6
    assert epe(backward, square_mask(1, 4), -motion) < 0.6
    assert epe(forward, square_mask(0, 2) & ~square_mask(1), motion) < 2.0
    assert epe(backward, square_mask(1, 2) & ~square_mask(0), -motion) < 1.0
    assert epe(forward, far, torch.zeros(2, 1)) < 0.1
    assert epe(backward, far, torch.zeros(2, 1)) < 0.1


@pytest.mark.parametrize(
    ("name", "covered_min", "uncovered_min"),
    # Measured fractions flagged (covered, uncovered): DIS medium 0.83, 0.58; Lucas-Kanade 0.99, 0.92.
    # DIS smears the square's flow into part of the uncovered strip, which then passes the test.
    [("dis-medium", 0.7, 0.45), ("lucas-kanade", 0.85, 0.8)],
)
def test_occlusion_maps_flag_the_background_a_moving_object_covers(
    name: str, covered_min: float, uncovered_min: float
):
    video, covered, uncovered, far = moving_square()
    m = compute_matches(video, BACKENDS[name])
    forward, backward = m.forward_occluded[0, 0, 0], m.backward_occluded[0, 0, 1]
    assert float(forward[covered].float().mean()) > covered_min
    assert float(backward[uncovered].float().mean()) > uncovered_min
    assert float(forward[far].float().mean()) < 0.02  # measured 0 (DIS), 0.0017 (LK)
    assert float(backward[far].float().mean()) < 0.02


def test_confidence_is_low_on_a_flat_region_and_high_on_texture():
    image = texture(H, W, 3)
    image[..., : W // 2] = 0.4
    video = torch.stack((image, image), dim=2)
    confidences = [compute_matches(video, config).confidence for config in BACKENDS.values()]
    assert torch.equal(confidences[0], confidences[1])  # independent of the backend
    c = confidences[0]
    assert c.shape == (1, 1, 2, H, W) and float(c.min()) >= 0 and float(c.max()) <= 1
    flat, textured = c[0, 0, 0, 8:-8, 8 : W // 2 - 8], c[0, 0, 0, 8:-8, W // 2 + 8 : -8]
    assert float(flat.max()) < 0.05  # measured 0
    assert float(textured.mean()) > 0.8  # measured 0.99 (min 0.80)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_a_single_frame_gets_zero_flow_and_nothing_occluded(name: str):
    m = compute_matches(texture(H, W, 0)[:, :, None], BACKENDS[name])
    for flow in (m.forward, m.backward):
        assert flow.shape == (1, 2, 1, H, W) and float(flow.abs().max()) == 0.0
    for occluded in (m.forward_occluded, m.backward_occluded):
        assert occluded.shape == (1, 1, 1, H, W) and not bool(occluded.any())
    assert m.confidence.shape == (1, 1, 1, H, W)


def test_batch_elements_are_matched_independently():
    """Two clips of three frames in one batch give what each gives alone (no pair across clips)."""
    first = torch.stack([texture(H, W, 0, (1.0 * t, 0.0)) for t in range(3)], dim=2)
    second = torch.stack([texture(H, W, 5, (0.0, 0.5 * t)) for t in range(3)], dim=2)
    both = compute_matches(torch.cat((first, second)), MatchConfig())
    for i, clip in enumerate((first, second)):
        alone = compute_matches(clip, MatchConfig())
        for key in ("forward", "backward", "forward_occluded", "backward_occluded", "confidence"):
            torch.testing.assert_close(getattr(both, key)[i : i + 1], getattr(alone, key), msg=key)
    assert float(both.forward[:, :, 2].abs().max()) == 0.0


def test_dis_options_reach_opencv():
    video = translating_pair()
    on = compute_matches(video, MatchConfig(preset="medium", variational_refinement=True))
    off = compute_matches(video, MatchConfig(preset="medium", variational_refinement=False))
    fast = compute_matches(video, MatchConfig(preset="ultrafast"))
    assert not torch.equal(on.backward, off.backward)
    assert not torch.equal(on.backward, fast.backward)


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (12, 64), (24, 200), (100, 12)])
def test_dis_handles_frames_smaller_than_its_pyramid(size: tuple[int, int]):
    """OpenCV 5.1's DIS reads out of bounds (segfault) on short, wide frames such as 12x64; they are
    padded, and the flow is cropped back."""
    video = torch.rand(1, 3, 2, *size, generator=torch.Generator().manual_seed(0))
    for preset in ("ultrafast", "medium"):
        m = compute_matches(video, MatchConfig(preset=preset))
        assert m.forward.shape == (1, 2, 2, *size) and bool(torch.isfinite(m.forward).all())


@pytest.mark.parametrize(
    ("video", "message"),
    [
        (torch.rand(3, 2, 16, 16), "5 dims"),
        (torch.rand(1, 2, 16, 16, 3), "3 RGB channels"),
        (torch.randint(0, 255, (1, 3, 2, 16, 16), dtype=torch.uint8), "floating"),
        (torch.rand(1, 3, 2, 16, 16) * 255, r"\[0, 1\]"),
        (torch.full((1, 3, 2, 16, 16), float("nan")), "finite"),
        (torch.rand(1, 3, 0, 16, 16), "empty"),
        ([[0.5]], "torch.Tensor"),
    ],
)
def test_a_wrong_video_raises_input_error(video, message: str):
    with pytest.raises(InputError, match=message):
        compute_matches(video, MatchConfig())


@pytest.mark.parametrize(
    "options",
    [{"backend": "dys"}, {"preset": "slow"}, {"prest": "fast"}, {"lucas_kanade": {"window": 4}}],
)
def test_config_rejects_typos_and_bad_values(options: dict):
    with pytest.raises(ValidationError):
        MatchConfig(**options)
