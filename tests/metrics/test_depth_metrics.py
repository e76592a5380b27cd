"""Depth alignment, AbsRel and delta1 on hand-computed examples."""

import math

import pytest
import torch

from l4p_framework.errors import InputError
from l4p_framework.metrics import align_depth, depth_metrics
from l4p_framework.metrics.depth import fit_affine


def seq(values, shape=(1, 1, 1, 2, 2)):
    return torch.tensor(values, dtype=torch.float64).reshape(shape)


def test_abs_rel_and_delta1_hand_example():
    gt = seq([1.0, 2.0, 4.0, 5.0])
    pred = seq([1.1, 2.0, 3.0, 7.0])
    m = depth_metrics(pred, gt, align="none")
    # |0.1|/1, 0/2, 1/4, 2/5 -> mean 0.1875; ratios 1.1, 1, 4/3, 1.4 -> 2 of 4 below 1.25
    assert m["abs_rel"] == pytest.approx(0.1875)
    assert m["delta1"] == pytest.approx(0.5)
    assert all(isinstance(v, float) for v in m.values())


def test_scale_alignment_closed_form():
    pred, gt = seq([1.0, 2.0], (1, 1, 1, 1, 2)), seq([2.0, 2.0], (1, 1, 1, 1, 2))
    # s = (1*2 + 2*2) / (1 + 4) = 1.2 -> aligned (1.2, 2.4)
    assert torch.allclose(align_depth(pred, gt, mode="scale"), seq([1.2, 2.4], (1, 1, 1, 1, 2)))
    m = depth_metrics(pred, gt, align="scale")
    assert m["abs_rel"] == pytest.approx((0.8 / 2 + 0.4 / 2) / 2)
    assert m["delta1"] == pytest.approx(0.5)  # 2/1.2 = 1.67 fails, 2.4/2 = 1.2 passes


def test_scale_alignment_recovers_scaled_gt_exactly():
    gt = torch.rand(2, 1, 3, 4, 5, dtype=torch.float64) * 9 + 1
    pred = gt / torch.tensor([3.7, 0.2], dtype=torch.float64).view(2, 1, 1, 1, 1)  # one scale per sequence
    assert torch.allclose(align_depth(pred, gt, mode="scale"), gt)
    m = depth_metrics(pred, gt, align="scale")
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert m["delta1"] == 1.0


