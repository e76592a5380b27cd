"""TAP-Vid pickles (DAVIS, RoboTAP, RGB-Stacking, Kinetics): 2D point tracking benchmarks.

File layout: one pickle. DAVIS and RoboTAP: ``dict[video_name] -> example``; RGB-Stacking:
``list[example]`` (named ``<file stem>_<index:04d>``); Kinetics (``generate_tapvid.py``
output) as DAVIS but ``video`` is a list of JPEG bytes. Example keys:

- ``video`` uint8 [T, H, W, 3] (or [T] JPEG bytes);
- ``points`` float [N, T, 2] (x, y) normalised to [0, 1] in the raster convention ((0, 0) is
  the top-left corner of the top-left pixel, (1, 1) the bottom-right corner of the last one);
- ``occluded`` bool [N, T].

Conversion to l4p: tracks = points * (W, H) are pixels whose top-left corner is (0, 0), which
is exactly l4p's convention (pixel centres at +0.5); visibility = ~occluded. Queries (t, x, y)
are sampled like the benchmark: "first" (each point at its first visible frame; points never
visible are dropped) or "strided" (every `query_stride` frames, each point visible there;
tracks are repeated per query). The benchmark evaluates at 256 x 256: pass size=(256, 256)
(default resize_mode "squash", as tapnet does).

A pickle can name any function for the loader to call, so the file is read by the restricted
unpickler of `safe_pickle`, which rebuilds numpy arrays, scalars and bytes only: a crafted file
gives a DataError and runs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ... import batch as K
from ...errors import DataError, InputError
from ...specs import DatasetSpec
from ._common import (
    SequenceDataset,
    check_shape,
    check_split,
    data_error,
    decode_image,
    natural_key,
    read_bytes,
    require_path,
    track_sample,
    video_tensor,
)
from .safe_pickle import safe_loads

SPLITS = ("val", "test")
PROVIDES = (K.VIDEO, K.QUERIES, K.TRACKS, K.VISIBILITY)


def load_tapvid_pickle(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Load a TAP-Vid pickle -> [(video name, example)], examples checked for keys and shapes.

    Raises DataError (naming the file) for a file that is not a pickle, is truncated, names a
    global other than numpy's array reconstructors (see `safe_pickle`), has another top-level
    type, or whose examples lack ``video``/``points``/``occluded``.
    """
    p = Path(path)
    data = read_bytes(p)
    if not data:
        raise data_error(p, "file is empty", "re-download the TAP-Vid pickle")
    if data[:1] != b"\x80":
        raise data_error(
            p,
            f"wrong magic number {data[:2]!r} (expected a pickle, protocol >= 2, b'\\x80')",
            "not a TAP-Vid pickle",
        )
    obj = safe_loads(data, p)  # DataError for a refused global or a truncated/corrupt pickle
    if isinstance(obj, dict):
        items = [(str(k), v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        items = [(f"{p.stem}_{i:04d}", v) for i, v in enumerate(obj)]
    else:
        raise data_error(
            p, f"top-level object is a {type(obj).__name__}, expected dict[name, example] or list[example]"
        )
    for name, ex in items:
        _check_example(p, name, ex)
    return items


def _check_example(path: Path, name: str, ex: Any) -> None:
    where = f"{path} [{name}]"
    if not isinstance(ex, dict):
        raise DataError(
            f"{where}: example is a {type(ex).__name__}, expected a dict with video/points/occluded"
        )
    for key in ("video", "points", "occluded"):
        if key not in ex:
            raise DataError(
                f"{where}: missing key {key!r} (keys present: {', '.join(map(str, ex))}); "
                "not a TAP-Vid example"
            )
    points, occ = _numeric(where, "points", ex["points"]), _numeric(where, "occluded", ex["occluded"])
    check_shape(where, "points", points, (None, None, 2), "N, T, (x, y) normalised")
    check_shape(where, "occluded", occ, points.shape[:2], "N, T")
    video = ex["video"]
    if not isinstance(video, (np.ndarray, list, tuple)):
        raise DataError(
            f"{where}: video is a {type(video).__name__}, expected uint8 [T, H, W, 3] or a list of JPEG bytes"
        )
    if not (isinstance(video, np.ndarray) and video.dtype != object):
        for i, frame in enumerate(video):
            if not isinstance(frame, (bytes, bytearray)):  # bytes(int) would allocate that many bytes
                raise DataError(
                    f"{where}: video frame {i} is a {type(frame).__name__}, expected JPEG bytes; "
                    "the file is corrupt"
                )
    T = len(video)
    if T != points.shape[1]:
        raise DataError(
            f"{where}: video has {T} frames but points have {points.shape[1]}; the file is inconsistent"
        )
    if isinstance(video, np.ndarray) and video.dtype != object:
        check_shape(where, "video", video, (T, None, None, 3), "T, H, W, RGB uint8")


def _numeric(where: str, key: str, value: Any) -> np.ndarray:
    """`value` as a bool/int/float numpy array; DataError for ragged or non-numeric data."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        arr = None
    if arr is None or arr.dtype.kind not in "biuf":
        got = type(value).__name__ if arr is None else f"{arr.dtype} array"
        raise DataError(f"{where}: {key} is a {got}, expected a numeric array; the file is corrupt")
    return arr


def decode_video(video: Any, where: str) -> np.ndarray:
    """uint8 [T, H, W, 3] from an array or a sequence of JPEG/PNG bytes."""
    if isinstance(video, np.ndarray) and video.dtype != object:
        return video.astype(np.uint8, copy=False)
    frames = [decode_image(bytes(b), f"{where} frame {i}") for i, b in enumerate(video)]
    return np.stack(frames)


class TapVidDataset(SequenceDataset):
    """TAP-Vid 2D tracking clips.

    root: a TAP-Vid pickle, or a folder whose ``*.pkl`` files are all read (e.g. the Kinetics
    shards). Options: query_mode "first" | "strided", query_stride (5), and the clip/resize
    options of `SequenceDataset`. Samples: video (3, T, H, W), queries (N, 3) (t, x, y),
    tracks (N, T, 2) pixels, visibility (N, T), name.
    """

    dataset_name = "tapvid"

    def __init__(
        self,
        split: str = "test",
        *,
        root: str | Path | None = None,
        query_mode: str = "first",
        query_stride: int = 5,
        **options: Any,
    ):
        check_split(self.dataset_name, split, SPLITS)
        super().__init__(**options)
        path = require_path(self.dataset_name, root)
        files = sorted(path.glob("*.pkl"), key=lambda f: natural_key(f.name)) if path.is_dir() else [path]
        if not files:
            raise data_error(
                path, "folder holds no .pkl files", "point root at a TAP-Vid pickle or its folder"
            )
        if query_mode not in ("first", "strided"):
            raise InputError(f"query_mode must be 'first' or 'strided', got {query_mode!r}")
        self.query_mode, self.query_stride = query_mode, int(query_stride)
        self.examples: list[dict[str, Any]] = []
        self.where: list[str] = []
        names = []
        for f in files:
            for name, ex in load_tapvid_pickle(f):
                names.append(name)
                self.examples.append(ex)
                self.where.append(f"{f} [{name}]")
        self._index(names, [len(ex["video"]) for ex in self.examples])

    def load(self, seq: int, frames: np.ndarray) -> dict[str, Any]:
        ex = self.examples[seq]
        video = ex["video"]
        if isinstance(video, np.ndarray) and video.dtype != object:
            rgb = video[frames].astype(np.uint8, copy=False)
        else:
            rgb = decode_video([video[i] for i in frames], self.where[seq])
        H, W = rgb.shape[1:3]
        points = np.asarray(ex["points"], dtype=np.float64)[:, frames]
        tracks = (points * np.array([W, H])).astype(np.float32)
        visible = ~np.asarray(ex["occluded"], dtype=bool)[:, frames]
        sample = {K.VIDEO: video_tensor(rgb)}
        sample.update(track_sample(tracks, visible, self.query_mode, query_stride=self.query_stride))
        return sample


def spec() -> DatasetSpec:
    return DatasetSpec(
        name="tapvid",
        build=lambda split="test", **options: TapVidDataset(split, **options),
        provides=PROVIDES,
        splits=SPLITS,
        description="TAP-Vid DAVIS/RoboTAP/RGB-Stacking/Kinetics pickles (2D tracks; root=PKL or folder)",
    )
