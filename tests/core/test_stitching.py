"""Generic stitchers with known answers: overwrite rules, disparity scale/shift chaining, the LSQ fit."""

from __future__ import annotations

import pytest
import torch

from l4p_framework.stitching import DisparityAffineStitcher, OverwriteStitcher, fit_scale_shift
from l4p_framework.windows import plan_windows


def run(stitcher, windows: list[dict[str, torch.Tensor]], num_frames: int, size: int, stride: int):
    plan = plan_windows(num_frames, size, stride)
    assert len(plan) == len(windows)
    state = None
    for w, outputs in zip(plan, windows):
        state = stitcher.merge(state, outputs, w.start, w.overlap)
    return stitcher.finalize(state)


def frame_values(x: torch.Tensor, dim: int = 2) -> list[float]:
    return x.movedim(dim, 0).flatten(1)[:, 0].tolist()


def test_overwrite_later_windows_win_on_every_time_axis():
    """Windows of 4 frames every 2 over 8 frames, window k filled with k (two time-axis layouts)."""
    windows = [
        {
            "mask": torch.full((1, 1, 4, 2, 2), float(k)),
            "tracks": torch.full((1, 3, 4, 2), float(k)),  # (B, N, T, 2): time at dim 2
            "scalar": torch.tensor([float(k)]),  # not time-indexed: the last window wins
        }
        for k in range(3)
    ]
    out = run(OverwriteStitcher({"mask": 2, "tracks": 2}), windows, 8, 4, 2)
    assert out["mask"].shape == (1, 1, 8, 2, 2) and out["tracks"].shape == (1, 3, 8, 2)
    assert frame_values(out["mask"]) == [0, 0, 1, 1, 2, 2, 2, 2]
    assert frame_values(out["tracks"]) == [0, 0, 1, 1, 2, 2, 2, 2]
    assert out["scalar"].tolist() == [2.0]


def test_overwrite_time_axis_one():
    windows = [{"poses": torch.full((1, 4, 4, 4), float(k))} for k in range(2)]
    out = run(OverwriteStitcher({"poses": 1}), windows, 6, 4, 2)
    assert out["poses"].shape == (1, 6, 4, 4)
    assert frame_values(out["poses"], 1) == [0, 0, 1, 1, 1, 1]


def test_keep_previous_first_keeps_the_earlier_windows_value_at_each_window_start():
    windows = [{"flow": torch.full((1, 2, 4, 2, 2), float(k))} for k in range(3)]
    out = run(OverwriteStitcher({"flow": 2}, keep_previous_first=True), windows, 8, 4, 2)
    assert frame_values(out["flow"]) == [0, 0, 0, 1, 1, 2, 2, 2]


def test_end_aligned_last_window_with_a_larger_overlap():
    """11 frames, size 4, stride 3 -> starts 0, 3, 6 and an end-aligned 7 (overlap 3)."""
    assert [(w.start, w.overlap) for w in plan_windows(11, 4, 3)] == [(0, 0), (3, 1), (6, 1), (7, 3)]
    windows = [{"flow": torch.full((1, 2, 4, 1, 1), float(k))} for k in range(4)]
    out = run(OverwriteStitcher({"flow": 2}, keep_previous_first=True), windows, 11, 4, 3)
    assert frame_values(out["flow"]) == [0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3]


