"""`l4p run` / `l4p demo` / `l4p eval` on generated inputs: outputs, exports and one-line errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

from l4p_framework.cli.main import main
from l4p_framework.data.video import write_video
from l4p_framework.results import load_results

pytest.importorskip("l4p_head_depth")


def _video(path, frames=10, size=(48, 80)):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[0], size[1] * 2, 3), dtype=np.uint8)
    clip = np.stack([base[:, t : t + size[1]] for t in range(frames)])  # a panning texture
    return write_video(path, clip, fps=10)


def test_run_on_video_writes_outputs_at_input_resolution(tmp_path, capsys):
    video = _video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(video),
            "--heads",
            "depth,flow",
            "--out",
            str(out),
            "--intrinsics",
            "60,60,40,24",
            "--registry",
            "none",
        ]
    )
    assert code == 0, capsys.readouterr().err
    results = load_results(out / "clip")
    assert results["depth/depth"].shape == (10, 48, 80)
    assert results["flow/flow"].shape == (10, 48, 80, 2)
    plys = sorted((out / "clip" / "points").glob("*.ply"))
    assert len(plys) == 10 and plys[0].read_bytes().startswith(b"ply\n")


def test_run_on_image_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((32, 32, 3), i * 40, np.uint8)).save(folder / f"{i:03d}.png")
    assert (
        main(
            [
                "run",
                str(folder),
                "--heads",
                "depth",
                "--out",
                str(tmp_path / "o"),
                "--no-ply",
                "--registry",
                "none",
            ]
        )
        == 0
    )
    assert load_results(tmp_path / "o" / "frames")["depth/depth"].shape == (5, 32, 32)


@pytest.mark.parametrize("case", ["empty-file", "corrupt-file", "empty-folder", "unwritable-out", "missing"])
def test_bad_inputs_give_one_line_errors(tmp_path, case):
    out = tmp_path / "out"
    if case == "empty-file":
        target = tmp_path / "empty.mp4"
        target.write_bytes(b"")
    elif case == "corrupt-file":
        target = tmp_path / "bad.mp4"
        target.write_bytes(os.urandom(2048))
    elif case == "empty-folder":
        target = tmp_path / "folder"
        target.mkdir()
    elif case == "missing":
        target = tmp_path / "nothing.mp4"
    else:
        target = _video(tmp_path / "ok.mp4", frames=4)
        out = tmp_path / "blocker"
        out.write_text("a file where the output folder should be")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "l4p_framework.cli.main",
            "run",
            str(target),
            "--heads",
            "depth",
            "--out",
            str(out),
            "--registry",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("l4p: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr


def test_demo_and_eval_print_tables(tmp_path, capsys):
    assert (
        main(["demo", "--heads", "depth,motion", "--out", str(tmp_path / "demo"), "--registry", "none"]) == 0
    )
    printed = capsys.readouterr().out
    assert "abs_rel" in printed and "iou" in printed
    assert (tmp_path / "demo" / "depth.png").is_file() and (tmp_path / "demo" / "all.gif").is_file()
    assert main(["eval", "--heads", "depth", "--num-clips", "2", "--registry", "none"]) == 0
    assert "depth (untrained)" in capsys.readouterr().out


def test_eval_at_an_input_size_prints_protocols(tmp_path, capsys):
    """`l4p eval --size` renders clips at that size, runs the letterboxed path of `l4p run` and scores
    at the input resolution."""
    import json

    report = tmp_path / "eval.json"
    args = ["eval", "--heads", "flow,depth", "--num-clips", "1", "--size", "48x80", "--registry", "none"]
    assert main([*args, "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "1 clips at 48x80" in printed and "abs_rel (scale per sequence, depth)" in printed
    results = json.loads(report.read_text())
    assert results["depth"]["protocol"]["abs_rel"] == "scale per sequence, depth"
    assert "matching" not in results["flow"]  # the registry-less flow head is token-only
    assert main(["eval", "--size", "48by80", "--registry", "none"]) == 2
    assert "--size must be HxW" in capsys.readouterr().err


def test_an_installed_untrained_head_does_not_change_a_default_run():
    """Default heads = the registry's trained heads: a newly installed (e.g. scaffolded) head runs
    only when named with --heads."""
    import dataclasses

    from l4p_framework import hookimpl
    from l4p_framework.cli.common import REPO_REGISTRY, load_model
    from l4p_framework.registry import load_registry
    from l4p_framework.testing import fresh_host

    class Scaffold:
        @hookimpl
        def l4p_heads(self):
            return [dataclasses.replace(fresh_host(entrypoints=True).get_head("depth"), name="scaffold")]

    host = fresh_host(Scaffold(), entrypoints=True)
    assert "scaffold" in host.heads()
    trained = [h for h, e in load_registry(REPO_REGISTRY).registry.heads.items() if e.weights]
    said = []
    model, flags = load_model(str(REPO_REGISTRY), None, say=said.append, host=host)
    assert list(model.heads) == trained and all(flags.values()) and said == []
    model, flags = load_model(str(REPO_REGISTRY), ["depth", "scaffold"], say=said.append, host=host)
    assert list(model.heads) == ["depth", "scaffold"] and flags == {"depth": True, "scaffold": False}
    assert "scaffold" in said[0] and "untrained" in said[0]


def test_a_default_l4p_run_writes_the_same_files_with_an_untrained_head_installed(tmp_path, monkeypatch):
    """`l4p run` without --heads, with and without a scaffolded (untrained) head plugin installed:
    the same heads, the same arrays, bit for bit."""
    import dataclasses

    import l4p_framework.cli.common as common
    from l4p_framework import hookimpl
    from l4p_framework.testing import fresh_host

    class Scaffold:
        @hookimpl
        def l4p_heads(self):
            return [dataclasses.replace(fresh_host(entrypoints=True).get_head("depth"), name="scaffold")]

    video = _video(tmp_path / "clip.mp4")
    outputs = {}
    for label, host in (
        ("plain", fresh_host(entrypoints=True)),
        ("scaffold", fresh_host(Scaffold(), entrypoints=True)),
    ):
        monkeypatch.setattr(common, "get_plugin_host", lambda host=host: host)
        out = tmp_path / label
        assert main(["run", str(video), "--out", str(out), "--no-ply", "--no-preview"]) == 0
        outputs[label] = load_results(out / "clip")
    plain, scaffold = outputs["plain"], outputs["scaffold"]
    assert "scaffold" not in scaffold.meta["heads"] and scaffold.meta["heads"] == plain.meta["heads"]
    assert list(scaffold) == list(plain) and len(plain) >= 10
    for key in plain:
        np.testing.assert_array_equal(np.asarray(scaffold[key]), np.asarray(plain[key]), err_msg=key)


def test_eval_says_which_dataset_options_a_reader_refuses(tmp_path, capsys):
    args = ["eval", "--heads", "depth", "--registry", "none", "--data", "sintel", f"root={tmp_path}"]
    assert main([*args, "num_frames=24"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'sintel' does not take the options" in err and "num_frames" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--intrinsics", "0,0,48,32"], "positive, finite focal lengths"),
        (["--intrinsics=-100,100,48,32"], "positive, finite focal lengths"),
        (["--queries", "grid:-3"], "1 <= N <= 1000"),
    ],
)
def test_run_refuses_bad_intrinsics_and_query_grids_in_one_line(tmp_path, capsys, option, message):
    video = write_video(tmp_path / "v.mp4", np.zeros((4, 32, 48, 3), np.uint8), fps=8)
    args = ["run", str(video), "--out", str(tmp_path / "o"), "--registry", "none", "--heads", "tracking,pose"]
    assert main([*args, *option]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_model_refuses_zero_and_negative_focal_lengths():
    import torch

    from l4p_framework import compose
    from l4p_framework.errors import InputError

    model = compose(["pose"])
    K = torch.tensor([[[0.0, 0, 32], [0, 0.0, 32], [0, 0, 1]]])
    with pytest.raises(InputError, match="positive focal lengths"):
        model(torch.rand(1, 3, 8, 64, 64), intrinsics=K)
    K = torch.tensor([[[50.0, 0, 32], [0, 50.0, 32], [0, 1, 1]]])
    with pytest.raises(InputError, match="last row"):
        model(torch.rand(1, 3, 8, 64, 64), intrinsics=K)


def test_run_trajectory_timestamps_are_seconds_and_queries_input_pixels(tmp_path, capsys):
    video = _video(tmp_path / "clip.mp4")  # 10 frames at 10 fps, 48 x 80
    out = tmp_path / "out"
    args = ["run", str(video), "--heads", "pose,tracking", "--out", str(out), "--registry", "none"]
    assert main([*args, "--queries", "grid:2", "--no-ply"]) == 0, capsys.readouterr().err
    lines = (out / "clip" / "trajectory.tum").read_text().splitlines()
    stamps = [float(line.split()[0]) for line in lines if not line.startswith("#")]
    assert stamps == pytest.approx([i / 10 for i in range(10)])
    results = load_results(out / "clip")
    # grid:2 on the 80 x 48 input: x at 80/3, 160/3 and y at 16, 32 input pixels, frame 0
    assert results["tracking/queries"][:, 1:] == pytest.approx(
        np.array([[80 / 3, 16], [160 / 3, 16], [80 / 3, 32], [160 / 3, 32]]), abs=1e-4
    )