def test_scale_shift_recovers_depth_affine():
    gt = torch.rand(1, 1, 2, 3, 3, dtype=torch.float64) + 1
    pred = 2.0 * gt + 1.0
    assert torch.allclose(align_depth(pred, gt, mode="scale_shift"), gt)
    assert depth_metrics(pred, gt, align="scale_shift")["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    # a scale alone cannot undo the shift
    assert depth_metrics(pred, gt, align="scale")["abs_rel"] > 1e-3


def test_scale_shift_disparity_recovers_disparity_affine():
    pred = torch.rand(1, 1, 2, 3, 3, dtype=torch.float64) + 0.5
    gt = 1.0 / (0.5 / pred + 0.2)  # GT disparity is an affine function of predicted disparity
    assert torch.allclose(align_depth(pred, gt, mode="scale_shift_disparity"), gt)
    assert depth_metrics(pred, gt, align="scale_shift_disparity")["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert depth_metrics(pred, gt, align="scale_shift")["abs_rel"] > 1e-4


def test_scale_shift_fit_exact_on_ordinary_data():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 1, 3, 8, 8, generator=g, dtype=torch.float64) + 0.5
    gt = pred * torch.tensor([2.5, 0.3], dtype=torch.float64).view(2, 1, 1, 1, 1) + 0.7
    fit = fit_affine(pred.flatten(1), gt.flatten(1), torch.ones(2, 192, dtype=torch.bool))
    assert torch.allclose(fit.scale, torch.tensor([2.5, 0.3], dtype=torch.float64), rtol=0, atol=1e-10)
    assert torch.allclose(fit.shift, torch.tensor([0.7, 0.7], dtype=torch.float64), rtol=0, atol=1e-10)
    assert fit.defined.all()
    m = depth_metrics(pred, gt, align="scale_shift")
    assert m["abs_rel"] < 1e-10 and m["delta1"] == 1.0 and m["fit_defined"] == 1.0


def test_scale_shift_fit_exact_on_a_near_constant_prediction():
    # coefficient of variation 1e-7: uncentred normal equations lose the shift here (their
    # determinant is ~1e-14 of its terms); centred at the means the fit stays exact
    g = torch.Generator().manual_seed(1)
    pred = 2.0 + 2e-7 * torch.randn(1, 1, 4, 16, 16, generator=g, dtype=torch.float64)
    gt = 3.0e6 * (pred - 2.0) + 1.5  # GT varies by ~0.6 around 1.5: only a scale AND a shift fit it
    fit = fit_affine(pred.flatten(1), gt.flatten(1), torch.ones(1, 1024, dtype=torch.bool))
    assert bool(fit.defined) and float(fit.scale) == pytest.approx(3.0e6, rel=1e-8)
    m = depth_metrics(pred, gt, align="scale_shift")
    assert m["abs_rel"] < 1e-10 and m["fit_defined"] == 1.0
    assert torch.allclose(align_depth(pred, gt, mode="scale_shift"), gt, rtol=0, atol=1e-10)


def test_scale_shift_on_a_constant_prediction_says_it_fell_back():
    pred = torch.full((2, 1, 1, 2, 2), 2.0, dtype=torch.float64)
    gt = torch.stack([seq([1.0, 2.0, 3.0, 4.0])[0], seq([4.0, 4.0, 4.0, 4.0])[0]])
    m = depth_metrics(pred, gt, align="scale_shift", per_sequence=True)
    assert m["fit_defined"] == [0.0, 0.0]  # constant x: no unique (s, t); scale-only instead
    # scale-only: s = sum(p g) / sum(p p) = 2 * 10 / 16 -> every pixel 2.5 for the first sequence
    assert torch.allclose(
        align_depth(pred, gt, mode="scale_shift")[0], torch.full((1, 1, 2, 2), 2.5, dtype=torch.float64)
    )
    assert m["abs_rel"][1] == pytest.approx(0.0, abs=1e-15)
    assert depth_metrics(pred, gt, align="scale_shift")["fit_defined"] == 0.0


def test_disparity_alignment_guards_non_positive_results():
    # valid pixels: gt disparity = 1/p - 0.5; the invalid pixel p = 4 would get disparity -0.25
    pred = seq([1.0, 1.25, 1.5, 4.0])
    gt = 1.0 / (1.0 / pred - 0.5)
    gt[..., 1, 1] = 0.0  # invalid GT
    out = align_depth(pred, gt, mode="scale_shift_disparity")
    cap = float(gt[gt > 0].max())  # 1 / (1/1.5 - 0.5) = 6
    assert float(out[..., 1, 1]) == pytest.approx(cap)
    assert torch.allclose(out[..., 0, :], gt[..., 0, :])
    out = align_depth(pred, gt, mode="scale_shift_disparity", depth_cap=100.0)
    assert float(out[..., 1, 1]) == pytest.approx(100.0)


def test_non_positive_prediction_fails_delta1():
    gt = seq([1.0, 1.0, 1.0, 1.0])
    pred = seq([-1.0, 0.0, 1.0, 1.0])
    m = depth_metrics(pred, gt, align="none")
    assert m["delta1"] == pytest.approx(0.5)
    assert m["abs_rel"] == pytest.approx((2.0 + 1.0) / 4)


def test_valid_mask_and_gt_zero_are_excluded():
    gt = seq([1.0, 2.0, 4.0, 0.0])  # last pixel has no GT
    pred = seq([1.0, 2.0, 400.0, 123.0])
    valid = seq([1, 1, 0, 1]).bool()
    m = depth_metrics(pred, gt, valid, align="scale")
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert m["delta1"] == 1.0


def test_per_sequence_mean_not_pooled():
    gt = torch.ones(2, 1, 1, 2, 2, dtype=torch.float64)
    pred = gt.clone()
    pred[0, ..., 0, 0] = 2.0  # sequence 0: one pixel off by 100 % of 4 pixels -> 0.25
    valid = torch.ones_like(gt, dtype=torch.bool)
    valid[1, ..., 0, :] = False  # sequence 1: 2 valid pixels, perfect
    per = depth_metrics(pred, gt, valid, align="none", per_sequence=True)
    assert per["abs_rel"] == pytest.approx([0.25, 0.0])
    assert depth_metrics(pred, gt, valid, align="none")["abs_rel"] == pytest.approx(0.125)


def test_empty_sequence_skipped_and_nan():
    gt = torch.ones(2, 1, 1, 2, 2)
    gt[1] = 0.0
    pred = torch.full_like(gt, 1.1)
    per = depth_metrics(pred, gt, align="none", per_sequence=True)
    assert per["abs_rel"][0] == pytest.approx(0.1) and math.isnan(per["abs_rel"][1])
    assert depth_metrics(pred, gt, align="none")["abs_rel"] == pytest.approx(0.1)
    assert math.isnan(depth_metrics(pred[1:], gt[1:], align="none")["delta1"])


def test_single_sequence_matches_batched():
    gt = torch.rand(1, 1, 2, 3, 3) + 1
    pred = torch.rand(1, 1, 2, 3, 3) + 1
    assert depth_metrics(pred[0], gt[0]) == depth_metrics(pred, gt)
    assert align_depth(pred[0], gt[0], mode="scale_shift").shape == (1, 2, 3, 3)


def test_bad_inputs_raise_input_error():
    x = torch.ones(1, 1, 2, 3, 3)
    with pytest.raises(InputError):
        depth_metrics(x, torch.ones(1, 1, 2, 3, 4))
    with pytest.raises(InputError):
        depth_metrics(x, x, align="affine")
    with pytest.raises(InputError):
        depth_metrics(torch.ones(1, 2, 2, 3, 3), torch.ones(1, 2, 2, 3, 3))
    with pytest.raises(InputError):
        depth_metrics(x * float("nan"), x)
