"""Video input and output: files (PyAV), image folders, arrays; aspect-preserving resizing.

Reading
    ``open_video(source) -> VideoSource`` streams frames one at a time (bounded memory on long
    videos): ``for frame in open_video("clip.mp4"): ...`` yields uint8 (H, W, 3) RGB numpy
    frames. ``read_video(source, max_frames=None)`` loads a whole clip as the l4p ``video``
    tensor (3, T, H, W) float32 in [0, 1]. A source is a video file (mp4, mov, webm, mkv, avi,
    gif, ... whatever FFmpeg decodes), a single image, a folder of images (png/jpg/... sorted
    naturally: 2.png before 10.png), a numpy array or torch tensor (T, H, W, 3) uint8 or float
    in [0, 1]. Rotation metadata of phone videos is not applied.

Resizing
    ``fit_to_size(frames, (H', W'), mode)`` with mode "letterbox" (scale to fit inside, pad),
    "crop" (scale to cover, centre crop) or "squash" (scale each axis independently) returns
    the resized frames and a `FrameTransform`. Pixel coordinates follow l4p's convention: the
    top-left corner of the image is (0, 0), the centre of the top-left pixel is (0.5, 0.5). The
    transform maps x' = sx * x + ox, y' = sy * y + oy (output pixels); `apply_to_intrinsics`,
    `map_points`, `map_points_back`, `invert_map` and `invert_flow` use that same map.

Writing
    ``write_video(path, frames, fps)``: .mp4/.mov/.mkv (H.264 via libx264, or MPEG-4 Part 2
    when libx264 is missing), .webm (VP9) or .gif (Pillow). ``VideoWriter(path, fps)`` writes the
    same video formats one frame at a time (a context manager; bounded memory).

Errors about a user's video are `InputError`s with a one-line message naming the path. A video
file that ends early (truncated, corrupt) yields the frames it has, then warns (`DataWarning`).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataWarning, InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_MODES = ("letterbox", "crop", "squash")


def _why(e: BaseException) -> str:
    """An exception as one line: 'Type: message'."""
    return " ".join(f"{type(e).__name__}: {e}".split())


def _natural_key(name: str) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


# ----------------------------------------------------------------------------------------------
# Sources


class VideoSource:
    """A stream of RGB frames.

    Attributes: ``fps`` (float or None when unknown, e.g. image folders), ``size`` (H, W) in
    pixels, ``num_frames`` (int, or None when the container does not say; for video files it
    comes from container metadata and may be approximate), ``name`` (a path or "array").
    Iterating yields uint8 numpy frames (H, W, 3); every iteration starts from the first frame
    and holds one decoded frame at a time.
    """

    fps: float | None
    size: tuple[int, int]
    num_frames: int | None
    name: str

    def __iter__(self) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (files are only open while iterating; kept for symmetry)."""

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, size={self.size}, "
            f"num_frames={self.num_frames}, fps={self.fps})"
        )


