"""Tracking at scale: time and peak memory of `l4p run --heads tracking` for 64, 1k and 10k query points.

Each size runs in a fresh process (`l4p run` on a generated panning video, queries on a grid over
frame 0, `--no-preview --no-ply`); prints seconds, ms per query and window, and the child's peak RSS
(`resource.getrusage(RUSAGE_CHILDREN)` after each run, so sizes run from small to large).

    python benchmarks/tracking_scale.py [--grids 8,32,100] [--frames 24] [--size 240x320]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def panning_video(path: Path, frames: int, h: int, w: int) -> Path:
    from l4p_framework.data.video import write_video

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 255, (h // 4, (w + 2 * frames) // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    return write_video(path, np.stack([wide[:h, 2 * t : 2 * t + w] for t in range(frames)]), fps=25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", default="8,32,100", help="N of grid:N queries (N x N points)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", default="240x320")
    parser.add_argument("--registry", default="registry.yaml")
    args = parser.parse_args()
    h, w = (int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        video = panning_video(Path(tmp) / "pan.mp4", args.frames, h, w)
        print(f"l4p run --heads tracking on {args.frames} frames at {h}x{w} ({args.registry})")
        print(f"{'queries':>8s} {'seconds':>8s} {'peak RSS':>10s}")
        for n in (int(g) for g in args.grids.split(",")):
            command = [
                sys.executable,
                "-m",
                "l4p_framework.cli.main",
                "run",
                str(video),
                "--heads",
                "tracking",
            ]
            command += ["--registry", args.registry, "--queries", f"grid:{n}", "--no-preview", "--no-ply"]
            command += ["--out", str(Path(tmp) / f"out{n}")]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(f"{n * n:8d} {seconds:8.1f} {peak:8.0f} MB", flush=True)


if __name__ == "__main__":
    main()
