"""Video input/output and aspect-preserving resizing (l4p_framework.data.video)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from l4p_framework.data.video import (
    FrameTransform,
    default_intrinsics,
    fit_to_size,
    open_video,
    read_video,
    write_video,
)
from l4p_framework.errors import InputError

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (20, 40, 210)


def _frames(T=6, H=32, W=48) -> np.ndarray:
    """Left half red, right half green; frame t has a blue square whose row encodes t."""
    f = np.zeros((T, H, W, 3), np.uint8)
    f[:, :, : W // 2] = RED
    f[:, :, W // 2 :] = GREEN
    for t in range(T):
        f[t, 2 * t : 2 * t + 8, 4:12] = BLUE
    return f


def _write_with_pyav(path, frames, fps=10):
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("mpeg4", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.bit_rate = 4_000_000
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _close(a, b, tol=25):
    return np.abs(np.asarray(a, int) - np.asarray(b, int)).max() <= tol


# ---------------------------------------------------------------------------------------------- reading


def test_read_pyav_written_mp4(tmp_path):
    frames = _frames()
    path = tmp_path / "clip.mp4"
    _write_with_pyav(path, frames, fps=10)
    src = open_video(path)
    assert src.size == (32, 48) and src.fps == pytest.approx(10.0) and src.num_frames == 6
    v = read_video(path)
    assert v.shape == (3, 6, 32, 48) and v.dtype == torch.float32
    assert 0.0 <= float(v.min()) and float(v.max()) <= 1.0
    rgb = (v.permute(1, 2, 3, 0).numpy() * 255).round()
    assert _close(rgb[0, 20, 10], RED) and _close(rgb[0, 20, 40], GREEN)
    assert _close(rgb[3, 10, 8], BLUE)  # the square of frame 3 covers rows 6..13


def test_streaming_iteration_and_limits(tmp_path):
    path = write_video(tmp_path / "w.mp4", _frames(T=9), fps=12)
    src = open_video(path)
    n = 0
    for frame in src:
        assert frame.shape == (32, 48, 3) and frame.dtype == np.uint8
        n += 1
    assert n == 9
    assert sum(1 for _ in src) == 9  # a second pass starts again from the first frame
    assert read_video(path, max_frames=4).shape[1] == 4
    strided = read_video(path, stride=4)
    assert strided.shape[1] == 3  # frames 0, 4, 8
    assert _close(strided[:, 1, 12, 8].numpy() * 255, BLUE)  # frame 4: square at rows 8..15


def test_write_formats_roundtrip(tmp_path):
    frames = _frames(T=4)
    for name in ("a.mp4", "a.mov", "a.webm", "a.gif"):
        v = read_video(write_video(tmp_path / name, frames, fps=8))
        assert v.shape == (3, 4, 32, 48), name
        assert _close(v[:, 0, 20, 10].numpy() * 255, RED, 30), name
    # torch float input in l4p layout (3, T, H, W)
    t = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255
    assert read_video(write_video(tmp_path / "t.mp4", t, fps=8)).shape == (3, 4, 32, 48)


def test_write_odd_size_is_padded_even(tmp_path):
    v = read_video(write_video(tmp_path / "odd.mp4", _frames(T=2, H=31, W=47), fps=5))
    assert v.shape == (3, 2, 32, 48)


def test_write_mpeg4_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    path = write_video(tmp_path / "m.mp4", _frames(T=3), fps=6)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "mpeg4"
    assert read_video(path).shape == (3, 3, 32, 48)


def test_image_folder_natural_order(tmp_path):
    frames = _frames(T=11)
    for t in range(11):
        Image.fromarray(frames[t]).save(tmp_path / f"frame{t}.png")  # frame10 must come last
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_video(tmp_path)
    assert src.num_frames == 11 and src.size == (32, 48) and src.fps is None
    v = read_video(tmp_path)
    assert torch.equal((v * 255).round().to(torch.uint8).permute(1, 2, 3, 0), torch.from_numpy(frames))
    assert open_video(tmp_path, fps=24).fps == 24
    single = read_video(tmp_path / "frame3.png")
    assert single.shape == (3, 1, 32, 48)


def test_numpy_and_torch_inputs():
    frames = _frames(T=3)
    v = read_video(frames)
    assert v.shape == (3, 3, 32, 48) and torch.allclose(
        v * 255, torch.from_numpy(frames).permute(3, 0, 1, 2).float()
    )
    f = frames.astype(np.float32) / 255
    vf = read_video(f, max_frames=2)
    assert vf.shape == (3, 2, 32, 48) and torch.allclose(vf, torch.from_numpy(f[:2]).permute(3, 0, 1, 2))
    assert list(open_video(torch.from_numpy(f)))[1].dtype == np.uint8
    assert read_video(torch.from_numpy(frames)).shape == (3, 3, 32, 48)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((3, 8, 8), np.uint8), "shape"),
        (np.zeros((2, 8, 8, 3), np.int32), "dtype"),
        (np.full((2, 8, 8, 3), 255.0, np.float32), r"\[0, 1\]"),
        (np.zeros((0, 8, 8, 3), np.uint8), "empty"),
    ],
)
def test_bad_arrays(bad, match):
    with pytest.raises(InputError, match=match):
        open_video(bad)


def test_errors_name_the_path(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty") as e:
        open_video(empty)
    assert str(empty) in str(e.value) and "\n" not in str(e.value)

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="junk.mp4") as e:
        read_video(junk)
    assert "corrupt" in str(e.value) or "decode" in str(e.value)

    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match="no images") as e:
        open_video(folder)
    assert str(folder) in str(e.value)

    with pytest.raises(InputError, match="no such file"):
        open_video(tmp_path / "missing.mp4")

    bad_img = tmp_path / "imgs"
    bad_img.mkdir()
    Image.fromarray(_frames(T=1)[0]).save(bad_img / "0.png")
    (bad_img / "1.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="1.png"):
        read_video(bad_img)

    with pytest.raises(InputError, match="suffix"):
        write_video(tmp_path / "x.avi2", _frames(T=1), fps=5)
    with pytest.raises(InputError, match="fps"):
        write_video(tmp_path / "x.mp4", _frames(T=1), fps=0)


# ---------------------------------------------------------------------------------------------- resizing


def _project(K, X):
    x = X @ K.T
    return x[:, :2] / x[:, 2:3]


@pytest.mark.parametrize("mode", ["letterbox", "crop", "squash"])
@pytest.mark.parametrize(
    "in_size, out_size", [((40, 80), (64, 64)), ((90, 60), (48, 64)), ((37, 53), (37, 53))]
)
def test_intrinsics_follow_the_transform(mode, in_size, out_size):
    H, W = in_size
    K = np.array([[50.0, 0.3, W / 2 + 1.5], [0.0, 55.0, H / 2 - 2.0], [0.0, 0.0, 1.0]])
    X = np.random.default_rng(1).uniform([-2, -2, 2], [2, 2, 6], (20, 3))
    tf = FrameTransform.from_sizes(in_size, out_size, mode)
    K2 = tf.apply_to_intrinsics(K)
    np.testing.assert_allclose(_project(K2, X), tf.map_points(_project(K, X)), atol=1e-9)
    np.testing.assert_allclose(tf.map_points_back(tf.map_points(_project(K, X))), _project(K, X), atol=1e-9)
    Kt = tf.apply_to_intrinsics(torch.from_numpy(K).float().expand(3, 3, 3))
    assert Kt.shape == (3, 3, 3) and torch.allclose(Kt[1], torch.from_numpy(K2).float())


def test_letterbox_and_crop_numbers():
    frames = torch.rand(3, 2, 40, 80)
    out, tf = fit_to_size(frames, (64, 64), "letterbox")
    assert out.shape == (3, 2, 64, 64)
    assert tf.scale == (0.8, 0.8) and tf.offset == (0.0, 16.0) and tf.region == (0, 16, 64, 48)
    assert float(out[:, :, :16].abs().max()) == 0 and float(out[:, :, 48:].abs().max()) == 0
    assert tf.map_points(np.array([0.0, 0.0])).tolist() == [0.0, 16.0]
    assert tf.map_points(np.array([80.0, 40.0])).tolist() == [64.0, 48.0]

    out, tf = fit_to_size(frames, (64, 64), "crop")
    assert out.shape == (3, 2, 64, 64)
    assert tf.scale == (1.6, 1.6) and tf.offset == (-32.0, 0.0) and tf.region == (0, 0, 64, 64)
    # the output's centre shows the input's centre
    assert tf.map_points(np.array([40.0, 20.0])).tolist() == [32.0, 32.0]

    out, tf = fit_to_size(frames, (20, 20), "squash")
    assert tf.scale == (0.25, 0.5) and tf.offset == (0.0, 0.0)


def test_pixel_centre_convention_nearest_upscale():
    """Input pixel (row 1, col 2) covers [2, 3] x [1, 2]; x2 upscale puts it at rows 2..3, cols 4..5."""
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 2] = 1
    out, tf = fit_to_size(x, (8, 8), "squash", interpolation="nearest")
    assert torch.nonzero(out[0, 0]).tolist() == [[2, 4], [2, 5], [3, 4], [3, 5]]
    assert tf.map_points(np.array([2.5, 1.5])).tolist() == [5.0, 3.0]  # centre -> centre of the block


def test_downscale_keeps_mean_colour():
    frames = torch.rand(3, 3, 120, 160)
    out, _ = fit_to_size(frames, (30, 40), "letterbox")
    assert torch.allclose(out.mean(dim=(2, 3)), frames.mean(dim=(2, 3)), atol=0.01)


@pytest.mark.parametrize("mode", ["letterbox", "crop", "squash"])
def test_invert_map_roundtrip(mode):
    H, W = 20, 30
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    ramp = torch.stack([0.1 * xx + 0.2 * yy, 0.05 * xx - 0.3 * yy])[:, None]  # (2, 1, H, W), linear
    out, tf = fit_to_size(ramp, (64, 64), mode)
    back = tf.invert_map(out[:, 0], fill=-1.0)
    assert back.shape == (2, H, W)
    covered = tf.input_coverage()
    inner = covered.clone()
    inner[:2] = inner[-2:] = False
    inner[:, :2] = inner[:, -2:] = False
    assert torch.allclose(back[:, inner], ramp[:, 0][:, inner], atol=1e-4)
    assert torch.allclose(back[:, covered], ramp[:, 0][:, covered], atol=0.1)
    assert bool((back[:, ~covered] == -1.0).all())
    if mode == "crop":
        assert not bool(covered.all()) and bool(covered[:, 10:20].all())
    else:
        assert bool(covered.all())


def test_invert_map_labels_and_flow():
    labels = torch.randint(0, 5, (1, 1, 12, 18))
    out, tf = fit_to_size(labels, (24, 48), "letterbox", interpolation="nearest")
    assert out.dtype == labels.dtype
    assert torch.equal(tf.invert_map(out[0]), labels[0])
    mask = labels > 2
    out_m, _ = fit_to_size(mask, (24, 48), "letterbox", interpolation="nearest")
    assert out_m.dtype == torch.bool and torch.equal(tf.invert_map(out_m[0]), mask[0])
    # a uniform flow of (3, -2) input pixels is (3 sx, -2 sy) output pixels
    flow_out = torch.stack([torch.full((24, 48), 3 * tf.scale[0]), torch.full((24, 48), -2 * tf.scale[1])])
    back = tf.invert_flow(flow_out[None])
    assert back.shape == (1, 2, 12, 18)
    assert torch.allclose(back[0, 0], torch.tensor(3.0)) and torch.allclose(back[0, 1], torch.tensor(-2.0))


def test_resize_argument_errors():
    with pytest.raises(InputError, match="mode"):
        fit_to_size(torch.zeros(3, 1, 4, 4), (8, 8), "stretch")
    with pytest.raises(InputError, match="C, T, H, W"):
        fit_to_size(torch.zeros(4, 4), (8, 8))
    tf = FrameTransform.from_sizes((4, 4), (8, 8), "squash")
    with pytest.raises(InputError, match="invert_map"):
        tf.invert_map(torch.zeros(4, 4))


def test_default_intrinsics():
    K = default_intrinsics((48, 64))
    assert K.tolist() == [[48.0, 0.0, 32.0], [0.0, 48.0, 24.0], [0.0, 0.0, 1.0]]
    assert default_intrinsics((48, 64), num_frames=5).shape == (5, 3, 3)
