"""Peak memory of `l4p run` on a 200-frame and a 32-frame video: bounded by windows, not length.

Writes two generated MP4s (a panning texture with a moving square), runs `l4p run` on each in a
fresh process and prints the peak resident memory (ru_maxrss) of both and their ratio.
Goal: ratio <= 1.5.

    python benchmarks/run_memory.py [--registry registry.yaml|none] [--size 96x160]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from l4p_framework.data.video import write_video

PROBE = (
    "import resource, sys; from l4p_framework.cli.main import main; "
    "code = main(sys.argv[1:]); print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
)


def make_video(path: Path, frames: int, height: int, width: int) -> Path:
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (height, width + frames, 3), dtype=np.uint8)
    clip = np.stack([texture[:, t : t + width] for t in range(frames)])
    for t in range(frames):
        x = (t * 3) % (width - 16)
        clip[t, 10:26, x : x + 16] = 255
    return write_video(path, clip, fps=24)


def peak_rss_mb(video: Path, out: Path, registry: str) -> float:
    cmd = [
        sys.executable,
        "-c",
        PROBE,
        "run",
        str(video),
        "--out",
        str(out),
        "--registry",
        registry,
        "--no-ply",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"l4p run failed:\n{result.stderr}")
    line = next(line for line in result.stdout.splitlines() if line.startswith("MAXRSS"))
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", default="registry.yaml")
    parser.add_argument("--size", default="96x160")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        long = make_video(tmp / "long.mp4", 200, height, width)
        short = make_video(tmp / "short.mp4", 32, height, width)
        peak_short = peak_rss_mb(short, tmp / "o1", args.registry)
        peak_long = peak_rss_mb(long, tmp / "o2", args.registry)
    print(f"video {height}x{width}, registry {args.registry}")
    print(f"peak RSS  32 frames: {peak_short:8.1f} MB")
    print(f"peak RSS 200 frames: {peak_long:8.1f} MB")
    print(f"ratio 200/32 = {peak_long / peak_short:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
