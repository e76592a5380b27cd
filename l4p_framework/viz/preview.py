"""Previews a person can read of a run's results: one MP4 and one contact-sheet PNG per head.

`render_previews` takes the run's outputs as time-first numpy arrays (np.memmap is fine: dense
maps are read one frame at a time) plus, per output, what it is (`info`: kind, values, layout,
meaning), and the input video's frames in one pass. For every head with something to show it
writes

- ``<head>.mp4``: every frame, panels side by side [input | each visualised output], each
  `panel_width` px wide with a caption bar above it;
- ``<head>.png``: a contact sheet of `sheet_frames` frames spread evenly over the whole video,
  one row per picked frame (its index in the row's title), the same panels as columns; camera
  trajectories and intrinsics (as text) below it. A head with only poses gets just the PNG.

How an output is drawn depends only on its kind, values and channels, so a third-party head's
outputs get a preview too:

===============================  ===========================================================
probability map (values)         red overlay on the frame where p > 0.5 (`mask_overlay`)
1-channel real map               turbo colour map of 1 / x (x >= 0, "inverse") or of x, with
                                 one robust range for the whole video (no flicker)
flow (kind "flow", 2 channels)   flow colour wheel, one max magnitude for the whole video;
                                 an all-NaN frame (frame 0) is grey, captioned "undefined"
3-channel real map               normals colours, RGB = (n + 1) / 2
other channel counts             the first channel, as a 1-channel map
points (T, N, 2)                 tracks on the frame with trails; hidden points hollow (with a
                                 sibling "<head>/visibility"), undefined (NaN) ones not drawn
poses (T, 4, 4) / (T, 3, 4)      `trajectory_plot` in the PNG only
intrinsics (T, 3, 3)             fx, fy, cx, cy of frame 0 as text in the PNG
queries, other                   not drawn
===============================  ===========================================================
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange
from PIL import Image, ImageDraw

from ..data.video import VideoWriter
from ..errors import InputError
from .colormaps import apply_colormap
from .flow_wheel import flow_to_color
from .overlays import mask_overlay, normals_to_color, trajectory_plot
from .sheet import (
    PANEL_GAP,
    caption_font,
    caption_height,
    even_picks,
    panel_row,
    panel_size,
    resize_image,
    save_png,
    stack_rows,
    text_block,
    titled_row,
)
from .tracks import track_colors

DEFAULT_FPS = 10.0
MIN_PANEL_WIDTH = 320
RANGE_SAMPLES = 8  # frames sampled up front to fix a colour range for the whole video
TRAIL = 8  # frames of track history drawn behind each point
UNDEFINED_GREY = (96, 96, 96)


# ----------------------------------------------------------------------------------------------
# Reading


def _frame_of(arr: np.ndarray, t: int) -> np.ndarray:
    """Frame t of a time-first array as float64 (reads only that frame of a memmap)."""
    return np.asarray(arr[t], dtype=np.float64)


def _is_probability(values: str) -> bool:
    """values "probability" (p in [0, 1], or uint8 p * 255) or "probability255" (uint8 p * 255)."""
    return values in ("probability", "probability255")


def _probability(arr: np.ndarray, t: int) -> np.ndarray:
    """Frame t of a probability array as p in [0, 1]: uint8 storage means p * 255; NaN stays NaN."""
    p = _frame_of(arr, t)
    return p / 255.0 if arr.dtype == np.uint8 else p


def _first_channel(x: np.ndarray) -> np.ndarray:
    """(H, W) from (H, W) or (H, W, C) (channel 0)."""
    return x if x.ndim == 2 else x[..., 0]


def _sample(arr: np.ndarray, num_frames: int, max_side: int = 256) -> list[np.ndarray]:
    """A few evenly spaced frames, spatially strided to at most ~max_side px, for colour ranges."""
    h, w = arr.shape[1:3]
    step = max(1, max(h, w) // max_side)
    return [
        np.asarray(arr[t, ::step, ::step], dtype=np.float64) for t in even_picks(num_frames, RANGE_SAMPLES)
    ]


def _robust_range(values: np.ndarray, percentiles: tuple[float, float] = (2.0, 98.0)) -> tuple[float, float]:
    """(lo, hi) percentiles of the finite values; (0, 1) when there are none."""
    v = values[np.isfinite(values)]
    if not v.size:
        return 0.0, 1.0
    lo, hi = np.percentile(v, percentiles)
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------------
# Panels: each draws one output for frame t at panel size, given the input frame at panel size.


@dataclass
class _Panel:
    """One column of a preview. `captions` lists every caption it may show (to size the bars)."""

    caption: str

    @property
    def captions(self) -> list[str]:
        return [self.caption]

    def draw(self, t: int, frame: np.ndarray) -> tuple[str, np.ndarray]:  # pragma: no cover - abstract
        """(caption, (ph, pw, 3) uint8) for frame t; `frame` is the input frame at panel size."""
        raise NotImplementedError


@dataclass
class _OverlayPanel(_Panel):
    """Probability map (T, H, W[, C]) -> red tint where p > 0.5 (channel 0)."""

    arr: np.ndarray = field(repr=False, default=None)

    def draw(self, t, frame):
        p = _first_channel(_probability(self.arr, t))
        ph, pw = frame.shape[:2]
        mask = Image.fromarray(np.nan_to_num(p, nan=0.0).astype(np.float32), mode="F")
        mask = np.asarray(mask.resize((pw, ph), Image.Resampling.NEAREST)) > 0.5
        return self.caption, mask_overlay(frame, mask)


@dataclass
class _ScalarPanel(_Panel):
    """1-channel real map -> turbo colours over one fixed range [lo, hi] (of 1 / x when inverse)."""

    arr: np.ndarray = field(repr=False, default=None)
    inverse: bool = True
    lo: float = 0.0
    hi: float = 1.0

    def draw(self, t, frame):
        x = _first_channel(_frame_of(self.arr, t))
        if self.inverse:
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.where(np.isfinite(x) & (x > 0), 1.0 / x, np.nan)  # 0 / NaN: invalid, black
        rgb = apply_colormap(x, vmin=self.lo, vmax=self.hi, cmap="turbo")
        return self.caption, resize_image(rgb, frame.shape[:2])


@dataclass
class _FlowPanel(_Panel):
    """Flow (T, H, W, 2) pixels -> colour wheel with one max magnitude; all-NaN frames grey."""

    arr: np.ndarray = field(repr=False, default=None)
    max_mag: float = 1.0

    @property
    def undefined_caption(self) -> str:
        return f"{self.caption}: undefined at this frame"

    @property
    def captions(self):
        return [self.caption, self.undefined_caption]

    def draw(self, t, frame):
        f = _frame_of(self.arr, t)
        if not np.isfinite(f).any():
            grey = np.empty_like(frame)
            grey[:] = np.asarray(UNDEFINED_GREY, dtype=np.uint8)
            return self.undefined_caption, grey
        rgb = flow_to_color(rearrange(f, "h w c -> c h w"), self.max_mag)
        return self.caption, resize_image(rgb, frame.shape[:2])


@dataclass
class _NormalsPanel(_Panel):
    """3-channel real map (T, H, W, 3) -> RGB = (n + 1) / 2 (`normals_to_color`)."""

    arr: np.ndarray = field(repr=False, default=None)

    def draw(self, t, frame):
        rgb = normals_to_color(rearrange(_frame_of(self.arr, t), "h w c -> c h w"))
        return self.caption, resize_image(rgb, frame.shape[:2])


@dataclass
class _TracksPanel(_Panel):
    """Tracks (T, N, 2) input pixels drawn on the frame at panel scale.

    Visible points (p > 0.5): filled discs with a trail over the last `TRAIL` frames (segments
    whose ends are both visible); hidden points: hollow circles; NaN positions or visibility
    (frames before a point's query): not drawn.
    """

    tracks: np.ndarray = field(repr=False, default=None)  # (T, N, 2) input pixels
    visible: np.ndarray = field(repr=False, default=None)  # (T, N) bool
    defined: np.ndarray = field(repr=False, default=None)  # (T, N) bool
    colors: np.ndarray = field(repr=False, default=None)  # (N, 3) uint8
    scale: tuple[float, float] = (1.0, 1.0)  # panel px per input px, (x, y)

    def draw(self, t, frame):
        img = Image.fromarray(frame)
        draw = ImageDraw.Draw(img)
        pts = self.tracks * np.asarray(self.scale) - 0.5  # +0.5 pixel-centre convention -> PIL's
        shown = self.visible & self.defined
        r = max(3, min(frame.shape[:2]) // 80)
        for i, color in enumerate(self.colors):
            c = tuple(int(v) for v in color)
            for s in range(max(0, t - TRAIL), t):
                if shown[s, i] and shown[s + 1, i]:
                    draw.line([tuple(pts[s, i]), tuple(pts[s + 1, i])], fill=c, width=2)
        for i, color in enumerate(self.colors):
            if not self.defined[t, i]:
                continue
            c = tuple(int(v) for v in color)
            x, y = pts[t, i]
            box = [x - r, y - r, x + r, y + r]
            if self.visible[t, i]:
                draw.ellipse(box, fill=c, outline=(0, 0, 0))
            else:
                draw.ellipse(box, outline=c, width=2)
        return self.caption, np.asarray(img).copy()


# ----------------------------------------------------------------------------------------------
# Choosing how to draw each output


def _is_dense(arr: np.ndarray, kind: str) -> bool:
    return kind in ("map", "flow") and arr.ndim in (3, 4)


def _dense_panel(key: str, arr: np.ndarray, info: Mapping[str, Any], num_frames: int) -> _Panel:
    """The panel for a dense (T, H, W) / (T, H, W, C) output, by kind, values and channels."""
    name = key.split("/", 1)[1]
    kind, values = info.get("kind"), info.get("values", "real")
    channels = 1 if arr.ndim == 3 else arr.shape[3]
    if _is_probability(values):
        return _OverlayPanel(f"{name} p>0.5 overlay", arr=arr)
    samples = _sample(arr, num_frames)
    if kind == "flow" and channels == 2:
        mags = np.concatenate([np.sqrt((s**2).sum(-1)).ravel() for s in samples])
        finite = mags[np.isfinite(mags)]
        max_mag = float(np.percentile(finite, 99)) if finite.size else 0.0
        max_mag = max_mag if max_mag > 1e-6 else 1.0
        return _FlowPanel(f"{name} (colour wheel, {max_mag:.3g} px = full colour)", arr=arr, max_mag=max_mag)
    if channels == 3:
        return _NormalsPanel(name, arr=arr)
    vals = np.concatenate([_first_channel(s).ravel() for s in samples])
    finite = vals[np.isfinite(vals)]
    inverse = bool(finite.size) and bool((finite >= 0).all())
    label = name if channels == 1 else f"{name} channel 0"
    if inverse:
        positive = finite[finite > 0]
        lo, hi = _robust_range(1.0 / positive) if positive.size else (0.0, 1.0)
        return _ScalarPanel(f"{label} (inverse, turbo)", arr=arr, inverse=True, lo=lo, hi=hi)
    lo, hi = _robust_range(finite)
    return _ScalarPanel(f"{label} (turbo)", arr=arr, inverse=False, lo=lo, hi=hi)


def _tracks_panel(
    key: str, arrays: Mapping[str, np.ndarray], info: Mapping[str, Mapping[str, Any]], frame_size, panel
) -> _Panel:
    """Tracks (T, N, 2) with the head's "visibility" (T, N) probabilities when there is one."""
    head, name = key.split("/", 1)
    tracks = np.asarray(arrays[key], dtype=np.float64)
    defined = np.isfinite(tracks).all(-1)
    vis_key = f"{head}/visibility"
    if vis_key in arrays and np.shape(arrays[vis_key]) == tracks.shape[:2]:
        vis = arrays[vis_key]
        p = np.stack([_probability(vis, t) for t in range(tracks.shape[0])])
        defined &= np.isfinite(p)
        visible = np.nan_to_num(p, nan=0.0) > 0.5
    else:
        visible = np.ones(defined.shape, dtype=bool)
    h, w = frame_size
    colors = track_colors(
        rearrange(tracks, "t n c -> n t c"), rearrange(visible & defined, "t n -> n t"), (h, w)
    )
    scale = (panel[1] / w, panel[0] / h)
    return _TracksPanel(name, tracks=tracks, visible=visible, defined=defined, colors=colors, scale=scale)


def _is_poses(arr: np.ndarray, kind: str) -> bool:
    return kind == "other" and arr.ndim == 3 and arr.shape[1:] in ((4, 4), (3, 4))


def _pose_figures(key: str, arr: np.ndarray, width: int) -> list[np.ndarray]:
    """A captioned trajectory plot of camera-to-world poses (T, 4, 4); a note if none are finite."""
    poses = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(poses).all(axis=(1, 2))
    caption = f"{key}: camera path from above (x-z) and from the side (z-y); ring = start, disc = end"
    if not finite.any():
        return [text_block([f"{key}: no finite camera pose; nothing to plot"], width)]
    plot = trajectory_plot(poses[finite], size=(width // 2, width))
    return [panel_row([(caption, plot)])]


def _intrinsics_note(key: str, arr: np.ndarray) -> str:
    """'key at frame 0: fx = ..., fy = ..., cx = ..., cy = ... px' from (T, 3, 3) pixel K."""
    K = np.asarray(arr[0], dtype=np.float64)
    return (
        f"{key} at frame 0: fx = {K[0, 0]:.1f}, fy = {K[1, 1]:.1f}, cx = {K[0, 2]:.1f}, cy = {K[1, 2]:.1f} px"
    )


@dataclass
class _HeadPreview:
    """What one head shows: per-frame panels (MP4 + sheet rows) and still figures (sheet only)."""

    head: str
    panels: list[_Panel] = field(default_factory=list)
    figures: list[np.ndarray] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: list[tuple[int, np.ndarray]] = field(default_factory=list)  # picked frames' rows


def _plan(
    arrays: Mapping[str, np.ndarray],
    info: Mapping[str, Mapping[str, Any]],
    num_frames: int,
    frame_size: tuple[int, int],
    panel: tuple[int, int],
) -> list[_HeadPreview]:
    """One `_HeadPreview` per head (in the order of `arrays`) that has something to show."""
    heads: dict[str, _HeadPreview] = {}
    for key, arr in arrays.items():
        if "/" not in key:
            raise InputError(f"preview array key {key!r} must be 'head/output'; name it e.g. 'depth/depth'")
        head = key.split("/", 1)[0]
        if not re.fullmatch(r"[\w.-]+", head):
            raise InputError(
                f"head name {head!r} of {key!r} cannot be a file name; use letters, digits, _ . -"
            )
        meta = info.get(key)
        if meta is None or "kind" not in meta:
            raise InputError(f"no info['{key}']['kind'] for preview array {key!r}; give its kind and values")
        kind = meta["kind"]
        preview = heads.setdefault(head, _HeadPreview(head))
        drawn = _is_dense(arr, kind) or kind == "points" or _is_poses(arr, kind) or kind == "intrinsics"
        if drawn and (arr.ndim == 0 or arr.shape[0] != num_frames):
            raise InputError(
                f"preview array {key!r} has shape {tuple(arr.shape)}, expected {num_frames} frames first "
                f"(layout {meta.get('layout', '?')}); pass num_frames = the results' T"
            )
        if _is_dense(arr, kind):
            preview.panels.append(_dense_panel(key, arr, meta, num_frames))
        elif kind == "points" and arr.ndim == 3 and arr.shape[2] == 2:
            preview.panels.append(_tracks_panel(key, arrays, info, frame_size, panel))
        elif _is_poses(arr, kind):
            preview.figures += _pose_figures(key, arr, max(2 * MIN_PANEL_WIDTH, panel[1]))
        elif kind == "intrinsics" and arr.ndim == 3 and arr.shape[1:] == (3, 3):
            preview.notes.append(_intrinsics_note(key, arr))
    return [p for p in heads.values() if p.panels or p.figures]


# ----------------------------------------------------------------------------------------------
# Rendering


def _frames_checked(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.ndim != 3 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise InputError(f"preview frame {i} must be (H, W, 3) uint8 RGB, got {f.shape} {f.dtype}")
        yield f


def render_previews(
    arrays: Mapping[str, np.ndarray],
    info: Mapping[str, Mapping[str, Any]],
    frames: Iterable[np.ndarray],
    out_dir: Path,
    fps: float | None,
    num_frames: int,
    panel_width: int = 480,
    sheet_frames: int = 8,
    overview_frames: int = 4,
) -> list[str]:
    """Write ``<head>.mp4`` and ``<head>.png`` previews of a run's outputs and ``overview.png`` (one
    row per `overview_frames` frames spread over the video: the input and every head's panels side
    by side); return the file names.

    arrays: "head/output" -> time-first numpy array (np.memmap fine): dense maps (T, H, W) or
    (T, H, W, C) at the frames' (H, W), tracks (T, N, 2) pixels (NaN before a point's query),
    visibility (T, N) in [0, 1], poses (T, 4, 4) camera-to-world, intrinsics (T, 3, 3) pixels.
    info: key -> {"kind": "map" | "flow" | "points" | "queries" | "intrinsics" | "other",
    "values": "real" | "probability" | "probability255" (uint8 probability storage means
    p * 255), "layout", "meaning"}. frames: the input video as uint8 (H, W, 3), read once, in
    order (a generator is fine; only `sheet_frames` rendered rows are kept); extra frames beyond
    num_frames are ignored, fewer raise InputError. num_frames: T. fps: of the MP4s (None -> 10).
    panel_width: px per panel (>= 320), height from the video's aspect (even).

    MP4 frame width = n * panel_width + 4 * (n - 1) for n panels (input included); height =
    caption bar + panel height. The PNG stacks one titled row per picked frame, then the
    head's trajectory plots and intrinsics.
    """
    if panel_width < MIN_PANEL_WIDTH:
        raise InputError(
            f"panel_width must be >= {MIN_PANEL_WIDTH} px so captions stay readable, got {panel_width}"
        )
    if num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    if sheet_frames < 1:
        raise InputError(f"sheet_frames must be >= 1, got {sheet_frames}")
    known_fps = float(fps) if fps else None
    out_dir = Path(out_dir)
    stream = _frames_checked(frames)
    first = next(stream, None)
    if first is None:
        raise InputError("render_previews got no frames; pass the input video's frames")
    frame_size = first.shape[:2]
    panel = panel_size(frame_size, panel_width)
    heads = _plan(arrays, info, num_frames, frame_size, panel)
    picks = set(even_picks(num_frames, sheet_frames))
    font = caption_font()
    bars = {
        h.head: caption_height(["input", *(c for p in h.panels for c in p.captions)], panel_width, font)
        for h in heads
    }
    moving = [h for h in heads if h.panels]
    overview_picks = set(even_picks(num_frames, overview_frames))
    overview_bar = caption_height(
        ["input", *(c for h in moving for p in h.panels for c in p.captions)], panel_width, font
    )
    overview: list[tuple[int, np.ndarray]] = []
    count = 0
    with ExitStack() as stack:
        writers = {
            h.head: stack.enter_context(VideoWriter(out_dir / f"{h.head}.mp4", known_fps or DEFAULT_FPS))
            for h in moving
        }
        for t, frame in enumerate(itertools.islice(itertools.chain([first], stream), num_frames)):
            if frame.shape[:2] != frame_size:
                raise InputError(f"preview frame {t} is {frame.shape[:2]}, frame 0 is {frame_size}")
            shown = resize_image(frame, panel)
            for h in moving:
                row = panel_row(
                    [("input", shown), *(p.draw(t, shown) for p in h.panels)], bar_height=bars[h.head]
                )
                writers[h.head].write(row)
                if t in picks:
                    h.rows.append((t, row))
            if t in overview_picks and moving:
                drawn = [("input", shown), *(p.draw(t, shown) for h in moving for p in h.panels)]
                overview.append((t, panel_row(drawn, bar_height=overview_bar)))
            count = t + 1
        if count < num_frames:
            raise InputError(
                f"the video gave {count} frames but the results have {num_frames}; preview the video the "
                "results were computed from"
            )
    written: list[str] = []
    for h in heads:
        parts = [titled_row(_row_title(t, num_frames, known_fps), row) for t, row in h.rows]
        width = max([p.shape[1] for p in parts] + [f.shape[1] for f in h.figures])
        parts += h.figures
        if h.notes:
            parts.append(text_block(h.notes, width))
        save_png(out_dir / f"{h.head}.png", stack_rows(parts, gap=PANEL_GAP))
        written += [f"{h.head}.mp4", f"{h.head}.png"] if h.panels else [f"{h.head}.png"]
    if overview:
        rows = [titled_row(_row_title(t, num_frames, known_fps), row) for t, row in overview]
        save_png(out_dir / "overview.png", stack_rows(rows, gap=PANEL_GAP))
        written.append("overview.png")
    return written


def _row_title(t: int, num_frames: int, fps: float | None) -> str:
    """'frame 5 of 0-11' (plus the time in seconds when the frame rate is known)."""
    when = f", {t / fps:.2f} s" if fps else ""
    return f"frame {t} (of 0-{num_frames - 1}{when})"