class _FileSource(VideoSource):
    """A video file decoded by PyAV (FFmpeg)."""

    def __init__(self, path: Path, fps: float | None):
        import av

        self.path = path
        self.name = str(path)
        if path.stat().st_size == 0:
            raise InputError(f"{path}: video file is empty; re-export or re-download it")
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise InputError(
                        f"{path}: file has no video stream; give a video file, an image folder or an array"
                    )
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                first = next(iter(container.decode(stream)), None)
                if first is None:
                    raise InputError(f"{path}: video contains no decodable frames; re-export it")
                self.size = (int(first.height), int(first.width))
                count = int(stream.frames or 0)
                if count <= 0 and stream.duration and stream.time_base and rate:
                    count = int(round(float(stream.duration * stream.time_base) * float(rate)))
                elif count <= 0 and container.duration and rate:
                    count = int(round(container.duration / 1_000_000 * float(rate)))
        except InputError:
            raise
        except Exception as e:
            raise InputError(
                f"{path}: cannot decode as a video ({_why(e)}); the file is corrupt or not a video"
            ) from None
        self.fps = float(fps) if fps else (float(rate) if rate else None)
        self.num_frames = count if count > 0 else None

    def __iter__(self) -> Iterator[np.ndarray]:
        """Decoded frames. A file that ends early (fewer frames than its container declares, or a
        decoding error after some frames) gives the frames it has and a `DataWarning`."""
        import av

        index = 0
        declared = 0
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                declared = int(stream.frames or 0)  # exact frame count of the index (0: unknown)
                for frame in container.decode(stream):
                    arr = frame.to_ndarray(format="rgb24")
                    if arr.shape[:2] != self.size:
                        raise InputError(
                            f"{self.path}: frame {index} is {arr.shape[:2]}, the first frame is "
                            f"{self.size}; re-encode the video at a constant size"
                        )
                    index += 1
                    yield arr
        except InputError:
            raise
        except Exception as e:
            if index == 0:
                raise InputError(
                    f"{self.path}: decoding failed at frame 0 ({_why(e)}); the file is corrupt or truncated"
                ) from None
            self._warn_incomplete(index, declared or self.num_frames, f" ({_why(e)})")
            return
        if index == 0:
            raise InputError(
                f"{self.path}: video contains no decodable frames; the file is corrupt or truncated"
            )
        if index < declared:
            self._warn_incomplete(index, declared)

    def _warn_incomplete(self, decoded: int, declared: int | None, why: str = "") -> None:
        count = f"{decoded} of {declared}" if declared else str(decoded)
        warnings.warn(
            f"{self.path}: decoded {count} frames; the file is truncated or corrupt; "
            f"results cover frames 0..{decoded - 1}{why}",
            DataWarning,
            stacklevel=3,
        )


class _ImageFolderSource(VideoSource):
    """A folder of images (or a single image file), naturally sorted by file name."""

    def __init__(self, files: list[Path], name: str, fps: float | None):
        self.files = files
        self.name = name
        self.fps = float(fps) if fps else None
        self.num_frames = len(files)
        self.size = self._read(files[0]).shape[:2]

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as im:
                return np.array(im.convert("RGB"), dtype=np.uint8)
        except Exception as e:
            raise InputError(
                f"{path}: cannot read image ({_why(e)}); the file is corrupt or not an image"
            ) from None

    def __iter__(self) -> Iterator[np.ndarray]:
        for f in self.files:
            arr = self._read(f)
            if arr.shape[:2] != self.size:
                raise InputError(
                    f"{f}: image is {arr.shape[:2]} but the first image is {self.size}; "
                    "all frames must have one size"
                )
            yield arr


