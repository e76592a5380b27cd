"""`l4p run INPUT`: every head on a video file or image folder, streamed in windows; exports.

Each video's outputs go to OUT/NAME/ (NAME: the video file's stem, or the image folder's name), built
in a hidden OUT/.NAME.partial-PID-XXXX/ and renamed into place only once every file is written: a full
disk or Ctrl-C removes the hidden folder and leaves an earlier OUT/NAME/ as it was; a SIGKILL can leave
only the hidden folder, which the next run into OUT deletes (see `l4p_framework.io.atomic_folder`).
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..errors import InputError, L4PError
from ..io import atomic_folder
from .common import Progress, add_model_arguments, load_model, parse_heads

VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".avi", ".mkv", ".gif"}


def register(sub) -> dict:
    p = sub.add_parser("run", help="run heads on a video file, an image folder or a folder of videos")
    p.add_argument("input", help="video file, folder of images, or folder of videos")
    add_model_arguments(p)
    p.add_argument(
        "--queries",
        default="grid:8",
        help="tracking queries: grid:N (N x N on frame 0) or points.csv (t,x,y)",
    )
    p.add_argument("--intrinsics", default=None, help="known camera intrinsics fx,fy,cx,cy in input pixels")
    p.add_argument("--resize", choices=["letterbox", "crop", "squash"], default="letterbox")
    p.add_argument(
        "--out",
        default="l4p-out",
        help="output folder: each video's files go to OUT/NAME/ (NAME = the video file's stem or the "
        "image folder's name), written complete or not at all",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT/NAME/ whole (default: refuse to touch it)",
    )
    p.add_argument("--no-ply", action="store_true", help="skip the per-frame PLY point clouds")
    return {"run": run_command}


def _inputs(path: Path) -> list[tuple[Path, str]]:
    """(video, output name) pairs: a video file, each video of a folder of videos, or an image folder."""
    if path.is_dir():
        videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if videos:
            return [(v, v.stem) for v in videos]
        return [(path, path.resolve().name or "frames")]
    return [(path, path.stem)]


def _check_outputs(jobs: list[tuple[Path, str]], out_root: Path, overwrite: bool) -> None:
    """Refuse two videos with one output name, an input inside its own OUT/NAME/ (--overwrite would
    delete it), and an existing OUT/NAME/ unless --overwrite."""
    seen: dict[str, Path] = {}
    for video, name in jobs:
        out = out_root / name
        if name in seen:
            raise InputError(
                f"{seen[name].name} and {video.name} in {video.parent} would both write {out}; "
                "rename one or run them separately"
            )
        seen[name] = video
        if out.resolve() == video.resolve() or out.resolve() in video.resolve().parents:
            raise InputError(f"input {video} lies inside its output folder {out}; choose another --out")
        try:
            occupied = out.is_symlink() or out.is_file() or (out.is_dir() and any(out.iterdir()))
        except OSError as exc:
            raise L4PError(f"cannot read output folder {out}: {exc.strerror or exc}") from None
        if occupied and not overwrite:
            raise L4PError(_exists_message(out))


def _exists_message(out: Path) -> str:
    return f"output folder {out} already exists; pass --overwrite to replace it or choose another --out"


def parse_intrinsics(text: str) -> torch.Tensor:
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--intrinsics must be fx,fy,cx,cy (four numbers), got {text!r}") from None
    if not (fx > 0 and fy > 0) or not all(math.isfinite(v) for v in (fx, fy, cx, cy)):
        raise InputError(f"--intrinsics needs positive, finite focal lengths fx,fy in pixels, got {text!r}")
    return torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def parse_queries(text: str, size: tuple[int, int]) -> torch.Tensor:
    """(1, N, 3) queries (t, x, y) in input pixels from grid:N (N x N on frame 0) or a CSV of t,x,y."""
    h, w = size
    if text.startswith("grid:"):
        try:
            n = int(text[5:])
        except ValueError:
            raise InputError(f"--queries grid:N needs an integer N, got {text!r}") from None
        if not 1 <= n <= 1000:
            raise InputError(f"--queries grid:N needs 1 <= N <= 1000 (N x N points on frame 0), got {text!r}")
        xs = torch.linspace(0, w, n + 2)[1:-1]
        ys = torch.linspace(0, h, n + 2)[1:-1]
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([torch.zeros_like(gx), gx, gy], -1).reshape(1, -1, 3)
    path = Path(text)
    if not path.is_file():
        raise InputError(f"--queries: {text!r} is neither grid:N nor an existing CSV file")
    with open(path) as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    try:
        values = torch.tensor([[float(v) for v in r[:3]] for r in rows if r[0].strip() not in ("t", "frame")])
    except ValueError:
        raise InputError(f"{path}: every row must be t,x,y numbers") from None
    if values.ndim != 2 or values.shape[1] != 3:
        raise InputError(f"{path}: expected rows t,x,y, got shape {tuple(values.shape)}")
    return values[None].float()


def run_command(args) -> int:
    source = Path(args.input)
    if not source.exists():
        raise InputError(f"input {source} does not exist")
    out_root = Path(args.out)
    jobs = _inputs(source)
    _check_outputs(jobs, out_root, args.overwrite)
    model, _ = load_model(args.registry, parse_heads(args.heads))
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".l4p-write-test-", dir=out_root)  # unique: runs may share OUT
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise L4PError(f"cannot write to output folder {out_root}: {exc.strerror or exc}") from None
    for video, name in jobs:
        run_one(model, video, out_root / name, args)
    return 0


def run_one(model, path: Path, out: Path, args) -> None:
    from ..data.video import default_intrinsics, open_video

    src = open_video(path)

    def frames():
        for frame in src:
            yield rearrange(torch.from_numpy(np.ascontiguousarray(frame)), "h w c -> 1 c h w").float() / 255

    K_in = parse_intrinsics(args.intrinsics) if args.intrinsics else None
    queries = parse_queries(args.queries, src.size) if "tracking" in model.heads else None
    progress = Progress(f"{path.name}", None)
    with torch.no_grad():
        outputs = model.stream(
            frames(),
            queries=queries,
            intrinsics=None if K_in is None else K_in[None],
            on_window=progress,
            num_frames=None if path.is_file() else src.num_frames,  # container counts are estimates
            resize=args.resize,
        )
    progress.done()
    arrays = export_arrays(outputs)
    try:
        with atomic_folder(out, overwrite=args.overwrite) as tmp:
            np.savez_compressed(tmp / "results.npz", **arrays)
            written = ["results.npz"]
            written += export_geometry(
                outputs, arrays, src.size, K_in, default_intrinsics, tmp, not args.no_ply, src.fps
            )
    except FileExistsError:  # another run published OUT/NAME/ while this one was computing
        raise L4PError(_exists_message(out)) from None
    except OSError as exc:
        raise L4PError(
            f"cannot write outputs of {path} to {out}: {exc.strerror or exc}; free space or choose another --out"
        ) from None
    print(f"{path}: {src.num_frames or '?'} frames -> {out}/ ({', '.join(written)})")


def export_arrays(outputs: dict) -> dict[str, np.ndarray]:
    """Every head's outputs (already at the input resolution, in input pixels), keyed `head/output`."""
    return {
        f"{head}/{key}": value.detach().float()[0].numpy()
        for head, result in outputs.items()
        for key, value in result.items()
    }


