"""`l4p run` outputs: OUT/NAME/ for every input kind, written whole or not at all, never mixed."""

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from l4p_framework.cli.main import build_parser, main
from l4p_framework.cli.run import run_command
from l4p_framework.data.video import write_video
from l4p_framework.results import NpyAppender, load_results

pytest.importorskip("l4p_head_depth")

FRAMES, H, W = 8, 32, 48
NOT_A_PID = 2**22 + 1  # above Linux's PID_MAX_LIMIT: never a running process


def _clip() -> np.ndarray:
    base = np.random.default_rng(0).integers(0, 255, (H, W * 2, 3), dtype=np.uint8)
    return np.stack([base[:, t : t + W] for t in range(FRAMES)])  # a panning texture


def _video(path: Path) -> Path:
    return write_video(path, _clip(), fps=10)


def _images(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, frame in enumerate(_clip()):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    return folder


def _run(target: Path, out: Path, *extra: str) -> int:
    return main(["run", str(target), "--heads", "depth", "--out", str(out), "--registry", "none", *extra])


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _one_error(capsys) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("l4p: error:")]
    assert len(errors) == 1, errors
    return errors[0]


def test_every_input_kind_writes_out_name_results(tmp_path):
    """A video file, a folder of videos and an image folder all give OUT/NAME/ with one layout."""
    inputs = {
        "file": _video(tmp_path / "file" / "clip.mp4"),
        "videos": _video(tmp_path / "videos" / "clip.mp4").parent,
        "images": _images(tmp_path / "images" / "clip"),
    }
    for kind, target in inputs.items():
        out = tmp_path / f"out-{kind}"
        assert _run(target, out, "--no-ply", "--no-preview") == 0, kind
        assert os.listdir(out) == ["clip"] and sorted(os.listdir(out / "clip")) == ["depth", "meta.json"], (
            kind
        )
        results = load_results(out / "clip")
        assert results["depth/depth"].shape == (FRAMES, H, W) and results.size == (H, W), kind


def test_rerun_refuses_an_existing_output_and_overwrite_replaces_it_whole(tmp_path, capsys):
    video = _video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    dead = out / f".clip.partial-{NOT_A_PID}-x1"  # left by a SIGKILLed run: deleted by the next run
    live = out / f".clip.partial-{os.getpid()}-x2"  # a run still in progress: kept
    for folder in (dead, live):
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text("{")
    assert _run(video, out) == 0
    assert not dead.exists() and live.exists()
    shutil.rmtree(live)
    first = _files(out / "clip")
    assert {"meta.json", "depth/depth.npy", f"points/{FRAMES - 1:06d}.ply", "preview/depth.mp4"} <= set(first)

    capsys.readouterr()
    assert _run(video, out, "--no-ply") == 2
    error = _one_error(capsys)
    assert str(out / "clip") in error and "--overwrite" in error
    assert _files(out / "clip") == first

    (out / "clip" / "stray.txt").write_text("a file of an older run")
    assert _run(video, out, "--no-ply", "--no-preview", "--overwrite") == 0
    assert os.listdir(out) == ["clip"] and sorted(os.listdir(out / "clip")) == [
        "depth",
        "meta.json",
    ]  # no old PLYs


def _disk_full(monkeypatch, writer: str) -> None:
    """The streamed arrays' first append ("npy") or the third PLY ("ply") writes a few bytes, then
    the disk is full."""
    import l4p_framework.geometry as geometry

    if writer == "npy":

        def append(self, frames):
            self.file.write(b"\x00" * 7)
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(NpyAppender, "append", append)
        return
    real, calls = geometry.save_ply, []

    def write(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            Path(path).write_bytes(b"ply\nformat")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(geometry, "save_ply", write)


@pytest.mark.parametrize("writer", ["npy", "ply"])
def test_disk_full_on_a_first_run_leaves_no_output_folder(tmp_path, monkeypatch, capsys, writer):
    video = _video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    _disk_full(monkeypatch, writer)
    assert _run(video, out) == 2
    error = _one_error(capsys)
    assert f"cannot write outputs of {video} to {out / 'clip'}: No space left on device" in error
    assert "free space or choose another --out" in error
    assert os.listdir(out) == []  # neither OUT/clip/ nor a hidden .clip.partial-* folder


def test_disk_full_on_overwrite_keeps_the_old_output_byte_for_byte(tmp_path, monkeypatch, capsys):
    video = _video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    assert _run(video, out) == 0
    old = _files(out / "clip")
    _disk_full(monkeypatch, "ply")
    capsys.readouterr()
    assert _run(video, out, "--overwrite") == 2
    assert "No space left on device" in _one_error(capsys)
    assert os.listdir(out) == ["clip"] and _files(out / "clip") == old


def test_interrupt_during_export_removes_the_partial_folder_and_propagates(tmp_path, monkeypatch):
    video = _video(tmp_path / "clip.mp4")
    out = tmp_path / "out"

    def interrupted(self, frames):
        self.file.write(b"\x00" * 7)
        raise KeyboardInterrupt

    monkeypatch.setattr(NpyAppender, "append", interrupted)
    parser, _ = build_parser()
    args = parser.parse_args(["run", str(video), "--heads", "depth", "--out", str(out), "--registry", "none"])
    with pytest.raises(KeyboardInterrupt):
        run_command(args)
    assert os.listdir(out) == []


def test_videos_with_one_stem_are_refused_before_running(tmp_path, capsys):
    folder = tmp_path / "videos"
    _video(folder / "clip.mp4")
    _video(folder / "clip.gif")
    assert _run(folder, tmp_path / "out") == 2
    error = _one_error(capsys)
    assert "clip.gif and clip.mp4" in error and not (tmp_path / "out").exists()


def test_an_input_inside_its_output_folder_is_refused_even_with_overwrite(tmp_path, capsys):
    images = _images(tmp_path / "out" / "clip")
    before = _files(images)
    assert _run(images, tmp_path / "out", "--overwrite") == 2
    assert "lies inside its output folder" in _one_error(capsys)
    assert _files(images) == before
