"""Colour maps, depth colouring, the flow wheel and normal colours."""

import numpy as np
import pytest
import torch

from l4p_framework.errors import InputError
from l4p_framework.viz import (
    COLORMAPS,
    apply_colormap,
    color_wheel,
    depth_to_color,
    flow_to_color,
    flow_wheel_legend,
    normals_to_color,
)


def luminance(rgb):
    return rgb.astype(float) @ np.array([0.2126, 0.7152, 0.0722])


def test_colormap_endpoints_nan_and_clipping():
    x = np.array([[0.0, 1.0, np.nan, 2.0, -1.0]])
    out = apply_colormap(x, vmin=0.0, vmax=1.0)
    assert out.shape == (1, 5, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [48, 18, 59] and out[0, 1].tolist() == [122, 4, 3]
    assert out[0, 2].tolist() == [0, 0, 0]  # non-finite -> invalid colour
    assert (out[0, 3] == out[0, 1]).all() and (out[0, 4] == out[0, 0]).all()
    gray = apply_colormap(np.linspace(0, 1, 3)[None], cmap="gray")
    assert gray[0, :, 0].tolist() == [0, 128, 255]
    assert set(COLORMAPS) >= {"turbo", "magma", "gray"}
    with pytest.raises(InputError):
        apply_colormap(x, cmap="jet")


def test_magma_lightness_increases_and_default_limits():
    ramp = apply_colormap(torch.linspace(0, 1, 64)[None], cmap="magma")[0]
    assert np.all(np.diff(luminance(ramp)) > -1.0)  # monotone up to rounding
    assert luminance(ramp[-1]) > luminance(ramp[0]) + 200
    # default limits span min..max of finite values
    assert (
        apply_colormap(np.array([[3.0, 5.0]]))[0, 1] == apply_colormap(np.array([[1.0]]), 0, 1)[0, 0]
    ).all()


def test_depth_to_color_near_is_warm_and_invalid_black():
    depth = np.array([[1.0, 10.0], [0.0, np.inf]])
    out = depth_to_color(depth, percentiles=(0, 100))
    near, far = out[0, 0].astype(int), out[0, 1].astype(int)
    assert near[0] > near[2] and far[2] > far[0]  # near red-ish, far blue-ish
    assert out[1].tolist() == [[0, 0, 0], [0, 0, 0]]


def test_depth_video_uses_shared_limits():
    video = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 4.0)])
    out = depth_to_color(video)
    assert out.shape == (2, 2, 2, 3)
    assert not (out[0] == out[1]).all()  # per-frame limits would make both frames identical


def test_flow_wheel_has_55_colours_and_starts_red():
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    assert wheel[0].tolist() == [255, 0, 0]


def test_flow_to_color_zero_white_right_red_opposites_differ():
    dirs = np.array([[1, -1, 0, 0], [0, 0, 1, -1]], dtype=float).reshape(2, 1, 4)
    out = flow_to_color(dirs)
    right, left, down, up = (out[0, i].astype(int) for i in range(4))
    assert right[0] == 255 and right[1] < 60 and right[2] < 60  # +u is red as in the standard wheel
    assert not (right == left).all() and not (down == up).all()
    assert left[2] > left[0]  # -u is on the cyan/blue side
    assert flow_to_color(np.zeros((2, 3, 3))).reshape(-1, 3).tolist() == [[255, 255, 255]] * 9


def test_flow_magnitude_sets_saturation():
    f = np.array([[1.0, 2.0, 4.0, np.nan], [0.0, 0.0, 0.0, 0.0]]).reshape(2, 1, 4)
    out = flow_to_color(f, max_mag=2.0)[0].astype(int)
    assert out[0].sum() > out[1].sum()  # half the maximum is paler (closer to white)
    assert out[1].tolist() == [255, 0, 0]
    assert (out[2] < out[1] + 1).all() and out[2].sum() < out[1].sum()  # beyond the maximum: darkened
    assert out[3].tolist() == [0, 0, 0]  # unknown flow
    video = flow_to_color(torch.ones(2, 3, 4, 5))
    assert video.shape == (3, 4, 5, 3)
    with pytest.raises(InputError):
        flow_to_color(np.zeros((3, 4, 4)))


def test_flow_wheel_legend():
    img = flow_wheel_legend(64)
    assert img.shape == (64, 64, 3)
    assert (img[32, 32] >= 245).all()  # centre ~ white
    assert img[32, 62, 0] == 255 and img[32, 62, 2] < 80  # right rim red
    assert img[0, 0].tolist() == [255, 255, 255]


def test_normals_to_color():
    n = np.zeros((3, 1, 4))
    n[:, 0, 0] = [0, 0, -1]  # facing the camera
    n[:, 0, 1] = [2, 0, 0]  # normalised to +x
    n[:, 0, 2] = [0, 1, 0]
    out = normals_to_color(n)
    assert out[0, 0].tolist() == [128, 128, 0]
    assert out[0, 1].tolist() == [255, 128, 128]
    assert out[0, 2].tolist() == [128, 255, 128]
    assert out[0, 3].tolist() == [0, 0, 0]  # zero normal = invalid
    valid = np.array([[False, True, True, True]])
    assert normals_to_color(n, valid)[0, 0].tolist() == [0, 0, 0]
    assert normals_to_color(torch.zeros(3, 2, 4, 5)).shape == (2, 4, 5, 3)