def export_geometry(
    outputs, arrays, in_size, K_in, default_intrinsics, out: Path, ply: bool, fps: float | None = None
) -> list[str]:
    from ..geometry import save_intrinsics_json, save_ply, save_tum, unproject_depth

    written = []
    poses = outputs.get("pose", {}).get("poses")
    if poses is not None:
        save_tum(out / "trajectory.tum", poses[0].float(), fps=fps)  # seconds (frame index without a rate)
        written.append("trajectory.tum")
    if "pose/intrinsics" in arrays:
        save_intrinsics_json(out / "intrinsics.json", torch.from_numpy(arrays["pose/intrinsics"]), in_size)
        written.append("intrinsics.json")
    depth = arrays.get("depth/depth")
    if ply and depth is not None:
        d = torch.from_numpy(depth)[0]  # (T, H, W)
        if K_in is not None:
            K = K_in.expand(d.shape[0], 3, 3)
        elif "pose/intrinsics" in arrays:
            K = torch.from_numpy(arrays["pose/intrinsics"])
        else:
            K = default_intrinsics(in_size, d.shape[0])
        points = unproject_depth(d[None], K[None].float())[0]
        for t in range(d.shape[0]):
            save_ply(out / f"points_{t:05d}.ply", points[t], valid=d[t] > 0)
        written.append(f"points_*.ply ({d.shape[0]} frames)")
    return written
