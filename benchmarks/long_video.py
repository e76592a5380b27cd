"""Long video: time per frame and peak memory of `l4p run` (every registry head) by video length.

Each length runs in a fresh process (`l4p run` on a generated panning video, PLYs and previews
off unless --exports) and prints its wall time, the time per frame, the marginal time per frame
between this length and the previous one ((t_N - t_M) / (N - M): start-up and model loading
cancel), and the child's peak RSS (`RUSAGE_CHILDREN`, so lengths run from short to long). A
constant marginal time per frame and a flat peak RSS mean the run scales linearly in time and
not at all in memory.

    python benchmarks/long_video.py [--frames 16,64,256,1024] [--size 64x64] [--exports]
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def panning_video(path: Path, frames: int, h: int, w: int) -> Path:
    """A (frames, h, w) MP4 of a random 4-px block texture moving 1 px per frame to the left."""
    from l4p_framework.data.video import write_video

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 255, (h // 4 + 1, (w + frames) // 4 + 1, 3), dtype=np.uint8)
    wide = wide.repeat(4, 0).repeat(4, 1)
    return write_video(path, np.stack([wide[:h, t : t + w] for t in range(frames)]), fps=25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", default="16,64,256,1024")
    parser.add_argument("--size", default="64x64", help="input frames HxW")
    parser.add_argument("--registry", default="registry.yaml")
    parser.add_argument("--exports", action="store_true", help="also write PLYs and previews")
    args = parser.parse_args()
    h, w = (int(x) for x in args.size.split("x"))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.registry}")
    print(f"l4p run, every registry head, {h}x{w} panning video, exports {'on' if args.exports else 'off'}")
    print(f"{'frames':>7s} {'wall s':>8s} {'s/frame':>8s} {'marginal s/frame':>17s} {'peak RSS':>10s}")
    previous = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(f) for f in args.frames.split(",")):
            video = panning_video(Path(tmp) / f"pan{n}.mp4", n, h, w)
            command = [sys.executable, "-m", "l4p_framework.cli.main", "run", str(video)]
            command += ["--registry", args.registry, "--out", str(Path(tmp) / f"out{n}")]
            if not args.exports:
                command += ["--no-preview", "--no-ply"]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            marginal = "" if previous is None else f"{(seconds - previous[1]) / (n - previous[0]):.4f}"
            print(f"{n:7d} {seconds:8.1f} {seconds / n:8.4f} {marginal:>17s} {peak:8.0f} MB", flush=True)
            previous = (n, seconds)
            video.unlink()


if __name__ == "__main__":
    main()
