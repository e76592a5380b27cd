"""`build_viewer` / `l4p view` / `l4p run --viewer` without a browser: the page's embedded data (read
back from the HTML), the size budget, the quantisation, folders with only some heads, and the errors."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from l4p_framework.cli.main import main
from l4p_framework.data.video import write_video
from l4p_framework.errors import InputError
from l4p_framework.results import FORMAT
from l4p_framework.viz.viewer import build_viewer, dequantize_positions, quantize_positions

T, H, W, N = 10, 48, 64, 5
DEPTH = 2.0  # the synthetic scene: a plane at z = 2 in every camera, so 1 world unit = 2 depth units


def _poses(t: int = T) -> np.ndarray:
    """(t, 4, 4) camera-to-world: a camera sliding along x by 0.1 (pose units) per frame, turning a little."""
    poses = np.tile(np.eye(4), (t, 1, 1))
    for i in range(t):
        a = 0.02 * i
        poses[i, :3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        poses[i, 0, 3] = 0.1 * i
    return poses.astype(np.float32)


def _arrays(heads: set[str]) -> dict[str, np.ndarray]:
    arrays = {}
    if "depth" in heads:
        arrays["depth/depth"] = np.full((T, H, W), DEPTH, np.float32)
    if "motion" in heads:
        motion = np.zeros((T, H, W), np.uint8)
        motion[:, :, : W // 2] = 255  # the left half moves
        arrays["motion/motion"] = motion
    if "pose" in heads:
        arrays["pose/poses"] = _poses()
        K = np.array([[50.0, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]], np.float32)
        arrays["pose/intrinsics"] = np.tile(K, (T, 1, 1))
    if "tracking" in heads or "tracking2d" in heads:
        tracks = np.stack([np.stack([10.0 + 10 * np.arange(N) + t, np.full(N, 20.0)], -1) for t in range(T)])
        tracks = tracks.astype(np.float32)
        tracks[:3, 0] = np.nan  # point 0 starts at frame 3
        visibility = np.full((T, N), 0.9, np.float32)
        visibility[:3, 0] = np.nan
        arrays["tracking/tracks"] = tracks
        arrays["tracking/visibility"] = visibility
        if "tracking" in heads:
            track_depth = np.full((T, N), DEPTH, np.float32)
            track_depth[:3, 0] = np.nan
            arrays["tracking/track_depth"] = track_depth
    return arrays


def write_results(
    folder: Path, arrays: dict[str, np.ndarray], video: Path | None, size: tuple[int, int] = (H, W)
) -> Path:
    """A results folder as `l4p run` writes it (meta.json + HEAD/OUTPUT.npy) holding `arrays` of outputs
    of `size` (H, W)."""
    folder.mkdir(parents=True)
    entries = {}
    for key, array in arrays.items():
        (folder / key).parent.mkdir(exist_ok=True)
        np.save(folder / f"{key}.npy", array, allow_pickle=False)
        layout = {2: "T N", 3: "T H W" if array.shape[1:] == tuple(size) else "T N 2"}.get(
            array.ndim, "T ..."
        )
        entries[key] = {
            "file": f"{key}.npy",
            "layout": layout,
            "kind": "map",
            "values": "probability255" if array.dtype == np.uint8 else "real",
            "undefined": None,
            "meaning": key,
            "shape": list(array.shape),
            "dtype": array.dtype.name,
        }
    meta = {
        "format": FORMAT,
        "size": list(size),
        "input": str(video) if video else "",
        "input_size": list(size),
        "fps": 10.0,
        "heads": sorted({k.split("/")[0] for k in arrays}),
        "arrays": entries,
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _frames(t: int = T, size: tuple[int, int] = (H, W), noise: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    if noise:  # incompressible: the JPEGs are large
        return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(t)]
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    return [
        np.stack([xx * 4 % 256, yy * 5 % 256, np.full(size, 20 * i)], -1).astype(np.uint8) for i in range(t)
    ]


def read_page(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON header and the blobs (numpy arrays of the header's dtype and shape) of a viewer.html."""
    html = Path(path).read_text(encoding="utf-8")
    header = json.loads(
        re.search(r'<script type="application/json" id="l4p-header">(.*?)</script>', html).group(1)
    )
    blobs = {}
    for name, text in re.findall(
        r'<script type="application/octet-stream" id="l4p-blob-([a-z0-9_]+)">(.*?)</script>', html
    ):
        info = header["blobs"][name]
        blobs[name] = np.frombuffer(base64.b64decode(text), "<" + np.dtype(info["dtype"]).str[1:]).reshape(
            info["shape"]
        )
    assert set(blobs) == set(header["blobs"])
    return header, blobs