class _ArraySource(VideoSource):
    """Frames held in memory: (T, H, W, 3) uint8, or float in [0, 1]."""

    def __init__(self, frames: np.ndarray, fps: float | None):
        self.frames = frames
        self.name = "array"
        self.fps = float(fps) if fps else None
        self.num_frames = int(frames.shape[0])
        self.size = (int(frames.shape[1]), int(frames.shape[2]))

    def __iter__(self) -> Iterator[np.ndarray]:
        for f in self.frames:
            if f.dtype == np.uint8:
                yield np.ascontiguousarray(f)
            else:
                yield np.clip(np.rint(f.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def _as_frame_array(source: Any) -> np.ndarray:
    """numpy/torch frames -> numpy (T, H, W, 3) uint8 or float, checked."""
    arr = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    if arr.ndim == 4 and arr.shape[-1] != 3 and arr.shape[0] == 3:
        arr = np.moveaxis(arr, 0, -1)  # (3, T, H, W) l4p layout
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"video array must have shape (T, H, W, 3) or (3, T, H, W), got {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise InputError(f"video array is empty, shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"video array must be uint8 or float in [0, 1], got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise InputError("video array contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise InputError(
            f"float video array must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; divide uint8 values by 255"
        )
    return arr


def open_video(source: Any, *, fps: float | None = None) -> VideoSource:
    """Open a frame source for streaming.

    source: path of a video file, of an image file, or of a folder of images; or a numpy array /
    torch tensor (T, H, W, 3) uint8 or float in [0, 1] (also accepted: (3, T, H, W)).
    fps overrides the container's frame rate (sources without one report fps=None).
    Raises InputError (message names the path) for missing, empty, unreadable or corrupt input.
    """
    if isinstance(source, (np.ndarray, torch.Tensor)) or (isinstance(source, (list, tuple)) and source):
        return _ArraySource(_as_frame_array(source), fps)
    if not isinstance(source, (str, Path)):
        raise InputError(
            f"video source must be a path, a numpy array or a torch tensor, got {type(source).__name__}"
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the video path")
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
            key=lambda p: _natural_key(p.name),
        )
        if not files:
            raise InputError(
                f"{path}: folder contains no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "put the frames there or give a video file"
            )
        return _ImageFolderSource(files, str(path), fps)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: image file is empty")
        return _ImageFolderSource([path], str(path), fps)
    return _FileSource(path, fps)


def read_video(source: Any, max_frames: int | None = None, *, stride: int = 1) -> torch.Tensor:
    """Load frames as the l4p video tensor (3, T, H, W) float32 in [0, 1].

    source: anything `open_video` accepts (a `VideoSource` too). Keeps every `stride`-th frame,
    at most `max_frames` of them; decoding stops as soon as enough frames are read. Float array
    inputs are passed through without 8-bit quantisation.
    """
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1 or None, got {max_frames}")
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    src = source if isinstance(source, VideoSource) else open_video(source)
    if isinstance(src, _ArraySource) and src.frames.dtype != np.uint8:
        arr = src.frames[::stride][:max_frames]
        return (
            torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
            .permute(3, 0, 1, 2)
            .clamp_(0, 1)
            .contiguous()
        )
    kept: list[np.ndarray] = []
    for i, frame in enumerate(src):
        if i % stride:
            continue
        kept.append(frame)
        if max_frames is not None and len(kept) >= max_frames:
            break
    if not kept:
        raise InputError(f"{src.name}: video contains no frames")
    h, w = kept[0].shape[:2]
    out = torch.empty((3, len(kept), h, w), dtype=torch.float32)
    for t, frame in enumerate(kept):
        out[:, t] = torch.from_numpy(frame).permute(2, 0, 1).float().div_(255.0)
    return out


def default_intrinsics(size: Sequence[int], num_frames: int | None = None) -> torch.Tensor:
    """L4P's intrinsics for a video whose camera is unknown: fx = fy = min(H, W), cx = W/2, cy = H/2.

    size: (H, W). Returns (3, 3), or (T, 3, 3) repeated when `num_frames` is given (pixel
    units, +0.5 pixel-centre convention: cx = W/2 is the image centre).
    """
    h, w = int(size[0]), int(size[1])
    f = float(min(h, w))
    Kmat = torch.tensor([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])
    return Kmat if num_frames is None else Kmat.expand(num_frames, 3, 3).clone()


# ----------------------------------------------------------------------------------------------
# Resizing


@dataclass(frozen=True)
class FrameTransform:
    """The map between input pixels (H, W) and output pixels (H', W') of one resize.

    x' = sx * x + ox, y' = sy * y + oy, with continuous pixel coordinates whose origin is the
    top-left image corner (pixel centres at +0.5). ``region`` (x0, y0, x1, y1) is the part of
    the output covered by image content (letterbox: the box inside the padding; crop and
    squash: the whole output).
    """

    in_size: tuple[int, int]
    out_size: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]
    mode: str
    region: tuple[int, int, int, int]

    @classmethod
    def from_sizes(
        cls, in_size: Sequence[int], out_size: Sequence[int], mode: str = "letterbox"
    ) -> FrameTransform:
        """The transform `fit_to_size` uses for an (H, W) input and an (H', W') output."""
        if mode not in _MODES:
            raise InputError(f"resize mode must be one of {', '.join(_MODES)}, got {mode!r}")
        if len(in_size) != 2 or len(out_size) != 2 or min(*in_size, *out_size) < 1:
            raise InputError(
                f"sizes must be (H, W) with positive ints, got {tuple(in_size)} -> {tuple(out_size)}"
            )
        H, W = int(in_size[0]), int(in_size[1])
        Ho, Wo = int(out_size[0]), int(out_size[1])
        if mode == "squash":
            return cls((H, W), (Ho, Wo), (Wo / W, Ho / H), (0.0, 0.0), mode, (0, 0, Wo, Ho))
        if mode == "letterbox":
            s = min(Ho / H, Wo / W)
            h, w = min(Ho, max(1, round(H * s))), min(Wo, max(1, round(W * s)))
            ox, oy = (Wo - w) // 2, (Ho - h) // 2
            return cls(
                (H, W), (Ho, Wo), (w / W, h / H), (float(ox), float(oy)), mode, (ox, oy, ox + w, oy + h)
            )
        s = max(Ho / H, Wo / W)
        h, w = max(Ho, round(H * s)), max(Wo, round(W * s))
        ox, oy = -((w - Wo) // 2), -((h - Ho) // 2)
        return cls((H, W), (Ho, Wo), (w / W, h / H), (float(ox), float(oy)), mode, (0, 0, Wo, Ho))

    @property
    def resized_size(self) -> tuple[int, int]:
        """(h, w): size of the scaled image before padding or cropping."""
        return round(self.in_size[0] * self.scale[1]), round(self.in_size[1] * self.scale[0])

    def _affine(self, like: Any) -> Any:
        A = [[self.scale[0], 0.0, self.offset[0]], [0.0, self.scale[1], self.offset[1]], [0.0, 0.0, 1.0]]
        if isinstance(like, torch.Tensor):
            return torch.tensor(
                A, dtype=like.dtype if like.is_floating_point() else torch.float64, device=like.device
            )
        return np.array(A, dtype=np.float64)

    def apply_to_intrinsics(self, Kmat: Any) -> Any:
        """K (..., 3, 3) pixel units -> K' = A @ K with A = [[sx, 0, ox], [0, sy, oy], [0, 0, 1]].

        A point projecting to x with K projects to x' = sx * x + ox with K'. numpy or torch in,
        same type out.
        """
        A = self._affine(Kmat)
        return A @ Kmat if isinstance(Kmat, torch.Tensor) else A @ np.asarray(Kmat, dtype=np.float64)

    def invert_intrinsics(self, Kmat: torch.Tensor) -> torch.Tensor:
        """K' (..., 3, 3) of the output frame -> K of the input frame (A^-1 @ K'), torch."""
        return torch.linalg.inv(self._affine(Kmat)) @ Kmat

    def map_points(self, xy: Any) -> Any:
        """Input pixel coordinates (..., 2) (x, y) -> output pixel coordinates."""
        s, o = self.scale, self.offset
        if isinstance(xy, torch.Tensor):
            return xy * torch.tensor(s, dtype=xy.dtype, device=xy.device) + torch.tensor(
                o, dtype=xy.dtype, device=xy.device
            )
        return np.asarray(xy) * np.array(s) + np.array(o)

    def map_points_back(self, xy: Any) -> Any:
        """Output pixel coordinates (..., 2) (x, y) -> input pixel coordinates."""
        s, o = self.scale, self.offset
        if isinstance(xy, torch.Tensor):
            return (xy - torch.tensor(o, dtype=xy.dtype, device=xy.device)) / torch.tensor(
                s, dtype=xy.dtype, device=xy.device
            )
        return (np.asarray(xy) - np.array(o)) / np.array(s)

    def apply(
        self, frames: torch.Tensor, *, interpolation: str = "bilinear", pad_value: float = 0.0
    ) -> torch.Tensor:
        """Resize (C, T, H, W) (any C, any dtype) to (C, T, H', W') with this transform.

        interpolation "bilinear" (antialiased when shrinking; float output for float input,
        rounded for integer input) or "nearest" (centre-aligned, exact for labels and masks).
        Letterbox padding is filled with `pad_value`.
        """
        if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
            got = tuple(frames.shape) if hasattr(frames, "shape") else type(frames).__name__
            raise InputError(f"frames must be a torch tensor (C, T, H, W), got {got}")
        if tuple(frames.shape[-2:]) != self.in_size:
            raise InputError(f"frames are {tuple(frames.shape[-2:])}, the transform expects {self.in_size}")
        if interpolation not in ("bilinear", "nearest"):
            raise InputError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        C, T = frames.shape[:2]
        Ho, Wo = self.out_size
        h, w = self.resized_size
        ox, oy = int(self.offset[0]), int(self.offset[1])
        out = torch.full((C, T, Ho, Wo), pad_value, dtype=frames.dtype, device=frames.device)
        # destination box in the output and source box in the resized image
        dx0, dy0 = max(ox, 0), max(oy, 0)
        sx0, sy0 = dx0 - ox, dy0 - oy
        bw, bh = min(w - sx0, Wo - dx0), min(h - sy0, Ho - dy0)
        shrink = h < self.in_size[0] or w < self.in_size[1]
        for t0 in range(0, T, 16):  # bounded working memory on long clips
            x = frames[:, t0 : t0 + 16].transpose(0, 1)
            xf = x if x.is_floating_point() else x.float()
            if interpolation == "nearest":
                y = F.interpolate(xf, size=(h, w), mode="nearest-exact")
            else:
                y = F.interpolate(xf, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
            if not x.is_floating_point():
                y = y.round() if x.dtype != torch.bool else y > 0.5
                y = y.to(x.dtype)
            out[:, t0 : t0 + 16, dy0 : dy0 + bh, dx0 : dx0 + bw] = y[
                :, :, sy0 : sy0 + bh, sx0 : sx0 + bw
            ].transpose(0, 1)
        return out

    def _input_grid(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Output-pixel coordinates (H, W, 2) of input pixel centres, and their coverage mask."""
        H, W = self.in_size
        ys = (torch.arange(H, dtype=torch.float64, device=device) + 0.5) * self.scale[1] + self.offset[1]
        xs = (torch.arange(W, dtype=torch.float64, device=device) + 0.5) * self.scale[0] + self.offset[0]
        x0, y0, x1, y1 = self.region
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        covered = (gx >= x0) & (gx <= x1) & (gy >= y0) & (gy <= y1)
        return torch.stack([gx, gy], -1), covered

    def input_coverage(self) -> torch.Tensor:
        """bool (H, W): input pixels whose centre lies in the output's content region."""
        return self._input_grid(torch.device("cpu"))[1]

    def invert_map(
        self, x: torch.Tensor, *, interpolation: str = "bilinear", fill: float = 0.0
    ) -> torch.Tensor:
        """Bring a dense map (..., H', W') on the output grid back to the input grid (..., H, W).

        Samples the content region at each input pixel centre mapped by this transform
        (bilinear, or nearest for integer/bool maps and labels; border values are repeated at
        the content edge, so letterbox padding never leaks in). Input pixels outside the
        output (crop mode) get `fill` (see `input_coverage`). Values are not rescaled: use
        `invert_flow` for flow vectors.
        """
        if not isinstance(x, torch.Tensor) or x.ndim < 2 or tuple(x.shape[-2:]) != self.out_size:
            got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise InputError(
                f"invert_map needs a tensor (..., {self.out_size[0]}, {self.out_size[1]}), got {got}"
            )
        if interpolation not in ("bilinear", "nearest"):
            raise InputError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        integer = not x.is_floating_point()
        mode = "nearest" if integer else interpolation
        x0, y0, x1, y1 = self.region
        content = x[..., y0:y1, x0:x1]
        lead = content.shape[:-2]
        cw, ch = x1 - x0, y1 - y0
        grid, covered = self._input_grid(x.device)
        g = torch.empty_like(grid)
        g[..., 0] = 2.0 * (grid[..., 0] - x0) / cw - 1.0
        g[..., 1] = 2.0 * (grid[..., 1] - y0) / ch - 1.0
        work_dtype = torch.float64 if x.dtype in (torch.float64, torch.int64, torch.int32) else torch.float32
        src = content.reshape(1, -1, ch, cw).to(work_dtype)
        out = F.grid_sample(
            src, g.to(work_dtype)[None], mode=mode, padding_mode="border", align_corners=False
        )
        out = out.reshape(*lead, *self.in_size)
        if not bool(covered.all()):
            out = torch.where(covered, out, torch.as_tensor(fill, dtype=out.dtype, device=out.device))
        if integer:
            out = (out > 0.5) if x.dtype == torch.bool else out.round().to(x.dtype)
        else:
            out = out.to(x.dtype)
        return out

    def invert_flow(self, flow: torch.Tensor, *, fill: float = 0.0) -> torch.Tensor:
        """Flow (..., 2, H', W') in output pixels -> (..., 2, H, W) in input pixels (u/sx, v/sy)."""
        if not isinstance(flow, torch.Tensor) or flow.ndim < 3 or flow.shape[-3] != 2:
            raise InputError(
                f"invert_flow needs a tensor (..., 2, H', W'), got {tuple(getattr(flow, 'shape', ()))}"
            )
        out = self.invert_map(flow, fill=fill)
        scale = torch.tensor(self.scale, dtype=out.dtype, device=out.device).view(2, 1, 1)
        return out / scale


def fit_to_size(
    frames: torch.Tensor,
    size: Sequence[int],
    mode: str = "letterbox",
    *,
    interpolation: str = "bilinear",
    pad_value: float = 0.0,
) -> tuple[torch.Tensor, FrameTransform]:
    """Resize frames (C, T, H, W) (C = 3 for video) to (C, T, H', W'), keeping aspect ratio.

    mode "letterbox": scale by min(H'/H, W'/W), centre, pad with `pad_value`; "crop": scale
    by max(H'/H, W'/W), centre crop; "squash": scale each axis to fit exactly. Returns the
    resized frames and the `FrameTransform` relating input and output pixel coordinates.
    """
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
        got = tuple(frames.shape) if hasattr(frames, "shape") else type(frames).__name__
        raise InputError(f"frames must be a torch tensor (C, T, H, W), got {got}")
    tf = FrameTransform.from_sizes(tuple(frames.shape[-2:]), size, mode)
    return tf.apply(frames, interpolation=interpolation, pad_value=pad_value), tf


# ----------------------------------------------------------------------------------------------
# Writing


def _frames_uint8(frames: Any) -> np.ndarray:
    arr = _as_frame_array(frames)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


_STREAM_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")


def _check_fps(fps: Any) -> float:
    if not fps or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"fps must be a positive number, got {fps!r}")
    return float(fps)


class VideoWriter:
    """Write a video one frame at a time (bounded memory), as a context manager.

        with VideoWriter("out.mp4", fps=10) as writer:
            for frame in frames:  # uint8 (H, W, 3) RGB numpy arrays (or float in [0, 1])
                writer.write(frame)

    Suffix picks the codec: .mp4/.mov/.mkv: H.264 (libx264, crf=`quality`) or MPEG-4 Part 2 when
    libx264 is unavailable; .webm: VP9. Pixel format yuv420p, so players accept it; odd heights /
    widths are padded by one repeated row / column to be even. The first frame fixes the size;
    the file is opened on the first frame and finished by `close` (the `with` block's end).
    Parent folders are created. `frames_written` counts the frames written so far.
    """

    def __init__(self, path: str | Path, fps: float = 30.0, *, quality: int = 18):
        self.fps = _check_fps(fps)
        self.path = Path(path).expanduser()
        suffix = self.path.suffix.lower()
        if suffix not in _STREAM_SUFFIXES:
            raise InputError(
                f"{self.path}: unsupported video suffix {suffix!r} for streaming; use .mp4, .mov, .mkv or "
                ".webm (write GIFs with write_video)"
            )
        self.quality = quality
        self.frames_written = 0
        self.size: tuple[int, int] | None = None  # (H, W) of the input frames
        self._container: Any = None
        self._stream: Any = None
        self._codec = ""

    def _open(self, h: int, w: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        rate = Fraction(self.fps).limit_denominator(1001)
        if self.path.suffix.lower() == ".webm":
            codec, options = "libvpx-vp9", {"crf": str(max(0, min(63, self.quality + 12))), "b": "0"}
        elif "libx264" in av.codecs_available:
            codec, options = "libx264", {"crf": str(self.quality), "preset": "medium"}
        else:
            codec, options = "mpeg4", {}
        self._codec = codec
        self._container = av.open(str(self.path), mode="w")
        stream = self._container.add_stream(codec, rate=rate)
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = options
        if codec == "mpeg4":
            stream.bit_rate = max(2_000_000, int(stream.width * stream.height * float(rate) * 2))
        self._stream = stream

    def write(self, frame: Any) -> None:
        """Append one frame: (H, W, 3) uint8 RGB (float in [0, 1] is converted)."""
        import av

        arr = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise InputError(f"{self.path}: a frame must be (H, W, 3) RGB, got shape {tuple(arr.shape)}")
        arr = _frames_uint8(arr[None])[0]
        h, w = arr.shape[:2]
        if self.size is None:
            self.size = (h, w)
            try:
                self._open(h, w)
            except Exception as e:
                self._container = None
                raise InputError(f"{self.path}: cannot write video with {self._codec} ({_why(e)})") from None
        elif (h, w) != self.size:
            raise InputError(
                f"{self.path}: frame {self.frames_written} is {(h, w)}, the first frame was {self.size}; "
                "every frame of a video must have one size"
            )
        if h % 2 or w % 2:
            arr = np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        try:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                self._container.mux(packet)
        except Exception as e:
            raise InputError(f"{self.path}: cannot write video with {self._codec} ({_why(e)})") from None
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file. Raises InputError if no frame was written."""
        if self._container is None:
            if self.frames_written == 0 and self.size is None:
                raise InputError(f"{self.path}: no frames were written; a video needs at least one frame")
            return
        container, self._container = self._container, None
        try:
            for packet in self._stream.encode():
                container.mux(packet)
        except Exception as e:
            raise InputError(f"{self.path}: cannot write video with {self._codec} ({_why(e)})") from None
        finally:
            container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        elif self._container is not None:  # an error inside the block: release the file, keep that error
            container, self._container = self._container, None
            container.close()


def write_video(path: str | Path, frames: Any, fps: float = 30.0, *, quality: int = 18) -> Path:
    """Write frames to a video file and return its path.

    frames: uint8 (T, H, W, 3) numpy or torch (float in [0, 1] and the l4p (3, T, H, W) layout
    are accepted too). Suffix picks the writer: .mp4/.mov/.mkv/.webm: `VideoWriter` (H.264 or
    MPEG-4 Part 2, VP9 for .webm; yuv420p, odd sizes padded even). .gif: Pillow,
    palette-quantised, looping. Parent folders are created.
    """
    arr = _frames_uint8(frames)
    fps = _check_fps(fps)
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix not in (*_STREAM_SUFFIXES, ".gif"):
        raise InputError(f"{p}: unsupported video suffix {suffix!r}; use .mp4, .mov, .mkv, .webm or .gif")
    if suffix == ".gif":
        from PIL import Image

        p.parent.mkdir(parents=True, exist_ok=True)
        images = [Image.fromarray(f) for f in arr]
        images[0].save(
            p, save_all=True, append_images=images[1:], duration=max(10, round(1000 / fps)), loop=0
        )
        return p
    with VideoWriter(p, fps, quality=quality) as writer:
        for f in arr:
            writer.write(f)
    return p
