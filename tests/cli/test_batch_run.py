"""`l4p run` over many inputs: the manifest, re-runs after a kill, --workers, torchrun, @lists, globs."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from l4p_framework.batch_run import TEST_KILL_AFTER
from l4p_framework.cli.main import main
from l4p_framework.data.video import write_video

pytest.importorskip("l4p_head_depth")

FRAMES, H, W = 8, 32, 48
FAST = ["--heads", "depth", "--registry", "none", "--no-ply", "--no-preview"]


def _video(path: Path, seed: int = 0) -> Path:
    base = np.random.default_rng(seed).integers(0, 255, (H, W * 2, 3), dtype=np.uint8)
    return write_video(path, np.stack([base[:, t : t + W] for t in range(FRAMES)]), fps=10)


def _videos(folder: Path) -> list[Path]:
    """Five good videos and a corrupt one (garbage bytes named .mp4)."""
    good = [_video(folder / f"clip{i}.mp4", seed=i) for i in range(5)]
    (folder / "bad.mp4").write_bytes(os.urandom(4096))
    return good


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _l4p(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "l4p_framework.cli.main", "run", *args, *FAST]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, **kw)


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.load(p) for p in sorted(folder.rglob("*.npy"))}


def test_a_killed_batch_resumes_without_recomputing_and_records_the_corrupt_video(tmp_path):
    good = _videos(tmp_path / "in")
    out = tmp_path / "out"
    env = {**os.environ, TEST_KILL_AFTER: "3"}  # the run SIGKILLs itself and its workers after 3 attempts
    first = _l4p(str(tmp_path / "in"), "--out", str(out), "--workers", "2", env=env, start_new_session=True)
    assert first.returncode == -9, first.stderr
    done_first = {r["input"] for r in _records(out) if r["status"] == "done"}
    assert 2 <= len(done_first) < len(good), _records(out)
    stamps = {i: (Path(i).stem, (out / Path(i).stem / "meta.json").stat().st_mtime_ns) for i in done_first}

    second = _l4p(str(tmp_path / "in"), "--out", str(out), "--workers", "2")
    assert second.returncode == 1, second.stderr
    assert f"skipping {len(done_first)} of 6 videos already done" in second.stderr
    records = _records(out)
    done = Counter(r["input"] for r in records if r["status"] == "done")
    assert done == {os.path.abspath(v): 1 for v in good}
    for name, mtime in stamps.values():
        assert (out / name / "meta.json").stat().st_mtime_ns == mtime  # not recomputed
    bad = [r for r in records if r["input"] == os.path.abspath(tmp_path / "in" / "bad.mp4")]
    assert bad and all(r["status"] == "failed" and r["error"] for r in bad)
    assert bad[-1]["output"] == os.path.abspath(out / "bad") and not (out / "bad").exists()
    assert sorted(os.listdir(out)) == sorted(
        ["manifest.jsonl", *(f"clip{i}" for i in range(5))]
    )  # no .partial
    assert f"{5 - len(done_first)}/{6 - len(done_first)} done, 1 failed" in second.stderr


def test_torchrun_ranks_share_the_jobs_and_match_a_single_process_run(tmp_path):
    good = _videos(tmp_path / "in")
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}  # as torchrun sets per rank: same float reductions
    single = _l4p(str(tmp_path / "in"), "--out", str(tmp_path / "single"), env=one_thread)
    assert single.returncode == 1, single.stderr
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd = [
        *launch,
        "-m",
        "l4p_framework.cli.main",
        "run",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "dist"),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    ranked = subprocess.run([*cmd, *FAST], capture_output=True, text=True, timeout=150, env=env)
    assert ranked.returncode != 0, ranked.stderr  # the rank with the corrupt video exits 1
    dist = tmp_path / "dist"
    assert not list(dist.glob("manifest.rank*.jsonl"))  # merged by rank 0
    records = _records(dist)
    assert Counter(r["status"] for r in records) == {"done": 5, "failed": 1}
    for video in good:
        a, b = _arrays(tmp_path / "single" / video.stem), _arrays(dist / video.stem)
        assert a.keys() == b.keys() and a
        for key in a:
            assert np.array_equal(a[key], b[key], equal_nan=True), (video.stem, key)


def test_list_files_and_globs_name_the_inputs(tmp_path, capsys):
    a, b, c = (_video(tmp_path / "v" / f"{n}.mp4", seed=i) for i, n in enumerate("abc"))
    listing = tmp_path / "v" / "list.txt"
    listing.write_text("# two of them\n\na.mp4\n  b.mp4  \n")
    out = tmp_path / "out"
    assert main(["run", f"@{listing}", str(a), "--out", str(out), *FAST]) == 0  # a twice: run once
    assert sorted(os.listdir(out)) == ["a", "b", "manifest.jsonl"]
    assert [Path(r["input"]).name for r in _records(out)] == ["a.mp4", "b.mp4"]
    capsys.readouterr()
    assert main(["run", str(tmp_path / "v" / "*.mp4"), "--out", str(out), *FAST]) == 0  # a, b skipped
    assert "skipping 2 of 3 videos already done" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["a", "b", "c", "manifest.jsonl"]
    assert [r["status"] for r in _records(out)] == ["done"] * 3
    assert main(["run", str(tmp_path / "v" / "*.avi"), "--out", str(out), *FAST]) == 2
    assert "no file matches the pattern" in capsys.readouterr().err


def test_two_inputs_with_one_name_are_refused_before_running(tmp_path, capsys):
    first, second = _video(tmp_path / "a" / "clip.mp4"), _video(tmp_path / "b" / "clip.mp4")
    assert main(["run", str(first), str(second), "--out", str(tmp_path / "out"), *FAST]) == 2
    error = capsys.readouterr().err
    assert str(first) in error and str(second) in error and "OUT/clip/" in error
    assert not (tmp_path / "out").exists()
