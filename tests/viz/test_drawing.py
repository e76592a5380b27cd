"""Track overlays, mask overlays, trajectory plots, sheets and file writers."""

import numpy as np
import pytest
import torch
from PIL import Image

from l4p_framework.errors import InputError
from l4p_framework.viz import (
    draw_tracks,
    make_sheet,
    mask_overlay,
    save_gif,
    save_png,
    side_by_side,
    track_colors,
    trajectory_plot,
)


def gray_video(t=4, h=40, w=60, value=50):
    return np.full((t, h, w, 3), value, dtype=np.uint8)


def test_visible_track_pixel_takes_track_colour():
    frames = gray_video()
    tracks = np.zeros((2, 4, 2))
    tracks[0] = [[10.5, 20.5]] * 4  # pixel column 10, row 20 (+0.5 convention)
    tracks[1] = [[40.5, 5.5], [41.5, 6.5], [42.5, 7.5], [43.5, 8.5]]
    vis = np.ones((2, 4), dtype=bool)
    out = draw_tracks(frames, tracks, vis, radius=2)
    cols = track_colors(tracks, vis, (40, 60))
    assert out.shape == frames.shape and out.dtype == np.uint8
    for t in range(4):
        assert out[t, 20, 10].tolist() == cols[0].tolist()
        x, y = 40 + t, 5 + t
        assert out[t, y, x].tolist() == cols[1].tolist()
    assert not (cols[0] == cols[1]).all()  # different start positions -> different colours
    assert (frames == 50).all()  # input untouched
    assert out[0, 35, 55].tolist() == [50, 50, 50]  # far from every track


def test_hidden_point_is_hollow_and_trail_is_drawn():
    frames = gray_video(t=3)
    tracks = np.array([[[10.5, 10.5], [30.5, 10.5], [30.5, 30.5]]])
    vis = np.array([[True, True, False]])
    col = [255, 0, 255]
    out = draw_tracks(frames, tracks, vis, radius=3, colors=np.array([col], dtype=np.uint8))
    assert out[1, 10, 20].tolist() == col  # trail segment from frame 0 to frame 1
    assert out[2, 30, 30].tolist() == [50, 50, 50]  # hidden: the centre stays empty
    assert out[2, 30, 33].tolist() == col  # ... inside a ring
    assert out[2, 20, 30].tolist() == [50, 50, 50]  # no trail into a hidden frame
    assert out[2, 10, 20].tolist() == col  # the older visible segment remains within the trail
    out = draw_tracks(frames, tracks, vis, trail=0, radius=3, colors=np.array([col], dtype=np.uint8))
    assert out[1, 10, 20].tolist() == [50, 50, 50]


def test_draw_tracks_shape_errors():
    with pytest.raises(InputError):
        draw_tracks(gray_video().astype(np.float32), np.zeros((1, 4, 2)), np.ones((1, 4), bool))
    with pytest.raises(InputError):
        draw_tracks(gray_video(), np.zeros((1, 3, 2)), np.ones((1, 3), bool))


def test_mask_overlay_blend():
    frame = np.full((2, 2, 3), 100, dtype=np.uint8)
    mask = np.array([[True, False], [False, True]])
    out = mask_overlay(frame, mask, color=(200, 0, 50), alpha=0.25)
    assert out[0, 0].tolist() == [125, 75, 88]  # 0.75 * 100 + 0.25 * c, rounded
    assert out[0, 1].tolist() == [100, 100, 100]
    assert (mask_overlay(frame, torch.ones(2, 2), alpha=0.0) == frame).all()
    with pytest.raises(InputError):
        mask_overlay(frame, np.ones((3, 3), bool))


def circle_poses(t=12):
    poses = np.tile(np.eye(4), (t, 1, 1))
    a = np.linspace(0, np.pi, t)
    poses[:, 0, 3], poses[:, 2, 3], poses[:, 1, 3] = np.cos(a), np.sin(a), -0.1 * a
    return poses


def test_trajectory_plot_draws_pred_and_gt():
    pred = circle_poses()
    gt = pred.copy()
    gt[:, 0, 3] += 0.3
    img = trajectory_plot(pred, gt, size=(128, 256))
    assert img.shape == (128, 256, 3) and img.dtype == np.uint8
    flat = img.reshape(-1, 3)
    assert (flat == [220, 40, 40]).all(1).sum() > 20  # prediction drawn in red
    assert (flat == [40, 90, 220]).all(1).sum() > 20  # GT in blue
    single = trajectory_plot(torch.eye(4)[None], size=(64, 128))  # a static camera does not crash
    assert single.shape == (64, 128, 3)
    with pytest.raises(InputError):
        trajectory_plot(np.zeros((3, 3, 3)))


def test_make_sheet_layout():
    a = np.zeros((10, 20, 3), dtype=np.uint8)
    b = np.full((10, 20, 3), 200, dtype=np.uint8)
    sheet = make_sheet({"a": a, "b": b}, cols=2, label=False, pad=4)
    assert sheet.shape == (18, 52, 3)
    assert sheet[4, 4].tolist() == [0, 0, 0] and sheet[4, 28].tolist() == [200, 200, 200]
    assert sheet[0, 0].tolist() == [255, 255, 255]
    rows = make_sheet({"a": [a, a, a], "b": b}, label=False, pad=0)  # one row per name
    assert rows.shape == (20, 60, 3)
    assert rows[15, 30].tolist() == [255, 255, 255]  # row "b" has a single cell
    labelled = make_sheet({"a": a, "gray float": np.full((10, 20), 0.5)}, cols=1)
    assert labelled.shape[0] > 2 * 10 + 3 * 4  # a title strip above each cell
    assert labelled.shape[1] == 28
    assert (labelled[-5, 10] == 128).all()  # float [0, 1] image converted to uint8


def test_side_by_side():
    v1 = np.zeros((3, 8, 10, 3), dtype=np.uint8)
    v2 = np.full((3, 12, 6, 3), 255, dtype=np.uint8)
    out = side_by_side({"pred": v1, "gt": v2}, label=False, pad=2)
    assert out.shape == (3, 12 + 4, 2 + 2 * (10 + 2), 3)
    with pytest.raises(InputError):
        side_by_side({"a": v1, "b": v2[:2]})


def test_save_png_and_gif_round_trip(tmp_path):
    img = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 3).astype(np.uint8)
    path = save_png(tmp_path / "sub" / "x.png", img)
    assert (np.asarray(Image.open(path).convert("RGB")) == img).all()
    frames = gray_video(t=3, h=8, w=8)
    frames[1] = 200
    path = save_gif(tmp_path / "x.gif", frames, fps=4)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
        assert gif.info["duration"] == 250