def _camera_points(header: dict, blobs: dict[str, np.ndarray], f: int) -> np.ndarray:
    """Frame f's points, dequantised as the viewer does, in frame f's camera coordinates."""
    lo, hi = header["points"]["bboxMin"], header["points"]["bboxMax"]
    start, end = blobs["point_offsets"][f], blobs["point_offsets"][f + 1]
    world = dequantize_positions(blobs["point_positions"][start:end], lo, hi).astype(np.float64)
    pose = blobs["poses"][f].astype(np.float64)
    return (world - pose[:3, 3]) @ pose[:3, :3]


# -- quantisation -----------------------------------------------------------------------------------


def test_positions_round_trip_to_within_half_a_quantisation_step_and_clip_outside_the_box():
    rng = np.random.default_rng(1)
    lo, hi = np.array([-3.0, -1.0, 0.5]), np.array([2.0, 1.5, 40.0])
    points = lo + rng.random((5000, 3)) * (hi - lo)
    q = quantize_positions(points, lo, hi)
    assert q.dtype == np.dtype("<u2") and q.shape == (5000, 3)
    back = dequantize_positions(q, lo, hi)
    assert np.all(np.abs(back - points) <= (hi - lo) / 65535 / 2 + 1e-5 * np.abs(points).max())
    corners = quantize_positions(np.array([lo, hi, lo - 1, hi + 1]), lo, hi)
    assert corners.tolist() == [[0, 0, 0], [65535] * 3, [0, 0, 0], [65535] * 3]


# -- what the page holds ----------------------------------------------------------------------------


def test_every_head_is_embedded_in_world_coordinates_and_units(tmp_path):
    folder = write_results(tmp_path / "run", _arrays({"depth", "motion", "pose", "tracking"}), None)
    said = []
    out = build_viewer(folder, frames=_frames(), say=said.append)
    assert out == folder / "viewer.html" and "viewer.html" in said[0]
    header, blobs = read_page(out)
    assert header["numFrames"] == T and header["frames"] == list(range(T)) and header["size"] == [H, W]
    assert header["name"] == "run" and header["tracks"] == {"count": N, "of": N, "has3d": True}
    np.testing.assert_allclose(blobs["poses"], _poses(), atol=1e-6)
    np.testing.assert_allclose(blobs["intrinsics"], np.tile([50.0, 50.0, W / 2, H / 2], (T, 1)))
    assert header["points"]["spacing"] == 1 and header["points"]["count"] == T * H * W
    step = (np.array(header["points"]["bboxMax"]) - header["points"]["bboxMin"]) / 65535
    for f in (0, 4, T - 1):  # depth 2 / the first frame's median depth 2: z = 1 in every camera
        cam = _camera_points(header, blobs, f)
        assert np.abs(cam[:, 2] - 1.0).max() < 2 * step.max() + 1e-5
        # pixel centres (x + 0.5 - cx) / fx * z: the left column at (0.5 - 32) / 50
        assert cam[:, 0].min() == pytest.approx((0.5 - W / 2) / 50, abs=2 * step.max() + 1e-5)
    # colours come from the frame's pixels; motion from the motion map (left half moving)
    start, end = blobs["point_offsets"][3], blobs["point_offsets"][4]
    assert np.all(blobs["point_colors"][start:end, 2] == 60)
    cam = _camera_points(header, blobs, 3)
    moving = blobs["point_motion"][start:end] >= 128
    assert np.all(cam[moving, 0] < 0) and np.all(cam[~moving, 0] > 0)
    # tracks: 2D as given (NaN before the query), 3D at z = 1 in their camera
    np.testing.assert_array_equal(blobs["tracks_2d"], _arrays({"tracking"})["tracking/tracks"])
    assert np.isnan(blobs["tracks_3d"][:3, 0]).all() and blobs["tracks_visibility"][0, 0] == 0
    pose = blobs["poses"][5].astype(np.float64)
    track_cam = (blobs["tracks_3d"][5] - pose[:3, 3]) @ pose[:3, :3]
    np.testing.assert_allclose(track_cam[:, 2], 1.0, atol=1e-5)
    np.testing.assert_allclose(track_cam[:, 0], (blobs["tracks_2d"][5, :, 0] - W / 2) / 50, atol=1e-5)
    assert header["view"]["target"][2] > 0.5  # looks at the scene in front of the first camera


