"""`l4p run` export conventions: output size, NaN where undefined, probabilities, one depth scale, PLY colour."""

from __future__ import annotations

import numpy as np
import pytest

from l4p_framework.cli.main import main
from l4p_framework.data.video import write_video
from l4p_framework.results import load_results

pytest.importorskip("l4p_head_tracking")


@pytest.fixture(scope="module")
def run_once(tmp_path_factory):
    """One run of depth, flow, motion and tracking (untrained, tiny encoder) on a 48 x 80 panning
    clip at --max-side 40, with one query at frame 0 and one at frame 5 (input pixels)."""
    tmp = tmp_path_factory.mktemp("exports")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (48, 80 * 2, 3), dtype=np.uint8)
    video = write_video(tmp / "clip.mp4", np.stack([base[:, t : t + 80] for t in range(12)]), fps=12)
    (tmp / "q.csv").write_text("t,x,y\n0,20,10\n5,60.5,30\n")
    args = ["run", str(video), "--heads", "depth,flow,motion,tracking", "--registry", "none"]
    code = main([*args, "--out", str(tmp / "out"), "--queries", str(tmp / "q.csv"), "--max-side", "40"])
    assert code == 0
    return load_results(tmp / "out" / "clip"), tmp / "out" / "clip"


def test_every_output_is_at_the_output_size_in_output_pixels(run_once):
    results, _ = run_once
    assert results.size == (24, 40) and results.meta["input_size"] == [48, 80]
    assert results["depth/depth"].shape == (12, 24, 40) and results["flow/flow"].shape == (12, 24, 40, 2)
    np.testing.assert_allclose(results["tracking/queries"], [[0, 10, 5], [5, 30.25, 15]], atol=1e-4)


def test_undefined_frames_are_nan_and_logits_are_probabilities(run_once):
    results, _ = run_once
    flow = np.asarray(results["flow/flow"], dtype=np.float32)
    assert np.isnan(flow[0]).all() and np.isfinite(flow[1:]).all()
    tracks, visibility = results["tracking/tracks"], results["tracking/visibility"]
    assert (
        np.isfinite(tracks[:, 0]).all() and np.isnan(tracks[:5, 1]).all() and np.isfinite(tracks[5:, 1]).all()
    )
    assert np.isnan(visibility[:5, 1]).all() and ((visibility[5:] >= 0) & (visibility[5:] <= 1)).all()
    logit = results["tracking/visibility_logit"]
    np.testing.assert_allclose(visibility[5:], 1 / (1 + np.exp(-logit[5:])), atol=1e-6)
    assert (
        results["motion/motion"].dtype == np.uint8
        and results.info("motion/motion")["values"] == "probability255"
    )
    assert results.info("tracking/visibility")["values"] == "probability"


def test_track_depth_is_on_the_depth_maps_scale(run_once):
    """At visible points, depth sampled at the track equals track_depth up to one median per frame."""
    results, _ = run_once
    depth, tracks = results["depth/depth"], results["tracking/tracks"]
    visible, track_depth = results["tracking/visibility"] > 0.5, results["tracking/track_depth"]
    checked = 0
    for t in range(12):
        ok = visible[t] & np.isfinite(tracks[t]).all(-1) & (track_depth[t] > 0)
        if ok.sum() == 0:
            continue
        x, y = tracks[t, ok, 0].astype(int).clip(0, 39), tracks[t, ok, 1].astype(int).clip(0, 23)
        ratio = depth[t][y, x].astype(np.float64) / track_depth[t, ok]
        assert np.median(ratio) == pytest.approx(1.0, rel=2e-3)
        checked += 1
    assert checked > 0


def test_plys_are_coloured_points_of_each_frame(run_once):
    _, folder = run_once
    plys = sorted((folder / "points").glob("*.ply"))
    assert [p.name for p in plys] == [f"{t:06d}.ply" for t in range(12)]
    header = plys[3].read_bytes().split(b"end_header")[0].decode()
    assert "property uchar red" in header and "element vertex 960" in header  # 24 x 40 points
