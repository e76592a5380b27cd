"""One self-contained 4D viewer per `l4p run` results folder: `build_viewer` writes viewer.html.

The page opens offline in any browser with WebGL and fetches nothing: the viewer's JavaScript
(web/viewer/src/viewer.js and the npm package three, bundled by scripts/build_viewer.sh into
static/viewer.bundle.js; three's MIT licence in static/THREE_LICENSE and in the page) is inlined in a
<script>, and the run's data is embedded as base64 blobs (<script id="l4p-blob-NAME">) behind a small
JSON header (<script id="l4p-header">). Blobs, little-endian, F = kept frames:

    jpegs, jpeg_offsets     the input frames, downscaled (longer side <= frame_side px) JPEGs, concatenated;
                            (F + 1,) uint32 byte offsets
    poses                   (F, 4, 4) float32 camera-to-world, row-major (identity without a pose head)
    intrinsics              (F, 4) float32 fx, fy, cx, cy in output pixels (+0.5 pixel centres; L4P's
                            default K without a pose head)
    point_positions         (P, 3) uint16 world positions quantised in the header's bounding box
                            (`quantize_positions`); frame f's points are rows point_offsets[f]:[f + 1]
    point_colors            (P, 3) uint8 RGB of the frame's pixel
    point_motion            (P,) uint8 motion probability x 255 (with a motion head)
    point_offsets           (F + 1,) uint32
    tracks_2d               (F, N, 2) float32 (x, y) output pixels, NaN where undefined
    tracks_visibility       (F, N) uint8 visibility probability x 255 (0 where undefined)
    tracks_3d               (F, N, 3) float32 world positions (with tracking/track_depth), NaN where undefined

World coordinates are the results' (poses: camera-to-world, world = the first camera; x right, y down,
z forward). Depth is relative, and the pose head's translations are in units of the first frame's median
depth (heads/pose/README.md), so depth (and track depth) is divided by the median depth of the first
frame: 1 world unit = the first frame's median depth, the units of the translations.

Size: the whole file stays within `budget_mb` (10^6 bytes per MB): the code and the cameras are fixed;
the frames take at most about half of the rest (downscaled, then every k-th frame only when they do not
fit); the points get what is left (every pixel of each kept frame when that fits, else the same number
of random pixels of each, drawn anew for every frame so that accumulated frames fill in).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path

import numpy as np
from einops import rearrange

from ..errors import InputError
from ..io import atomic_write
from ..results import load_results

DEFAULT_BUDGET_MB = 20.0
FRAME_SIDE = 320
"""Longer side in pixels of the embedded frames (never more than the output's)."""
MIN_FRAME_SIDE = 64
JPEG_QUALITY = 80
MIN_KEPT_FRAMES = 24
"""Fewest frames the viewer keeps (all of a shorter video): a budget that cannot hold them is refused."""
MAX_POINTS = 4_000_000
"""Most points embedded whatever the budget (the browser draws them all when accumulating)."""
FRAME_SHARE = 0.45
"""Part of the budget left after the code that the frames may take when there are points to show."""
POINT_RESERVE = 4096
"""Bytes kept for the header entries and blob tags of the points and the view, written after the rest."""
HEADER_RESERVE = 8192
"""Bytes kept for the JSON header's fixed part (its per-frame part is counted per frame)."""
POINT_OUTLIER_QUANTILE = 0.005
"""Points beyond these quantiles (per axis, widened by 10%) fall outside the bounding box and are dropped."""
ALL_FRUSTUMS_UP_TO = 120
"""Frustums of every frame are shown by default up to this many kept frames."""
VIEW_FOV = 50.0
"""Vertical field of view of the page's 3D view in degrees."""
FORMAT = "l4p-viewer/1"

_STATIC = "static"


def _static_text(name: str) -> str:
    try:
        return resources.files(__package__).joinpath(_STATIC, name).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise InputError(
            f"the l4p viewer's {_STATIC}/{name} is missing from {Path(__file__).parent}: {exc}; "
            "reinstall l4p or run scripts/build_viewer.sh"
        ) from None


def _b64_size(num_bytes: int) -> int:
    """Characters of `num_bytes` bytes in base64 (with padding)."""
    return 4 * math.ceil(num_bytes / 3)


# -- quantisation ----------------------------------------------------------------------------------


def quantize_positions(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(P, 3) positions inside the box [lo, hi] (3,) each -> (P, 3) uint16, 0 at lo and 65535 at hi.

    Positions outside the box are clipped to it. `dequantize_positions` inverts it to within half a
    step, (hi - lo) / 65535 / 2 per axis.
    """
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    extent = np.where(hi > lo, hi - lo, 1.0)
    q = np.rint((np.asarray(points, np.float64) - lo) / extent * 65535.0)
    return np.clip(q, 0, 65535).astype("<u2")


def dequantize_positions(q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(P, 3) uint16 of `quantize_positions` -> (P, 3) float32 positions (what the viewer computes)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return (lo + np.asarray(q, np.float64) / 65535.0 * (hi - lo)).astype(np.float32)


# -- inputs ----------------------------------------------------------------------------------------


def _open_results(folder: Path):
    if not (folder / "meta.json").is_file():
        where = "does not exist" if not folder.exists() else "has no meta.json"
        raise InputError(
            f"{folder} is not an l4p results folder ({where}); pass the folder `l4p run` wrote for one "
            "video, OUT/NAME/ (e.g. l4p-out/clip)"
        )
    return load_results(folder)


def _num_frames(results) -> int:
    return max(
        (results.info(k)["shape"][0] for k in results if results.info(k)["layout"].startswith("T")), default=0
    )


def _fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (h, w, 3) frame resized to size (H, W) (area interpolation when shrinking)."""
    import cv2

    frame = np.ascontiguousarray(frame)
    if frame.shape[:2] == tuple(size):
        return frame
    shrink = size[0] * size[1] < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, size[::-1], interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _video_frames(results, video: str | os.PathLike | None) -> Iterator[np.ndarray]:
    """The input video's frames, uint8 (h, w, 3), from `video` or the path meta.json records."""
    from ..data.video import open_video

    recorded = results.meta.get("input")
    path = Path(video) if video is not None else (Path(recorded) if recorded else None)
    if path is None or not path.exists():
        what = f"input video {path}" if path is not None else "the input video"
        raise InputError(
            f"{what} of the results {results.folder} was not found (moved or deleted?); pass its path with "
            "--video PATH (build_viewer(..., video=PATH)), or the frames with frames="
        )
    return iter(open_video(path))


def _jpeg(frame: np.ndarray, side: int, quality: int) -> bytes:
    """JPEG bytes of an RGB uint8 frame scaled so that its longer side is at most `side`."""
    import cv2

    h, w = frame.shape[:2]
    scale = min(1.0, side / max(h, w))
    small = _fit(frame, (max(1, round(h * scale)), max(1, round(w * scale))))
    ok, data = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise InputError(f"OpenCV could not encode a {small.shape} frame as JPEG")
    return data.tobytes()


def _depth_scale(results, first: int) -> float | None:
    """1 / the median depth of frame `first` (depth/depth, else tracking/track_depth); None without
    either (or without a positive value there)."""
    for key in ("depth/depth", "tracking/track_depth"):
        if key in results:
            values = np.asarray(results[key][first], dtype=np.float64)
            values = values[np.isfinite(values) & (values > 0)]
            if values.size:
                return 1.0 / float(np.median(values))
    return None


def _cameras(results, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, 4, 4) camera-to-world poses (identity without pose/poses) and (T, 3, 3) pixel K (L4P's
    default without pose/intrinsics), float64."""
    from ..data.video import default_intrinsics

    poses = np.tile(np.eye(4), (num_frames, 1, 1))
    if "pose/poses" in results:
        given = np.asarray(results["pose/poses"], dtype=np.float64)[:num_frames]
        ok = np.isfinite(given).all(axis=(1, 2))
        poses[: len(given)][ok] = given[ok]
    K = default_intrinsics(results.size, num_frames).double().numpy()
    if "pose/intrinsics" in results:
        given = np.asarray(results["pose/intrinsics"], dtype=np.float64)[:num_frames]
        ok = np.isfinite(given).all(axis=(1, 2)) & (given[:, 0, 0] > 0) & (given[:, 1, 1] > 0)
        K[: len(given)][ok] = given[ok]
    return poses, K


def _unproject(x: np.ndarray, y: np.ndarray, z: np.ndarray, K: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """World points (..., 3) of output-pixel positions x, y (continuous, +0.5 centres) at z-depth z."""
    cam = np.stack([(x - K[0, 2]) / K[0, 0] * z, (y - K[1, 2]) / K[1, 1] * z, z], axis=-1)
    return cam @ pose[:3, :3].T + pose[:3, 3]


def _pixel_sample(size: tuple[int, int], t: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices (P,) of `count` pixels of an (H, W) image in raster order: every pixel
    when count >= H * W, else a random subset seeded by t (no grid pattern, and accumulated frames fill
    in)."""
    h, w = size
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    grid = rearrange(np.stack([rows, cols]), "c h w -> (h w) c")
    if count < len(grid):
        grid = grid[np.sort(np.random.default_rng(t).choice(len(grid), count, replace=False))]
    return grid[:, 0], grid[:, 1]


# -- the plan: what fits into the budget ------------------------------------------------------------


def _plan(
    num_frames: int,
    size: tuple[int, int],
    sample: list[np.ndarray],
    avail: int,
    per_frame_fixed: int,
    has_points: bool,
    frame_side: int,
    quality: int,
    budget_mb: float,
    fixed: int,
    folder: Path,
) -> tuple[int, int, int]:
    """(frame side px, frame stride, base64 bytes per kept frame) such that the kept frames' JPEGs and per-frame data take at most
    FRAME_SHARE of `avail` bytes (all of it without points): the largest of frame_side, 3/4 and 1/2 of
    it at every frame, else half of it (or MIN_FRAME_SIDE) at every k-th frame, never fewer than
    MIN_KEPT_FRAMES; InputError when even that does not fit."""
    base = min(max(size), frame_side)
    smallest = min(base, MIN_FRAME_SIDE)
    sides = sorted({max(smallest, round(base * f)) for f in (1.0, 0.75, 0.5)})[::-1]

    def per_frame(side: int) -> int:  # base64 bytes of one kept frame: JPEG (+10% margin) and the rest
        jpeg = np.mean([len(_jpeg(_fit(f, size), side, quality)) for f in sample])
        return _b64_size(int(jpeg * 1.1)) + per_frame_fixed

    part = FRAME_SHARE if has_points else 0.95
    share = max(1, int(avail * part))
    for side in sides:
        cost = per_frame(side)
        if num_frames * cost <= share:
            return side, 1, cost
    least = min(num_frames, MIN_KEPT_FRAMES)
    for side in (sides[-1], smallest):
        cost = per_frame(side)
        stride = max(1, math.ceil(num_frames * cost / share))
        if math.ceil(num_frames / stride) >= least:
            return side, stride, cost
    need = (fixed + least * per_frame(smallest) / part) / 1e6
    raise InputError(
        f"a viewer budget of {budget_mb:g} MB is too small for {folder}: the viewer's code and {least} of "
        f"its {num_frames} frames at {smallest} px need about {need:.1f} MB; pass --budget-mb "
        f"{math.ceil(need)} or more (build_viewer(..., budget_mb=...))"
    )


# -- the page ---------------------------------------------------------------------------------------


def _blob_tag(name: str, array: np.ndarray) -> str:
    text = base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")
    return f'<script type="application/octet-stream" id="l4p-blob-{name}">{text}</script>\n'


def _dtype_name(array: np.ndarray) -> str:
    return {"u1": "uint8", "u2": "uint16", "u4": "uint32", "f4": "float32"}[array.dtype.str[1:]]


def _page(header: dict, blobs: dict[str, np.ndarray], bundle: str, licence: str, template: str) -> str:
    header = {
        **header,
        "blobs": {k: {"dtype": _dtype_name(v), "shape": list(v.shape)} for k, v in blobs.items()},
    }
    header_json = json.dumps(header, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    data = f'<script type="application/json" id="l4p-header">{header_json}</script>\n'
    data += "".join(_blob_tag(name, array) for name, array in blobs.items())
    notice = (
        "<!-- The viewer below bundles three.js (https://threejs.org), under this licence:\n"
        + licence.replace("--", "- -")
        + "\n-->"
    )
    title = f"l4p viewer: {header['name']}".replace("&", "&amp;").replace("<", "&lt;")
    return (
        template.replace("{{TITLE}}", title)
        .replace("<!--L4P:LICENSE-->", notice)
        .replace("<!--L4P:DATA-->", data)
        .replace("<!--L4P:SCRIPT-->", f"<script>{bundle}</script>")
    )


def _evenly(indices: np.ndarray, keep: float) -> np.ndarray:
    """About keep * len(indices) of `indices`, spread evenly (all of them for keep >= 1)."""
    count = int(len(indices) * keep)
    if keep >= 1.0 or count >= len(indices):
        return indices
    return indices[np.linspace(0, len(indices) - 1, count).round().astype(int)] if count else indices[:0]


def _round_list(values: Iterable[float], digits: int = 6) -> list[float]:
    return [round(float(v), digits) for v in values]


def build_viewer(
    results_folder: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    budget_mb: float = DEFAULT_BUDGET_MB,
    *,
    video: str | os.PathLike | None = None,
    frames: Iterable[np.ndarray] | None = None,
    frame_side: int = FRAME_SIDE,
    jpeg_quality: int = JPEG_QUALITY,
    name: str | None = None,
    say: Callable[[str], None] | None = None,
) -> Path:
    """Write the 4D viewer of an `l4p run` results folder to out_path (default RESULTS/viewer.html).

    results_folder: OUT/NAME/ of `l4p run` (meta.json + HEAD/OUTPUT.npy). The input frames come from
    `frames` (uint8 (h, w, 3) RGB, any size: resized to the outputs' (H, W)), else from the video file
    `video`, else from the path meta.json records. Uses what the run has: depth/depth for the points
    (without it, cameras and tracks only), pose/poses and pose/intrinsics for the cameras (identity and
    L4P's default K without them), motion/motion for the motion colouring, tracking/tracks, visibility
    and track_depth for the tracks (2D on the frame only without track_depth).
    budget_mb: the most the file may take, in 10^6 bytes (module docstring: how it is shared out).
    frame_side: longer side of the embedded frames in pixels; jpeg_quality: OpenCV JPEG quality.
    name: the title shown (default: the folder's name).
    The file is written atomically (temp file + rename). Raises InputError for a folder that is not a
    results folder, a missing input video and a budget too small to hold the frames. `say` gets a
    one-line summary. Returns the path written.
    """
    folder = Path(results_folder)
    results = _open_results(folder)
    out = Path(out_path) if out_path is not None else folder / "viewer.html"
    if not (isinstance(budget_mb, int | float) and math.isfinite(budget_mb) and budget_mb > 0):
        raise InputError(f"the viewer budget must be a positive number of MB, got {budget_mb!r}")
    if not 1 <= int(jpeg_quality) <= 100 or frame_side < 8:
        raise InputError(f"jpeg_quality must be 1..100 and frame_side >= 8, got {jpeg_quality}, {frame_side}")
    num_frames = _num_frames(results)
    if num_frames == 0:
        raise InputError(f"{folder} holds no per-frame outputs (meta.json lists none); rerun l4p run on it")
    size = results.size
    budget = int(budget_mb * 1e6)

    source = iter(frames) if frames is not None else _video_frames(results, video)
    sample = list(itertools.islice(source, min(num_frames, 8)))
    if not sample:
        raise InputError(f"no frame of the input video of {folder} could be read; pass --video PATH")
    source = itertools.chain(sample, source)

    depth = results["depth/depth"] if "depth/depth" in results else None
    motion = results["motion/motion"] if depth is not None and "motion/motion" in results else None
    has_tracks = "tracking/tracks" in results
    scale = _depth_scale(results, 0)
    units = (
        "1 unit = the median depth of the first frame (the pose head's translation unit)"
        if scale is not None
        else "the pose head's units (about the median depth of the first frame)"
    )
    scale = 1.0 if scale is None else scale
    poses_all, K_all = _cameras(results, num_frames)

    # fixed bytes (code, licence, header) and per kept frame (cameras, offsets, tracks, header entries)
    bundle, licence, template = (
        _static_text(n) for n in ("viewer.bundle.js", "THREE_LICENSE", "viewer_template.html")
    )
    if "</script" in bundle.lower():
        raise InputError(
            "static/viewer.bundle.js contains '</script'; rebuild it with scripts/build_viewer.sh"
        )
    fixed = len(bundle) + 2 * len(licence) + len(template) + HEADER_RESERVE + 8 * 128
    avail = max(1, budget - fixed)  # none left: `_plan` refuses the budget, saying what it takes
    num_tracks = 0
    if has_tracks:
        per_track = 8 + 1 + (12 if "tracking/track_depth" in results else 0)
        cap = int(0.1 * budget / (num_frames * per_track * 4 / 3))
        num_tracks = min(results["tracking/tracks"].shape[1], cap)
        per_track_frame = _b64_size(num_tracks * per_track)
    else:
        per_track_frame = 0
    per_frame_fixed = _b64_size(64 + 16 + 8) + per_track_frame + 8
    side, stride, frame_cost = _plan(
        num_frames,
        size,
        sample,
        avail,
        per_frame_fixed,
        depth is not None,
        frame_side,
        jpeg_quality,
        budget_mb,
        fixed,
        folder,
    )
    kept_planned = math.ceil(num_frames / stride)
    point_bytes = avail - kept_planned * frame_cost
    bytes_per_point = 6 + 3 + (1 if motion is not None else 0)
    if depth is not None:
        total_points = max(0, min(MAX_POINTS, int(point_bytes * 3 / 4 / bytes_per_point)))
        per_frame_points = max(1, total_points // kept_planned)
    else:
        per_frame_points = 0

    # one pass over the video: JPEGs and points of the kept frames
    jpegs: list[bytes] = []
    kept: list[int] = []
    cloud: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    for t, frame in enumerate(source):
        if t >= num_frames:
            break
        if t % stride:
            continue
        frame = _fit(frame, size)
        kept.append(t)
        jpegs.append(_jpeg(frame, side, jpeg_quality))
        if depth is not None:
            rows, cols = _pixel_sample(size, t, per_frame_points)
            z = np.asarray(depth[t], dtype=np.float64)[rows, cols] * scale
            ok = np.isfinite(z) & (z > 0)
            rows, cols, z = rows[ok], cols[ok], z[ok]
            xyz = _unproject(cols + 0.5, rows + 0.5, z, K_all[t], poses_all[t])
            moving = np.asarray(motion[t])[rows, cols].astype(np.uint8) if motion is not None else None
            cloud.append((xyz.astype(np.float32), frame[rows, cols], moving))
    if not kept:
        raise InputError(f"no frame of the input video of {folder} could be read; pass --video PATH")
    kept_idx = np.asarray(kept)
    num_kept = len(kept)

    header = {
        "format": FORMAT,
        "name": name or folder.resolve().name,
        "input": str(results.meta.get("input", "")),
        "heads": list(results.meta.get("heads", [])),
        "size": list(size),
        "numFrames": num_frames,
        "frames": kept,
        "stride": stride,
        "fps": float(results.fps or 10.0) / stride,
        "image": {},
        "units": units,
        "budgetBytes": budget,
    }
    blobs: dict[str, np.ndarray] = {}
    offsets = np.zeros(num_kept + 1, np.int64)
    offsets[1:] = np.cumsum([len(j) for j in jpegs])
    blobs["jpegs"] = np.frombuffer(b"".join(jpegs), np.uint8)
    blobs["jpeg_offsets"] = offsets.astype("<u4")
    ih, iw = _jpeg_size(size, side)
    header["image"] = {"width": iw, "height": ih, "quality": int(jpeg_quality)}
    poses = poses_all[kept_idx]
    K = K_all[kept_idx]
    blobs["poses"] = poses.astype("<f4")
    blobs["intrinsics"] = np.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], -1).astype("<f4")

    # tracks
    if has_tracks and num_tracks > 0:
        total = results["tracking/tracks"].shape[1]
        pick = np.unique(np.linspace(0, total - 1, num_tracks).round().astype(int))
        xy = np.asarray(results["tracking/tracks"][kept_idx][:, pick], dtype=np.float64)
        vis = np.ones(xy.shape[:2])
        if "tracking/visibility" in results:
            vis = np.asarray(results["tracking/visibility"][kept_idx][:, pick], dtype=np.float64)
        blobs["tracks_2d"] = xy.astype("<f4")
        blobs["tracks_visibility"] = np.rint(np.nan_to_num(vis, nan=0.0).clip(0, 1) * 255).astype(np.uint8)
        if "tracking/track_depth" in results:
            z = np.asarray(results["tracking/track_depth"][kept_idx][:, pick], dtype=np.float64) * scale
            world = np.stack(
                [_unproject(xy[f, :, 0], xy[f, :, 1], z[f], K[f], poses[f]) for f in range(num_kept)]
            )
            world[~(np.isfinite(z) & (z > 0) & np.isfinite(xy).all(-1))] = np.nan
            blobs["tracks_3d"] = world.astype("<f4")
        header["tracks"] = {"count": int(len(pick)), "of": int(total), "has3d": "tracks_3d" in blobs}

    # points: robust bounding box, then trimmed to the bytes left
    view_points = np.zeros((0, 3))
    if "tracks_3d" in blobs:
        view_points = blobs["tracks_3d"].reshape(-1, 3)
        view_points = view_points[np.isfinite(view_points).all(-1)]
    if depth is not None:
        xyz = np.concatenate([c[0] for c in cloud])
        lo, hi = np.zeros(3), np.ones(3)
        if len(xyz):
            qlo = np.quantile(xyz, POINT_OUTLIER_QUANTILE, axis=0)
            qhi = np.quantile(xyz, 1 - POINT_OUTLIER_QUANTILE, axis=0)
            margin = 0.1 * (qhi - qlo) + 1e-6
            lo, hi = qlo - margin, qhi + margin
        header["points"] = {"bboxMin": _round_list(lo), "bboxMax": _round_list(hi)}
        room = budget - len(_page(header, blobs, bundle, licence, template)) - POINT_RESERVE
        inside = [((c[0] >= lo) & (c[0] <= hi)).all(-1) for c in cloud]
        count = sum(int(k.sum()) for k in inside)
        keep = min(1.0, max(0.0, room / max(1.0, count * bytes_per_point * 4 / 3)))
        picks = [_evenly(np.flatnonzero(k), keep) for k in inside]
        all_points = np.concatenate([c[0][i] for c, i in zip(cloud, picks)])
        blobs["point_positions"] = quantize_positions(all_points, lo, hi)
        blobs["point_colors"] = np.concatenate([c[1][i] for c, i in zip(cloud, picks)]).astype(np.uint8)
        if motion is not None:
            blobs["point_motion"] = np.concatenate([c[2][i] for c, i in zip(cloud, picks)]).astype(np.uint8)
        blobs["point_offsets"] = np.concatenate([[0], np.cumsum([len(i) for i in picks])]).astype("<u4")
        fx = float(np.median(K[:, 0, 0]))
        median_z = float(np.median(np.asarray(depth[kept[0]], np.float64)[::4, ::4])) * scale
        spacing = math.sqrt(size[0] * size[1] * num_kept / max(1, len(all_points)))  # pixels between points
        header["points"].update(
            count=int(len(all_points)),
            perFrame=round(len(all_points) / num_kept),
            spacing=round(spacing, 3),
            pointSize=round(1.5 * spacing * median_z / fx, 6),  # world footprint at the median depth
        )
        if len(all_points):
            view_points = all_points
    header.update(_default_view(view_points, poses))
    header["defaults"] = {
        "points": True,
        "cameras": True,
        "frustums": num_kept <= ALL_FRUSTUMS_UP_TO,
        "tracks": True,
        "motion": False,
        "accumulate": False,
    }
    page = _page(header, blobs, bundle, licence, template).encode("utf-8")
    if len(page) > budget:  # the estimates above keep a margin; this would be a bug
        raise InputError(
            f"the viewer of {folder} came out at {len(page) / 1e6:.2f} MB, over its budget of {budget_mb:g} MB; "
            "pass a larger --budget-mb"
        )

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(page)

    atomic_write(out, write)
    if say is not None:
        parts = [f"{num_kept} of {num_frames} frames as {iw}x{ih} JPEGs"]
        if "points" in header:
            parts.append(f"{header['points']['count']:,} points (~{header['points']['perFrame']:,} a frame)")
        if "tracks" in header:
            parts.append(f"{header['tracks']['count']} tracks")
        say(f"{out}: {len(page) / 1e6:.1f} MB of {budget_mb:g} ({', '.join(parts)})")
    return out


def _jpeg_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(h, w) of a frame of `size` (H, W) shrunk to a longer side of at most `side` (as `_jpeg`)."""
    h, w = size
    scale = min(1.0, side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _default_view(points: np.ndarray, poses: np.ndarray) -> dict:
    """The page's first view, fitted to the scene: looking at the centre of the box holding 90% of the
    points (5% to 95% per axis) from behind, above and to the right of the first camera, far enough for
    that box (and the cameras) to fill the view's height. Without points the target is 1 unit in front of the first
    camera (about the first frame's median depth in the pose head's units). Also the frustum size and
    the near and far planes."""
    centres = poses[:, :3, 3]
    first = poses[0]
    forward, down, right = first[:3, 2], first[:3, 1], first[:3, 0]
    if len(points):
        lo, hi = np.quantile(points, [0.05, 0.95], axis=0)
        target, reach = (lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2)
    else:
        target, reach = first[:3, 3] + forward, 0.0
    radius = float(max(reach, np.linalg.norm(centres - target, axis=1).max(), 0.5))
    direction = -forward - 0.45 * down + 0.35 * right
    distance = 0.9 * radius / math.sin(math.radians(VIEW_FOV / 2))  # the box's sphere is a loose bound
    eye = target + direction / np.linalg.norm(direction) * distance
    return {
        "view": {
            "fov": VIEW_FOV,
            "eye": _round_list(eye),
            "target": _round_list(target),
            "near": round(radius * 0.002, 8),
            "far": round(radius * 200, 3),
        },
        "cameras": {"size": 0.15},
    }