def test_depth_without_pose_uses_identity_cameras_and_the_default_intrinsics(tmp_path):
    folder = write_results(tmp_path / "run", _arrays({"depth"}), None)
    header, blobs = read_page(build_viewer(folder, frames=_frames()))
    np.testing.assert_array_equal(blobs["poses"], np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)))
    f = float(min(H, W))  # L4P's default K: fx = fy = min(H, W), centred
    np.testing.assert_array_equal(blobs["intrinsics"], np.tile([f, f, W / 2, H / 2], (T, 1)))
    assert "point_motion" not in blobs and "tracks" not in header and header["points"]["count"] == T * H * W


def test_without_depth_the_page_has_cameras_and_tracks_only(tmp_path):
    folder = write_results(tmp_path / "run", _arrays({"pose", "tracking"}), None)
    header, blobs = read_page(build_viewer(folder, frames=_frames()))
    assert "points" not in header and not any(k.startswith("point_") for k in blobs)
    assert header["tracks"]["has3d"] and blobs["poses"].shape == (T, 4, 4)
    # tracks without track depth: drawn on the frame only
    folder = write_results(tmp_path / "run2d", _arrays({"pose", "tracking2d"}), None)
    header, blobs = read_page(build_viewer(folder, frames=_frames()))
    assert header["tracks"] == {"count": N, "of": N, "has3d": False} and "tracks_3d" not in blobs


def test_frames_embedded_are_jpegs_of_the_input_downscaled(tmp_path):
    import cv2

    video = write_video(tmp_path / "clip.mp4", np.stack(_frames()), fps=10)
    folder = write_results(tmp_path / "run", _arrays({"depth"}), video)
    header, blobs = read_page(build_viewer(folder, frame_side=32))  # frames read from meta.json's input
    assert header["image"]["width"] == 32 and header["image"]["height"] == 24
    offsets = blobs["jpeg_offsets"]
    assert len(offsets) == T + 1 and offsets[-1] == len(blobs["jpegs"])
    image = cv2.imdecode(blobs["jpegs"][offsets[2] : offsets[3]], cv2.IMREAD_COLOR)
    assert image.shape == (24, 32, 3) and abs(int(image[..., 0].mean()) - 40) < 8  # blue channel: 20 * 2


# -- the budget -------------------------------------------------------------------------------------


