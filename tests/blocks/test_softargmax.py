"""Soft-argmax over pixel centres and spatial means."""

from __future__ import annotations

import pytest
import torch

from l4p_framework.blocks import soft_argmax_2d, spatial_mean
from l4p_framework.errors import InputError


def test_peak_gives_pixel_centre():
    logits = torch.full((2, 3, 7, 9), -1e4)
    logits[0, 1, 4, 2] = 1e4
    logits[1, 2, 0, 8] = 50.0
    out = soft_argmax_2d(logits)
    assert out.shape == (2, 3, 2)
    torch.testing.assert_close(out[0, 1], torch.tensor([2.5, 4.5]))
    torch.testing.assert_close(out[1, 2], torch.tensor([8.5, 0.5]))
    assert torch.isfinite(out).all()


def test_uniform_gives_centre():
    out = soft_argmax_2d(torch.zeros(4, 6))
    torch.testing.assert_close(out, torch.tensor([3.0, 2.0]))


def test_matches_naive_softmax_and_gradients_are_finite():
    torch.manual_seed(0)
    logits = (torch.randn(3, 5, 11, 13) * 20).requires_grad_()
    out = soft_argmax_2d(logits)
    p = torch.softmax(logits.detach().flatten(-2).double(), -1).view(3, 5, 11, 13)
    xs = torch.arange(13, dtype=torch.float64) + 0.5
    ys = torch.arange(11, dtype=torch.float64) + 0.5
    ref = torch.stack([(p.sum(-2) * xs).sum(-1), (p.sum(-1) * ys).sum(-1)], -1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # temperature sharpens towards the argmax
    sharp = soft_argmax_2d(logits.detach(), temperature=1e-3)
    idx = logits.detach().flatten(-2).argmax(-1)
    torch.testing.assert_close(
        sharp, torch.stack([idx % 13 + 0.5, idx // 13 + 0.5], -1).float(), atol=1e-3, rtol=0
    )


def test_half_input_is_upcast():
    logits = torch.zeros(2, 8, 8, dtype=torch.float16)
    logits[:, 3, 5] = 60000.0
    out = soft_argmax_2d(logits)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[5.5, 3.5]] * 2))


def test_spatial_mean_and_errors():
    m = torch.arange(24.0).view(2, 3, 4)
    torch.testing.assert_close(spatial_mean(m), torch.tensor([5.5, 17.5]))
    with pytest.raises(InputError):
        soft_argmax_2d(torch.zeros(3))
    with pytest.raises(InputError):
        soft_argmax_2d(torch.zeros(3, 3), temperature=0)
