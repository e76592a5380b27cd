"""`l4p run INPUT`: the registry's trained heads on a video file or image folder, streamed in windows.

Each window's outputs are written as soon as they are final (`l4p_framework.results`: one .npy per
output, meta.json; `load_results` reads them back), then exports that need the whole video: track
depth on the depth's scale, trajectory.tum, intrinsics.json, coloured PLYs and previews (the video is
decoded a second time for their colours). README "What l4p run writes" is the convention sheet.

Each video's outputs go to OUT/NAME/ (NAME: the video file's stem, or the image folder's name), built
in a hidden OUT/.NAME.partial-PID-XXXX/ and renamed into place only once every file is written: a full
disk or Ctrl-C removes the hidden folder and leaves an earlier OUT/NAME/ as it was; a SIGKILL can leave
only the hidden folder, which the next run into OUT deletes (see `l4p_framework.io.atomic_folder`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..errors import InputError, L4PError
from ..io import atomic_folder
from ..profiles import PROFILES, default_resize
from ..results import ResultsWriter, load_results
from .common import Progress, add_model_arguments, load_model, parse_heads

VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".avi", ".mkv", ".gif"}
DEFAULT_MAX_SIDE = 1920
"""`l4p run` scales larger videos down to this longer side unless told otherwise (--max-side 0)."""


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
    p.add_argument(
        "--resize",
        choices=["letterbox", "crop", "squash"],
        default=None,
        help="how frames are fitted into the encoder's window (default: the profile's, letterbox; "
        "squash under --profile official)",
    )
    p.add_argument(
        "--profile",
        choices=list(PROFILES),
        default=None,
        help="l4p (default) or official: the official L4P pre-processing, windows, stitching and "
        "autocast where l4p differs (README, Use the official weights); overrides the registry's "
        "`profile`",
    )
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
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", default=None, help="output resolution HxW (default: the input's)")
    size.add_argument(
        "--max-side",
        type=int,
        default=DEFAULT_MAX_SIDE,
        help=f"scale videos whose longer side exceeds N pixels down to N (default {DEFAULT_MAX_SIDE}: a 4K "
        "video runs at 1920x1080, in about a quarter of the memory; 0 keeps every input's size)",
    )
    p.add_argument("--no-ply", action="store_true", help="skip the per-frame PLY point clouds")
    p.add_argument(
        "--ply-step",
        type=int,
        default=None,
        help="PLY points every N pixels (default: about 320 points across the longer side)",
    )
    p.add_argument(
        "--no-preview",
        dest="preview",
        action="store_false",
        help="skip preview/ (per head: an MP4 of every frame and a contact sheet PNG)",
    )
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
    model, _ = load_model(args.registry, parse_heads(args.heads), profile=args.profile)
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


def output_size(text_size: str | None, max_side: int | None, in_size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of the outputs: --size HxW, else the input scaled down to --max-side (0 or None: no
    limit), else the input's."""
    h, w = in_size
    if text_size:
        try:
            oh, ow = (int(v) for v in text_size.lower().split("x"))
        except ValueError:
            raise InputError(f"--size must be HxW in pixels (e.g. 240x320), got {text_size!r}") from None
        if not (8 <= oh <= 8192 and 8 <= ow <= 8192):
            raise InputError(f"--size needs 8 <= H, W <= 8192, got {text_size!r}")
        return oh, ow
    if max_side:
        if max_side < 8:
            raise InputError(f"--max-side needs at least 8 pixels (or 0: no limit), got {max_side}")
        scale = min(1.0, max_side / max(h, w))
        return max(1, round(h * scale)), max(1, round(w * scale))
    return h, w


def _resized(frames, size: tuple[int, int]):
    """uint8 (H, W, 3) frames resized to `size` (area interpolation when shrinking)."""
    import cv2

    for frame in frames:
        if frame.shape[:2] != size:
            shrink = size[0] < frame.shape[0]
            frame = cv2.resize(
                frame, size[::-1], interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            )
        yield frame


