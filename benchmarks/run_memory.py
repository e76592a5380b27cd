"""Peak memory and disk of `l4p run` per video length and size: memory flat in the length.

Writes generated MP4s (a panning texture with a moving square) of each size and length, runs
`l4p run` on each in a fresh process (every trained head of the registry, PLYs and previews on
unless --lean) and prints the peak resident memory (ru_maxrss), the wall time, the disk used per
frame and, per size, the ratio of the longest to the shortest video's peak. Goal: ratio <= 1.1.

    python benchmarks/run_memory.py [--registry registry.yaml|none] [--sizes 240x320,720x1280]
                                    [--frames 64,512] [--lean]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from l4p_framework.data.video import VideoWriter

PROBE = (
    "import resource, sys; from l4p_framework.cli.main import main; "
    "code = main(sys.argv[1:]); print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
)


def make_video(path: Path, frames: int, height: int, width: int) -> Path:
    """A texture panning 3 px per frame with a white square moving across it (streamed to disk)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (height, width + 3 * frames, 3), dtype=np.uint8)
    side = max(8, height // 8)
    with VideoWriter(path, fps=24) as writer:
        for t in range(frames):
            frame = texture[:, 3 * t : 3 * t + width].copy()
            x = (t * 5) % (width - side)
            frame[side : 2 * side, x : x + side] = 255
            writer.write(frame)
    return path


def run(video: Path, out: Path, registry: str, lean: bool) -> tuple[float, float, float]:
    """(peak RSS in MB, wall seconds, MB on disk) of one `l4p run`."""
    cmd = [sys.executable, "-c", PROBE, "run", str(video), "--out", str(out), "--registry", registry]
    cmd += ["--no-ply", "--no-preview"] if lean else []
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"l4p run failed:\n{result.stderr}")
    line = next(line for line in result.stdout.splitlines() if line.startswith("MAXRSS"))
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    return int(line.split()[1]) / 1024, wall, disk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", default="registry.yaml")
    parser.add_argument("--sizes", default="240x320,720x1280", help="comma-separated HxW")
    parser.add_argument("--frames", default="64,512", help="comma-separated video lengths")
    parser.add_argument("--lean", action="store_true", help="--no-ply --no-preview (arrays only)")
    args = parser.parse_args()
    lengths = [int(f) for f in args.frames.split(",")]
    print(f"registry {args.registry}, {'arrays only' if args.lean else 'arrays, PLYs and previews'}")
    print("| video | frames | peak RSS | wall | disk | disk per frame |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.split("x"))
        peaks = []
        for frames in lengths:
            with tempfile.TemporaryDirectory() as tmp:
                video = make_video(Path(tmp) / "clip.mp4", frames, height, width)
                peak, wall, disk = run(video, Path(tmp) / "out", args.registry, args.lean)
            peaks.append(peak)
            print(
                f"| {width}x{height} | {frames} | {peak:.0f} MB | {wall / 60:.1f} min | {disk:.0f} MB | "
                f"{disk / frames:.2f} MB |",
                flush=True,
            )
        print(
            f"| {width}x{height} | ratio {lengths[-1]}/{lengths[0]} | **{peaks[-1] / peaks[0]:.2f}** | | | |"
        )


if __name__ == "__main__":
    main()
