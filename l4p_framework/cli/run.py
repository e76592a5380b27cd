"""`l4p run INPUT`: the registry's trained heads on a video file or image folder, streamed in windows.

Each window's outputs are written as soon as they are final (`l4p_framework.results`: one .npy per
output, meta.json; `load_results` reads them back), then exports that need the whole video: track
depth on the depth's scale, trajectory.tum, intrinsics.json, coloured PLYs and previews (the video is
decoded a second time for their colours). README "What l4p run writes" is the convention sheet.

Each video's outputs go to OUT/NAME/ (NAME: the video file's stem, or the image folder's name), built
in a hidden OUT/.NAME.partial-PID-XXXX/ and renamed into place only once every file is written: a full
disk or Ctrl-C removes the hidden folder and leaves an earlier OUT/NAME/ as it was; a SIGKILL can leave
only the hidden folder, which the next run into OUT deletes (see `l4p_framework.io.atomic_folder`).

With more than one job (several inputs, a folder of videos, a glob, an @list, or under torchrun) `l4p run`
is a batch (`l4p_framework.batch_run`): OUT/manifest.jsonl records every attempt, a re-run skips the
finished videos, one bad video is recorded as failed without stopping the others (exit code 1 if any
failed), `--workers N` runs N processes, and `torchrun --nproc-per-node G l4p run ...` shares the jobs
out across ranks. One job keeps the single-video behaviour: errors exit 2, no manifest.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from .. import batch_run
from ..batch_run import VIDEO_SUFFIXES, Job
from ..errors import InputError, L4PError
from ..io import atomic_folder
from ..profiles import PROFILES, default_resize
from ..results import ResultsWriter, load_results
from .common import Progress, add_model_arguments, load_model, parse_heads

__all__ = ["VIDEO_SUFFIXES", "run_command", "run_one"]
DEFAULT_MAX_SIDE = 1920
"""`l4p run` scales larger videos down to this longer side unless told otherwise (--max-side 0)."""


def register(sub) -> dict:
    p = sub.add_parser("run", help="run heads on video files, image folders or folders of videos")
    p.add_argument(
        "input",
        nargs="+",
        help="video file, folder of images (one video), folder of videos (one job each), a quoted glob "
        "pattern ('clips/*.mp4') or @list.txt (one path per line, # comments)",
    )
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
    p.add_argument(
        "--viewer",
        action="store_true",
        help="also write viewer.html: the run in 4D in one offline HTML file (points, cameras, tracks, "
        "frames; within 20 MB; `l4p view` rebuilds it with another --budget-mb)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="batch: run N videos at a time in N processes, each loading the model once (default 1)",
    )
    return {"run": run_command}


def _check_outputs(jobs: list[Job], out_root: Path, overwrite: bool, batch: bool = False) -> None:
    """Refuse an input inside its own OUT/NAME/ (--overwrite would delete it) and, for a single video,
    an existing OUT/NAME/ unless --overwrite (a batch checks that per job: `_occupied`)."""
    for job in jobs:
        video, out = job.input, out_root / job.name
        if out.resolve() == video.resolve() or out.resolve() in video.resolve().parents:
            raise InputError(f"input {video} lies inside its output folder {out}; choose another --out")
        if not batch and _occupied(out) and not overwrite:
            raise L4PError(_exists_message(out))


def _occupied(out: Path) -> bool:
    try:
        return out.is_symlink() or out.is_file() or (out.is_dir() and any(out.iterdir()))
    except OSError as exc:
        raise L4PError(f"cannot read output folder {out}: {exc.strerror or exc}") from None


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
    if args.workers < 1:
        raise InputError(f"--workers needs at least 1, got {args.workers}")
    out_root = Path(args.out)
    jobs = batch_run.list_jobs(args.input)
    rank, world, local_rank = batch_run.dist_env()
    batch = len(jobs) > 1 or world > 1
    _check_outputs(jobs, out_root, args.overwrite, batch=batch)
    if not batch:
        model = _load(args)
        _check_writable(out_root)
        run_one(model, jobs[0].input, out_root / jobs[0].name, args)
        return 0
    return _run_batch(jobs, out_root, args, rank, world, local_rank)


def _load(args, say=print, device: str = "cpu"):
    model, _ = load_model(args.registry, parse_heads(args.heads), say=say, profile=args.profile)
    return model.to(device) if device != "cpu" else model


def _check_writable(out_root: Path) -> None:
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".l4p-write-test-", dir=out_root)  # unique: runs may share OUT
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise L4PError(f"cannot write to output folder {out_root}: {exc.strerror or exc}") from None


def _run_batch(jobs: list[Job], out_root: Path, args, rank: int, world: int, local_rank: int) -> int:
    """Jobs of this rank not yet done, one at a time or in --workers processes; 1 if any failed."""
    import torch.distributed as dist

    started_dist = False
    if world > 1 and dist.is_available() and not dist.is_initialized():
        from datetime import timedelta

        dist.init_process_group("gloo", timeout=timedelta(days=7))  # ranks wait for the slowest at the end
        started_dist = True
    try:
        mine = batch_run.shard(jobs, rank, world)
        _check_writable(out_root)
        done = set() if args.overwrite else batch_run.done_jobs(mine, out_root)
        todo = [job for job in mine if job.name not in done]
        prefix = f"[rank {rank}] " if world > 1 else ""
        manifest = batch_run.manifest_path(out_root, rank if world > 1 else None)
        if done:
            print(
                f"{prefix}skipping {len(done)} of {len(mine)} videos already done in {out_root}",
                file=sys.stderr,
            )
        tally = batch_run.Tally(len(todo), prefix)
        device = f"cuda:{local_rank}" if world > 1 and torch.cuda.is_available() else "cpu"
        if todo and args.workers == 1:
            if device != "cpu":
                torch.cuda.set_device(local_rank)
            model = _load(args, device=device)
            for job in todo:
                tally.add(_attempt(model, job, out_root, args, manifest, progress=True))
        elif todo:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
            threads = batch_run.worker_threads(args.workers, local_world)
            initargs = (args, out_root, manifest, device, threads)
            batch_run.run_pool(todo, args.workers, _worker_init, initargs, _worker_task, tally.add)
        if started_dist:
            dist.barrier()
            if rank == 0:
                batch_run.merge_parts(out_root)
            dist.barrier()  # no rank exits (torchrun stops the rest on a nonzero exit) before the merge
    finally:
        if started_dist:
            dist.destroy_process_group()
    return 1 if tally.failed else 0


def _attempt(model, job: Job, out_root: Path, args, manifest: Path, progress: bool) -> dict:
    """Run one job of a batch and append its manifest record: an error fails this job, not the batch."""
    start = time.monotonic()
    out = out_root / job.name
    try:
        if not args.overwrite and _occupied(out):
            raise L4PError(_exists_message(out))
        run_one(model, job.input, out, args, progress=progress)
        status, error = "done", None
    except L4PError as exc:
        status, error = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - a batch records any failure of one video and goes on
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    entry = batch_run.record(job, out_root, status, time.monotonic() - start, error)
    batch_run.append_record(manifest, entry)
    return entry


_WORKER: dict = {}


def _worker_init(args, out_root: Path, manifest: Path, device: str, threads: int) -> None:
    """A --workers process: torch threads, the model loaded once (an error is kept for every task)."""
    torch.set_num_threads(threads)
    _WORKER.update(args=args, out_root=out_root, manifest=manifest)
    try:
        if device != "cpu":
            torch.cuda.set_device(device)
        _WORKER["model"] = _load(args, say=lambda _message: None, device=device)
    except L4PError as exc:
        _WORKER["fatal"] = str(exc)


def _worker_task(job: Job) -> dict:
    if "fatal" in _WORKER:
        return {"fatal": _WORKER["fatal"]}
    w = _WORKER
    return _attempt(w["model"], job, w["out_root"], w["args"], w["manifest"], progress=False)


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


def run_one(model, path: Path, out: Path, args, progress: bool = True) -> None:
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
    progress = Progress(f"{path.name}", None) if progress else _NoProgress()
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
            if getattr(args, "viewer", False):
                from ..viz.viewer import build_viewer

                build_viewer(tmp, tmp / "viewer.html", frames=_resized(open_video(path), size), name=out.name)
                written.append("viewer.html")
    except FileExistsError:  # another run published OUT/NAME/ while this one was computing
        raise L4PError(_exists_message(out)) from None
    except OSError as exc:
        raise L4PError(
            f"cannot write outputs of {path} to {out}: {exc.strerror or exc}; free space or choose another --out"
        ) from None
    print(f"{path}: {_num_frames(results)} frames -> {out}/ ({', '.join(written)})")


class _NoProgress:
    def __call__(self, window) -> None:
        pass

    def done(self) -> None:
        pass


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
