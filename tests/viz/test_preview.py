"""`render_previews` (MP4 + contact sheet per head, from time-first arrays) and the streaming `VideoWriter`."""

import numpy as np
import pytest
from PIL import Image

from l4p_framework.data.video import VideoWriter, open_video, write_video
from l4p_framework.errors import InputError
from l4p_framework.viz.overlays import PRED_COLOR
from l4p_framework.viz.preview import UNDEFINED_GREY, render_previews
from l4p_framework.viz.sheet import PANEL_GAP, caption_height, even_picks, panel_size

T, H, W, N = 12, 48, 64, 6
PW = 320  # panel width used by most tests (the minimum): fast
PH = panel_size((H, W), PW)[0]  # 240


def _levels(t: int) -> int:
    """Grey level of input frame t: distinct per frame, never the caption bars' colours."""
    return 10 + 20 * t


def _frames():
    """A generator (no len()) of constant grey frames, 10 + 20 t."""
    for t in range(T):
        yield np.full((H, W, 3), _levels(t), np.uint8)


def _arrays():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    depth = np.stack([1.0 + 0.05 * xx + 0.5 * t for t in range(T)]).astype(np.float16)
    flow = np.stack([np.stack([np.full((H, W), 1.0 + t), np.sin(xx / 9.0)], -1) for t in range(T)])
    flow = flow.astype(np.float32)
    flow[0] = np.nan  # backward flow: frame 0 undefined
    normals = np.zeros((T, H, W, 3), np.float32)
    normals[..., 2] = -1.0
    tracks = np.stack([np.stack([8.0 + 8 * np.arange(N) + t, np.full(N, 20.0)], -1) for t in range(T)])
    tracks = tracks.astype(np.float32)
    tracks[:4, 0] = np.nan  # point 0 is queried at frame 4
    visibility = np.full((T, N), 0.9, np.float32)
    visibility[:4, 0] = np.nan
    visibility[6:8, 1] = 0.1  # hidden for two frames
    poses = np.tile(np.eye(4), (T, 1, 1))
    poses[:, 0, 3] = np.linspace(0.0, 1.0, T)
    arrays = {
        "depth/depth": depth,
        "flow/flow": flow,
        "motion/motion": np.zeros((T, H, W), np.uint8),  # p = 0 everywhere
        "normals/normals": normals,
        "tracking/tracks": tracks,
        "tracking/visibility": visibility,
        "tracking/queries": np.zeros((N, 3), np.float32),
        "pose/poses": poses,
        "pose/intrinsics": np.tile(np.array([[60.0, 0, 32], [0, 61.0, 24], [0, 0, 1]]), (T, 1, 1)),
    }
    kinds = {
        "depth/depth": ("map", "real"),
        "flow/flow": ("flow", "real"),
        "motion/motion": ("map", "probability255"),
        "normals/normals": ("map", "real"),
        "tracking/tracks": ("points", "real"),
        "tracking/visibility": ("other", "probability"),
        "tracking/queries": ("queries", "real"),
        "pose/poses": ("other", "real"),
        "pose/intrinsics": ("intrinsics", "real"),
    }
    info = {
        k: {"kind": kind, "values": values, "layout": "T ...", "meaning": k}
        for k, (kind, values) in kinds.items()
    }
    return arrays, info