def true_depth(b: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 1.0 + 9.0 * torch.rand(b, 1, t, 5, 6, generator=g)


def disparity_affine(depth: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Depth whose disparity is (disp - b) / a per batch element, so a * disp' + b = disp."""
    shape = (-1,) + (1,) * (depth.ndim - 1)
    return 1.0 / ((1.0 / depth - b.view(shape)) / a.view(shape))


def test_disparity_stitcher_recovers_known_scale_and_shift_per_window_and_sequence():
    true = true_depth(2, 12)
    windows = [{"depth": true[:, :, :6]}]
    params = [
        (torch.tensor([2.0, 0.7]), torch.tensor([-0.05, 0.02])),
        (torch.tensor([0.3, 1.5]), torch.tensor([0.05, -0.01])),
    ]
    for (a, b), start in zip(params, (3, 6)):
        w = disparity_affine(true[:, :, start : start + 6], a, b)
        assert bool((w > 0).all())
        windows.append({"depth": w})
    out = run(DisparityAffineStitcher(shift=True), windows, 12, 6, 3)
    assert out["depth"].shape == true.shape
    torch.testing.assert_close(out["depth"], true, rtol=2e-5, atol=0)


def test_disparity_stitcher_without_overlap_does_not_align():
    true = true_depth(1, 8)
    second = true[:, :, 4:] * 3.0
    out = run(DisparityAffineStitcher(), [{"depth": true[:, :, :4]}, {"depth": second}], 8, 4, 4)
    assert torch.equal(out["depth"][:, :, 4:], second)


def test_disparity_stitcher_constant_overlap_falls_back_to_a_scale():
    true = true_depth(1, 6)
    true[:, :, 2:4] = 4.0  # constant overlap: the shift is not identifiable
    out = run(
        DisparityAffineStitcher(shift=True),
        [{"depth": true[:, :, :4]}, {"depth": true[:, :, 2:] * 5.0}],
        6,
        4,
        2,
    )
    torch.testing.assert_close(out["depth"], true, rtol=1e-5, atol=0)


def test_disparity_stitcher_non_positive_aligned_disparity_becomes_the_far_depth():
    true = true_depth(1, 6)
    a, b = torch.tensor([4.0]), torch.tensor([-0.5])
    second = disparity_affine(true[:, :, 2:], a, b)
    second[0, 0, 3, 0, 0] = 100.0  # disparity 0.01 -> 4 * 0.01 - 0.5 < 0 after alignment
    out = run(DisparityAffineStitcher(shift=True), [{"depth": true[:, :, :4]}, {"depth": second}], 6, 4, 2)[
        "depth"
    ]
    assert out[0, 0, 5, 0, 0].item() == pytest.approx(true[:, :, :4].max().item())
    keep = torch.ones_like(out, dtype=torch.bool)
    keep[0, 0, 5, 0, 0] = False
    torch.testing.assert_close(out[keep], true[keep], rtol=1e-5, atol=0)


def test_disparity_stitcher_by_default_fits_a_robust_scale_that_cannot_zero_disparities():
    """Each window at its own scale (x 2, x 0.5, x 3) with 10% of the overlap pixels corrupted: the
    median scale recovers the video exactly elsewhere; a shift could make disparities <= 0."""
    true = true_depth(1, 12)
    windows = [{"depth": true[:, :, :6].clone()}]
    for scale, start in ((2.0, 3), (0.5, 6)):
        w = true[:, :, start : start + 6] * scale
        w.view(-1)[::10] *= 50.0  # outliers
        windows.append({"depth": w})
    out = run(DisparityAffineStitcher(), windows, 12, 6, 3)["depth"]
    clean = torch.ones_like(out, dtype=torch.bool)
    clean[:, :, 3:].view(-1)[::10] = False
    assert bool((out > 0).all())
    torch.testing.assert_close(
        out[:, :, 9:][clean[:, :, 9:]], true[:, :, 9:][clean[:, :, 9:]], rtol=1e-5, atol=0
    )


def test_fit_scale_shift_known_answers():
    x = torch.linspace(0.1, 2.0, 50).repeat(2, 1)
    y = torch.stack([3.0 * x[0] - 0.5, 0.5 * x[1] + 2.0])
    mask = torch.ones_like(x, dtype=torch.bool)
    y[0, :5] = 1e3  # outliers outside the mask
    mask[0, :5] = False
    a, b = fit_scale_shift(x, y, mask)
    torch.testing.assert_close(a, torch.tensor([3.0, 0.5]))
    torch.testing.assert_close(b, torch.tensor([-0.5, 2.0]))
    # constant x: scale only; nothing valid: identity
    a, b = fit_scale_shift(torch.full((1, 4), 2.0), torch.full((1, 4), 6.0))
    assert (a.item(), b.item()) == (pytest.approx(3.0), 0.0)
    a, b = fit_scale_shift(x[:1], y[:1], torch.zeros_like(x[:1], dtype=torch.bool))
    assert (a.item(), b.item()) == (1.0, 0.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: OverwriteStitcher({"flow": 2}, keep_previous_first=True),
        lambda: DisparityAffineStitcher("flow", time_dim=2),
    ],
    ids=["overwrite", "disparity"],
)
@pytest.mark.parametrize("num_frames", [8, 11, 21])
def test_releasing_final_frames_gives_the_same_video_with_two_windows_held(make, num_frames):
    """release(state, start of the next window) before each merge: the chunks and the final rest
    are exactly the unreleased result, and the state never holds more than overlap + one window."""
    size, stride = 4, 3 if num_frames == 11 else 2
    torch.manual_seed(num_frames)
    windows = [{"flow": torch.rand(1, 2, size, 3, 2) + 0.5} for _ in plan_windows(num_frames, size, stride)]
    whole = run(make(), windows, num_frames, size, stride)["flow"]
    stitcher, state, chunks = make(), None, []
    for w, outputs in zip(plan_windows(num_frames, size, stride), windows):
        if state is not None:
            chunks.append(stitcher.release(state, w.start)["flow"])
            assert chunks[-1].shape[2] == w.start - sum(c.shape[2] for c in chunks[:-1])
        state = stitcher.merge(state, outputs, w.start, w.overlap)
        assert state.outputs["flow"].shape[2] <= 2 * size
    chunks.append(stitcher.finalize(state)["flow"])
    assert torch.equal(torch.cat(chunks, 2), whole)