def run_one(model, path: Path, out: Path, args) -> None:
    from ..data.video import open_video

    src = open_video(path)
    resize = args.resize or default_resize(model.profile)
    size = output_size(args.size, args.max_side, src.size)
    scale = torch.tensor([size[1] / src.size[1], size[0] / src.size[0]])  # (x, y) input -> output pixels
    K_out = None
    if args.intrinsics:
        K_out = parse_intrinsics(args.intrinsics)
        K_out[:2] *= scale[:, None]
    queries = None
    if "tracking" in model.heads:
        queries = parse_queries(args.queries, src.size)
        queries[..., 1:] *= scale

    def frames():
        for frame in _resized(src, size):
            yield rearrange(torch.from_numpy(np.ascontiguousarray(frame)), "h w c -> 1 c h w").float() / 255

    known_length = None if path.is_file() else src.num_frames  # container counts are estimates
    progress = Progress(f"{path.name}", None)
    try:
        with atomic_folder(out, overwrite=args.overwrite) as tmp:
            writer = ResultsWriter(
                tmp,
                model.specs,
                size,
                input=str(path),
                input_size=list(src.size),
                fps=src.fps,
                resize=resize,
                profile=model.profile,
            )
            try:
                with torch.no_grad():
                    rest = model.stream(
                        frames(),
                        queries=queries,
                        intrinsics=None if K_out is None else K_out[None],
                        on_window=progress,
                        num_frames=known_length,
                        resize=resize,
                        on_frames=writer.add,
                    )
            finally:
                progress.done()  # ends the progress line, also before an error message
            for head, outputs in rest.items():
                writer.add(head, outputs)
            writer.close()
            results = load_results(tmp, mmap=False)  # frame by frame: nothing stays mapped
            written = [
                "meta.json",
                *sorted({r["file"].split("/")[0] + "/" for r in results.meta["arrays"].values()}),
            ]
            align_track_depth(results)
            written += export_geometry(results, K_out, tmp, args, lambda: _resized(open_video(path), size))
            if args.preview:
                from ..viz.preview import render_previews

                frames_again = _resized(open_video(path), size)
                count = _num_frames(results)
                render_previews(
                    results, results.meta["arrays"], frames_again, tmp / "preview", results.fps, count
                )
                written.append("preview/")
    except FileExistsError:  # another run published OUT/NAME/ while this one was computing
        raise L4PError(_exists_message(out)) from None
    except OSError as exc:
        raise L4PError(
            f"cannot write outputs of {path} to {out}: {exc.strerror or exc}; free space or choose another --out"
        ) from None
    print(f"{path}: {_num_frames(results)} frames -> {out}/ ({', '.join(written)})")


def _num_frames(results) -> int:
    return max(
        (results.info(k)["shape"][0] for k in results if results.info(k)["layout"].startswith("T")), default=0
    )


def align_track_depth(results) -> None:
    """Put tracking/track_depth on depth/depth's scale: per frame, the median of depth / track_depth
    over the points visible there (nearest pixel), rewritten in place. A no-op without both."""
    if "depth/depth" not in results or "tracking/track_depth" not in results:
        return
    depth, tracks = results["depth/depth"], results["tracking/tracks"]
    visible = np.asarray(results["tracking/visibility"]) > 0.5
    path = results.folder / results.info("tracking/track_depth")["file"]
    track_depth = np.array(results["tracking/track_depth"])
    h, w = depth.shape[1:3]
    for t in range(track_depth.shape[0]):
        xy = np.asarray(tracks[t])
        ok = visible[t] & np.isfinite(xy).all(-1) & (track_depth[t] > 0)
        ok &= (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        if not ok.any():
            continue
        x, y = xy[ok, 0].astype(int), xy[ok, 1].astype(int)
        ratio = np.asarray(depth[t], dtype=np.float32)[y, x] / track_depth[t, ok]
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        if ratio.size:
            track_depth[t] *= np.median(ratio)
    results._cache.pop("tracking/track_depth", None)
    np.save(path, track_depth.astype(np.float32), allow_pickle=False)
    results.info("tracking/track_depth")["meaning"] = (
        "z-depth of the track point on the scale of depth/depth (per frame, the median depth / track depth "
        "ratio at the visible points); NaN before the query"
    )
    (results.folder / "meta.json").write_text(json.dumps(results.meta, indent=1))


def export_geometry(results, K_given, out: Path, args, frames) -> list[str]:
    """trajectory.tum (seconds), intrinsics.json and coloured per-frame PLYs (camera frame of that
    frame, output pixels subsampled every --ply-step pixels) from the results."""
    from ..data.video import default_intrinsics
    from ..geometry import save_intrinsics_json, save_ply, save_tum, unproject_depth

    written = []
    if "pose/poses" in results:
        save_tum(out / "trajectory.tum", torch.from_numpy(np.array(results["pose/poses"])), fps=results.fps)
        written.append("trajectory.tum")
    if "pose/intrinsics" in results:
        save_intrinsics_json(
            out / "intrinsics.json", torch.from_numpy(np.array(results["pose/intrinsics"])), results.size
        )
        written.append("intrinsics.json")
    if args.no_ply or "depth/depth" not in results:
        return written
    depth = results["depth/depth"]
    if K_given is not None:
        K = K_given.expand(depth.shape[0], 3, 3)
    elif "pose/intrinsics" in results:
        K = torch.from_numpy(np.array(results["pose/intrinsics"]))
    else:
        K = default_intrinsics(results.size, depth.shape[0])
    step = args.ply_step or max(1, math.ceil(max(results.size) / 320))
    (out / "points").mkdir()
    for t, frame in enumerate(frames()):
        if t >= depth.shape[0]:
            break
        d = torch.from_numpy(np.array(depth[t], dtype=np.float32))  # a writable copy of the memmap frame
        points = unproject_depth(d[None, None], K[t][None, None].double())[0, 0]
        colors = torch.from_numpy(np.ascontiguousarray(frame))
        save_ply(
            out / "points" / f"{t:06d}.ply",
            points[::step, ::step],
            colors=colors[::step, ::step],
            valid=(d > 0)[::step, ::step],
        )
    written.append(f"points/ ({depth.shape[0]} PLYs, every {step} px)")
    return written