def _sheet(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _input_rows(sheet: np.ndarray) -> list[tuple[int, int, int]]:
    """(first row, last row + 1, grey level) of each input panel in a contact sheet: long constant runs
    in the input column."""
    column = sheet[:, PW // 2].astype(int)
    grey = (column[:, 0] == column[:, 1]) & (column[:, 1] == column[:, 2])
    runs, y = [], 0
    while y < len(column):
        end = y
        while end < len(column) and grey[end] and column[end, 0] == column[y, 0]:
            end += 1
        if grey[y] and end - y >= PH // 2:
            runs.append((y, end, int(column[y, 0])))
        y = max(end, y + 1)
    return runs


def test_every_head_gets_an_mp4_of_every_frame_and_a_sheet(tmp_path):
    arrays, info = _arrays()
    written = render_previews(arrays, info, _frames(), tmp_path, fps=None, num_frames=T, panel_width=PW)
    assert written == [
        "depth.mp4",
        "depth.png",
        "flow.mp4",
        "flow.png",
        "motion.mp4",
        "motion.png",
        "normals.mp4",
        "normals.png",
        "tracking.mp4",
        "tracking.png",
        "pose.png",  # poses: a trajectory plot in the sheet, no video
        "overview.png",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)
    overview = np.asarray(Image.open(tmp_path / "overview.png"))  # 4 rows: input + 5 heads' panels
    assert overview.shape[1] == 6 * PW + 5 * PANEL_GAP and overview.shape[0] > 4 * PH
    for head in ("depth", "flow", "motion", "normals", "tracking"):
        video = open_video(tmp_path / f"{head}.mp4")
        frames = list(video)
        assert len(frames) == T
        assert video.fps == pytest.approx(10.0)  # fps None -> 10
        h, w = frames[0].shape[:2]
        assert w == 2 * PW + PANEL_GAP  # [input | output]
        assert h - PH >= caption_height(["input"], PW) and h % 2 == 0  # a caption bar above the panels


def test_default_panel_width_and_fps(tmp_path):
    arrays, info = _arrays()
    keep = {"depth/depth": arrays["depth/depth"]}
    render_previews(keep, info, _frames(), tmp_path, fps=24.0, num_frames=T)
    video = open_video(tmp_path / "depth.mp4")
    assert video.size[1] == 2 * 480 + PANEL_GAP and video.fps == pytest.approx(24.0)


def test_contact_sheet_rows_are_evenly_spaced_frames(tmp_path):
    arrays, info = _arrays()
    keep = {k: arrays[k] for k in ("depth/depth", "flow/flow", "motion/motion")}
    render_previews(keep, info, _frames(), tmp_path, fps=None, num_frames=T, panel_width=PW, sheet_frames=4)
    picks = even_picks(T, 4)
    assert picks == [0, 4, 7, 11]
    sheet = _sheet(tmp_path / "depth.png")
    assert sheet.shape[1] == 2 * PW + PANEL_GAP
    rows = _input_rows(sheet)
    assert [level for _, _, level in rows] == [
        _levels(t) for t in picks
    ]  # one row per picked frame, in order
    depth_colours = [tuple(sheet[(a + b) // 2, PW + PANEL_GAP + PW // 2]) for a, b, _ in rows]
    assert len(set(depth_colours)) == len(picks)  # depth grows with t: the rows differ

    flow = _sheet(tmp_path / "flow.png")
    frame0 = _input_rows(flow)[0]
    assert tuple(flow[(frame0[0] + frame0[1]) // 2, PW + PANEL_GAP + 10]) == UNDEFINED_GREY  # NaN frame 0
    frame4 = _input_rows(flow)[1]
    assert tuple(flow[(frame4[0] + frame4[1]) // 2, PW + PANEL_GAP + 10]) != UNDEFINED_GREY

    motion = _sheet(tmp_path / "motion.png")
    for a, b, _ in _input_rows(motion):  # p = 0 everywhere: the overlay is the input, pixel for pixel
        assert np.array_equal(motion[a:b, :PW], motion[a:b, PW + PANEL_GAP :])


def test_probability_over_half_is_tinted_red(tmp_path):
    arrays, info = _arrays()
    motion = np.zeros((T, H, W), np.uint8)
    motion[:, :, : W // 2] = 200  # p = 0.78 on the left half
    render_previews({"motion/motion": motion}, info, _frames(), tmp_path, None, T, panel_width=PW)
    sheet = _sheet(tmp_path / "motion.png")
    a, b, level = _input_rows(sheet)[2]
    y = (a + b) // 2
    left, right = sheet[y, PW + PANEL_GAP + PW // 4].astype(int), sheet[y, PW + PANEL_GAP + 3 * PW // 4]
    assert left[0] > left[1] + 50 and tuple(right) == (level,) * 3


def test_tracks_are_drawn_and_memmaps_work(tmp_path):
    arrays, info = _arrays()
    folder = tmp_path / "arrays"
    folder.mkdir()
    maps = {}
    for key in ("tracking/tracks", "tracking/visibility", "depth/depth"):
        np.save(folder / f"{key.replace('/', '_')}.npy", arrays[key])
        maps[key] = np.load(folder / f"{key.replace('/', '_')}.npy", mmap_mode="r")
    out = tmp_path / "preview"
    render_previews(maps, info, _frames(), out, None, T, panel_width=PW, sheet_frames=2)
    sheet = _sheet(out / "tracking.png")
    a, b, level = _input_rows(sheet)[1]  # frame 11
    panel = sheet[a:b, PW + PANEL_GAP :]
    assert (np.abs(panel.astype(int) - level).sum(-1) > 60).sum() > 50  # coloured discs and trails
    assert np.array_equal(sheet[a:b, :PW], np.full((b - a, PW, 3), level, np.uint8))


def test_pose_head_gets_a_plot_and_the_intrinsics(tmp_path):
    arrays, info = _arrays()
    keep = {k: arrays[k] for k in ("pose/poses", "pose/intrinsics")}
    assert render_previews(keep, info, _frames(), tmp_path, None, T, panel_width=PW) == ["pose.png"]
    image = _sheet(tmp_path / "pose.png")
    assert image.shape[1] >= 2 * PW
    assert (image == PRED_COLOR).all(-1).sum() > 20  # the predicted camera path
    assert not (tmp_path / "pose.mp4").exists()


def test_outputs_without_a_picture_write_nothing(tmp_path):
    _, info = _arrays()
    arrays = {"tracking/queries": np.zeros((N, 3), np.float32)}
    assert render_previews(arrays, info, _frames(), tmp_path, None, T, panel_width=PW) == []


def test_a_third_party_map_with_other_channels_uses_its_first_channel(tmp_path):
    signed = np.stack([np.full((H, W, 5), t - 6.0) for t in range(T)]).astype(np.float32)
    info = {"extra/field": {"kind": "map", "values": "real", "layout": "T H W C", "meaning": "?"}}
    render_previews({"extra/field": signed}, info, _frames(), tmp_path, None, T, panel_width=PW)
    assert len(list(open_video(tmp_path / "extra.mp4"))) == T


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("narrow", "panel_width"),
        ("short-video", "gave 5 frames"),
        ("bad-key", "head/output"),
        ("wrong-length", "expected 12 frames"),
    ],
)
def test_errors_say_what_to_fix(tmp_path, case, match):
    arrays, info = _arrays()
    keep = {"depth/depth": arrays["depth/depth"]}
    frames, width = _frames(), PW
    if case == "narrow":
        width = 100
    elif case == "short-video":
        frames = (f for t, f in enumerate(_frames()) if t < 5)
    elif case == "bad-key":
        keep, info = {"depth": arrays["depth/depth"]}, {"depth": info["depth/depth"]}
    else:
        keep = {"depth/depth": arrays["depth/depth"][:5]}
    with pytest.raises(InputError, match=match):
        render_previews(keep, info, frames, tmp_path, None, T, panel_width=width)


def test_video_writer_streams_and_pads_odd_sizes(tmp_path):
    frames = [np.full((31, 47, 3), 20 * t, np.uint8) for t in range(5)]
    with VideoWriter(tmp_path / "s.mp4", fps=5) as writer:
        for f in frames:
            writer.write(f)
    assert writer.frames_written == 5
    back = list(open_video(tmp_path / "s.mp4"))
    assert len(back) == 5 and back[0].shape == (32, 48, 3)
    assert abs(int(back[3][10, 10, 0]) - 60) <= 3
    same = list(open_video(write_video(tmp_path / "w.mp4", np.stack(frames), fps=5)))
    assert len(same) == 5 and np.abs(same[3].astype(int) - back[3]).max() <= 1  # one code path
    with pytest.raises(InputError, match="one size"), VideoWriter(tmp_path / "x.mp4", fps=5) as writer:
        writer.write(frames[0])
        writer.write(np.zeros((32, 48, 3), np.uint8))
    with pytest.raises(InputError, match="write_video"):
        VideoWriter(tmp_path / "x.gif", fps=5)