def test_the_file_stays_within_the_budget_by_subsampling_points_then_frames(tmp_path):
    t, size = 60, (120, 160)
    arrays = {"depth/depth": np.full((t, *size), DEPTH, np.float32), "pose/poses": _poses(t)}
    folder = write_results(tmp_path / "run", arrays, None, size)
    found = {}
    for budget in (0.8, 3.0, 16.0):
        out = build_viewer(folder, tmp_path / f"v{budget}.html", budget, frames=_frames(t, size, noise=True))
        header, _ = read_page(out)
        assert 0.9 * budget * 1e6 <= out.stat().st_size <= budget * 1e6  # used, not exceeded
        found[budget] = (header["points"]["count"], header["stride"], header["image"]["width"])
    assert found[0.8][0] < found[3.0][0] < found[16.0][0]  # more budget, more points
    assert found[0.8][1] > 1 and found[3.0][1] == found[16.0][1] == 1  # 0.8 MB keeps every k-th frame only
    assert found[0.8][2] < found[3.0][2] < found[16.0][2] == 160  # and smaller frames
    assert found[16.0][0] == t * size[0] * size[1]  # 16 MB: every pixel of every frame


def test_a_budget_too_small_for_the_code_or_the_frames_is_refused_with_what_to_pass(tmp_path):
    folder = write_results(tmp_path / "run", _arrays({"depth", "pose"}), None)
    with pytest.raises(InputError, match=r"budget of 0.2 MB is too small.*code.*--budget-mb \d+"):
        build_viewer(folder, budget_mb=0.2, frames=_frames())
    big = [np.random.default_rng(i).integers(0, 256, (480, 640, 3), dtype=np.uint8) for i in range(T)]
    with pytest.raises(InputError, match=r"too small.*10 of its 10 frames.*--budget-mb \d+"):
        build_viewer(folder, budget_mb=0.62, frames=big, frame_side=640)
    assert not (folder / "viewer.html").exists()
    with pytest.raises(InputError, match="positive"):
        build_viewer(folder, budget_mb=float("nan"), frames=_frames())


# -- errors and writing ------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_results_folder_or_lacks_its_video_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"not an l4p results folder \(does not exist\).*OUT/NAME"):
        build_viewer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"not an l4p results folder \(has no meta.json\)"):
        build_viewer(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match="format"):
        build_viewer(tmp_path / "other")
    folder = write_results(tmp_path / "run", _arrays({"depth"}), tmp_path / "gone.mp4")
    with pytest.raises(InputError, match=r"gone.mp4 .*not found.*--video PATH"):
        build_viewer(folder)


def test_the_page_is_written_atomically_over_an_old_one(tmp_path):
    folder = write_results(tmp_path / "run", _arrays({"depth", "pose"}), None)
    (folder / "viewer.html").write_text("old")
    build_viewer(folder, frames=_frames())
    assert (folder / "viewer.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
    html = (folder / "viewer.html").read_text(encoding="utf-8")
    assert "three.js" in html and "MIT License" in html and "http://" not in html.split("<script>")[0]


def test_l4p_view_and_l4p_run_viewer(tmp_path, capsys):
    pytest.importorskip("l4p_head_depth")
    video = write_video(tmp_path / "clip.mp4", np.stack(_frames()), fps=10)
    args = ["run", str(video), "--heads", "depth,pose", "--registry", "none", "--max-side", "40"]
    assert main([*args, "--out", str(tmp_path / "out"), "--no-ply", "--no-preview", "--viewer"]) == 0
    page = tmp_path / "out" / "clip" / "viewer.html"
    header, _ = read_page(page)
    assert header["name"] == "clip" and header["size"] == [30, 40] and header["numFrames"] == T
    assert "viewer.html" in capsys.readouterr().out
    assert (
        main(["view", str(tmp_path / "out" / "clip"), "--out", str(tmp_path / "v.html"), "--budget-mb", "3"])
        == 0
    )
    assert "v.html" in capsys.readouterr().out and (tmp_path / "v.html").stat().st_size <= 3e6
    assert main(["view", str(tmp_path / "out")]) == 2
    assert "not an l4p results folder" in capsys.readouterr().err
