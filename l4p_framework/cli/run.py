"""`l4p run INPUT`: every head on a video file or image folder, streamed in windows; exports."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..errors import InputError, L4PError
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
    p.add_argument("--out", default="l4p-out", help="output folder (one subfolder per video)")
    p.add_argument("--no-ply", action="store_true", help="skip the per-frame PLY point clouds")
    return {"run": run_command}


def _inputs(path: Path) -> list[Path]:
    if path.is_dir():
        videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if videos:
            return videos
    return [path]


def parse_intrinsics(text: str) -> torch.Tensor:
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--intrinsics must be fx,fy,cx,cy (four numbers), got {text!r}") from None
    return torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def parse_queries(text: str, size: tuple[int, int]) -> torch.Tensor:
    """(1, N, 3) queries (t, x, y) in input pixels from grid:N (N x N on frame 0) or a CSV of t,x,y."""
    h, w = size
    if text.startswith("grid:"):
        try:
            n = int(text[5:])
        except ValueError:
            raise InputError(f"--queries grid:N needs an integer N, got {text!r}") from None
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
    model, _ = load_model(args.registry, parse_heads(args.heads))
    out_root = Path(args.out)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        probe = out_root / ".l4p-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise L4PError(f"cannot write to output folder {out_root}: {exc.strerror or exc}") from None
    for video in _inputs(source):
        run_one(
            model, video, out_root / video.stem if video != source or source.is_file() else out_root, args
        )
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
    out.mkdir(parents=True, exist_ok=True)
    arrays = export_arrays(outputs)
    np.savez_compressed(out / "results.npz", **arrays)
    written = ["results.npz"]
    written += export_geometry(outputs, arrays, src.size, K_in, default_intrinsics, out, not args.no_ply)
    print(f"{path}: {src.num_frames or '?'} frames -> {out}/ ({', '.join(written)})")


def export_arrays(outputs: dict) -> dict[str, np.ndarray]:
    """Every head's outputs (already at the input resolution, in input pixels), keyed `head/output`."""
    return {
        f"{head}/{key}": value.detach().float()[0].numpy()
        for head, result in outputs.items()
        for key, value in result.items()
    }


def export_geometry(outputs, arrays, in_size, K_in, default_intrinsics, out: Path, ply: bool) -> list[str]:
    from ..geometry import save_intrinsics_json, save_ply, save_tum, unproject_depth

    written = []
    poses = outputs.get("pose", {}).get("poses")
    if poses is not None:
        save_tum(out / "trajectory.tum", poses[0].float(), torch.arange(poses.shape[1], dtype=torch.float64))
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
