"""`l4p run` results on disk: written frame chunk by frame chunk, read back by `load_results`.

One folder per video (see `l4p run`):

    meta.json            format, input, sizes, fps, frames, heads, and one entry per array
    HEAD/OUTPUT.npy      every head output, time axis first, no batch axis

Array layouts (the `layout` entry of meta.json says which): dense maps (T, H, W) for one channel and
(T, H, W, C) for more (flow (T, H, W, 2) in pixels, normals (T, H, W, 3)); per-point outputs
(T, N, ...) (tracks (T, N, 2)); other outputs keep their axes with T moved first (poses
(T, 4, 4), intrinsics (T, 3, 3)) or have no T (queries (N, 3)). Every pixel position and size is in
the output resolution `meta["size"]` (pixel centres at +0.5). Real outputs are float32, dense maps
whose `OutputSpec.export_dtype` is "float16" (bounded values: flow, normals) float16. Outputs a head marks as logits (`OutputSpec.values`) are written as
probabilities: dense maps as uint8 p * 255 (`values: "probability255"`), others as float32 p with
the raw logit beside them as OUTPUT_logit.npy. Frames where an output is undefined
(`OutputSpec.undefined`: backward flow's first frame, points before their query frame) hold NaN
(uint8 maps cannot; they hold 0 there).

The .npy files are standard (numpy format 1.0, no pickles): `np.load(path, mmap_mode="r")` reads
them without loading them; `load_results` does so for every array of a folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from .errors import InputError, L4PError
from .specs import HeadSpec, OutputSpec

FORMAT = "l4p-results/1"
HEADER_BYTES = 256
"""Size of the fixed .npy header of a growing array (format 1.0, rewritten with the final shape)."""


class NpyAppender:
    """A .npy file grown along its first axis, so long videos never sit in RAM.

    The header is written with room to spare and rewritten with the final length by `close`; until
    then the file is not a valid array (it lives in the run's hidden partial folder).
    """

    def __init__(self, path: Path, frame_shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.frame_shape, self.dtype = path, tuple(frame_shape), np.dtype(dtype)
        self.length = 0
        self.file = open(path, "wb")
        self.file.write(_npy_header(self.dtype, (0, *self.frame_shape)))

    def append(self, frames: np.ndarray) -> None:
        """frames: (L, *frame_shape), cast to the file's dtype."""
        if tuple(frames.shape[1:]) != self.frame_shape:
            raise InputError(
                f"{self.path.name}: frames of shape {tuple(frames.shape[1:])} do not match the "
                f"first ones {self.frame_shape}"
            )
        self.file.write(np.ascontiguousarray(frames, dtype=self.dtype).tobytes())
        self.length += frames.shape[0]

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(_npy_header(self.dtype, (self.length, *self.frame_shape)))
        self.file.close()


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A numpy format 1.0 header padded to exactly HEADER_BYTES (so it can be rewritten in place)."""
    text = f"{{'descr': {dtype.str!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    body = text.encode("latin1")
    room = HEADER_BYTES - 10 - len(body) - 1
    if room < 0:
        raise InputError(f"array shape {shape} is too long for an l4p results header")
    body += b" " * room + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


# -- head layout -> file layout ---------------------------------------------------------------


def _axes(shape: str) -> list[str]:
    return [a.strip() for a in re.sub(r"[()]", "", shape).split(",")]


def file_layout(spec: OutputSpec, value: torch.Tensor) -> tuple[str, str]:
    """(einops pattern from the head's layout to the file's, file layout) for one output of batch 1.

    Drops the batch axis, moves T first and, for dense outputs (B, C, T, H, W), moves the channel
    axis last, dropping it when it has one channel: "(B, 1, T, H, W)" -> "T H W",
    "(B, 2, T, H, W)" -> "T H W C", "(B, N, T, 2)" -> "T N 2", "(B, N, 3)" -> "N 3".
    """
    axes = _axes(spec.shape)
    if len(axes) != value.ndim or axes[0] != "B" or value.shape[0] != 1:
        raise InputError(
            f"output {spec.name!r} has shape {tuple(value.shape)}, which does not match its spec "
            f"{spec.shape}; fix the head's OutputSpec"
        )
    names = ["1"] + [f"a{i}" for i in range(1, len(axes))]  # einops axis names; "1": the batch
    labels = [""] + axes[1:]
    order = list(range(1, len(axes)))
    if "T" in axes:
        order.remove(axes.index("T"))
        order.insert(0, axes.index("T"))
    if len(axes) == 5 and axes[2] == "T":  # (B, C, T, H, W): channels last, dropped when single
        order, labels[1] = [2, 3, 4, 1], "C"
        if value.shape[1] == 1:
            order, names[1] = [2, 3, 4], "1"
    pattern = f"{' '.join(names)} -> {' '.join(names[i] for i in order)}"
    return pattern, " ".join(labels[i] for i in order)


def to_file_arrays(spec: OutputSpec, value: torch.Tensor) -> dict[str, tuple[np.ndarray, str]]:
    """One output in file layout and dtype: {OUTPUT: (array, layout)} plus OUTPUT_logit for sparse
    logits. Undefined frames are set by `ResultsWriter`."""
    pattern, layout = file_layout(spec, value[:1])
    x = rearrange(value[:1].detach().float().cpu(), pattern).numpy()
    dense = layout.startswith("T H W")
    if spec.values == "logit":
        prob = 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))
        if dense:
            return {spec.name: (np.rint(prob * 255).astype(np.uint8), layout)}
        return {spec.name: (prob.astype(np.float32), layout), f"{spec.name}_logit": (x, layout)}
    return {spec.name: (x.astype(spec.export_dtype if dense else np.float32), layout)}


class ResultsWriter:
    """Writes one video's results into `folder` as they come (`add`), then meta.json (`close`).

    specs: the heads' specs; size: (H, W) of every output; `meta` (input, fps, ...) goes into
    meta.json as given. Streamed chunks are appended to their .npy files at once; a head's final
    outputs (small ones: tracks, poses) are written whole.
    """

    def __init__(self, folder: Path, specs: Mapping[str, HeadSpec], size: tuple[int, int], **meta: Any):
        self.folder, self.specs = Path(folder), dict(specs)
        self.meta = {"format": FORMAT, "size": list(size), **meta, "heads": list(specs), "arrays": {}}
        self.appenders: dict[str, NpyAppender] = {}

    def add(self, head: str, outputs: Mapping[str, torch.Tensor], first_frame: int | None = None) -> None:
        """Outputs of `head`: a chunk of frames starting at `first_frame` (streamed outputs) or, with
        first_frame None, the head's final outputs (written whole, from frame 0)."""
        specs = {o.name: o for o in self.specs[head].outputs}
        for key, value in outputs.items():
            if key not in specs:  # an output the spec does not declare: not exported
                continue
            for name, (array, layout) in to_file_arrays(specs[key], value).items():
                if specs[key].undefined == "first frame" and not first_frame and array.dtype != np.uint8:
                    array[0] = np.nan
                self._write(head, name, specs[key], array, layout, first_frame is not None)

    def _write(
        self, head: str, name: str, spec: OutputSpec, array: np.ndarray, layout: str, chunk: bool
    ) -> None:
        key = f"{head}/{name}"
        path = self.folder / head / f"{name}.npy"
        if key not in self.meta["arrays"]:
            path.parent.mkdir(parents=True, exist_ok=True)
            values, meaning = "real", spec.meaning
            if spec.values == "logit" and not name.endswith("_logit"):
                values = "probability255" if array.dtype == np.uint8 else "probability"
                meaning = (
                    f"probability (x 255 when uint8) = sigmoid of the head's {spec.name}: {spec.meaning}"
                )
            self.meta["arrays"][key] = {
                "file": path.relative_to(self.folder).as_posix(),
                "layout": layout,
                "kind": spec.resolved_kind,
                "values": values,
                "undefined": spec.undefined or None,
                "meaning": meaning,
            }
        if not chunk:
            np.save(path, array, allow_pickle=False)
            return
        if key not in self.appenders:
            self.appenders[key] = NpyAppender(path, array.shape[1:], array.dtype)
        self.appenders[key].append(array)

    def _undefine_before_queries(self) -> None:
        """NaN at the frames before each point's query frame in the outputs marked "before query"
        (float (T, N, ...) arrays of a head that exports its queries (N, 3) as (t, x, y))."""
        arrays = self.meta["arrays"]
        queries = {key.split("/")[0]: e["file"] for key, e in arrays.items() if e["kind"] == "queries"}
        for key, entry in arrays.items():
            head = key.split("/")[0]
            if entry["undefined"] != "before query" or head not in queries:
                continue
            query_frames = np.rint(np.load(self.folder / queries[head])[:, 0])
            array = np.load(self.folder / entry["file"], mmap_mode="r+")
            if array.dtype != np.uint8:
                array[np.arange(array.shape[0])[:, None] < query_frames[None, :]] = np.nan  # (T, N)
                array.flush()
            del array

    def close(self) -> dict[str, Any]:
        """Finish the growing arrays and write meta.json (shapes and dtypes filled in); returns it."""
        for appender in self.appenders.values():
            appender.close()
        self._undefine_before_queries()
        for entry in self.meta["arrays"].values():
            array = np.load(self.folder / entry["file"], mmap_mode="r", allow_pickle=False)
            entry["shape"], entry["dtype"] = list(array.shape), array.dtype.name
        with open(self.folder / "meta.json", "w") as f:
            json.dump(self.meta, f, indent=1)
        return self.meta


class FrameReader:
    """A .npy array read from the file on indexing, one frame (first-axis index) at a time.

    Unlike np.memmap, frames read this way do not stay mapped into the process: scanning a long
    video's outputs keeps the resident memory at one frame. Supports `len`, `shape`, `dtype`,
    `ndim`, x[t] and x[t, ...] with an integer t, and np.asarray(x) (reads everything).
    """

    def __init__(self, path: Path):
        array = np.load(path, mmap_mode="r", allow_pickle=False)  # header only: shape, dtype, offset
        self.path, self.shape, self.dtype, self.offset = path, array.shape, array.dtype, array.offset
        self.ndim = len(self.shape)
        del array

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        t, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        if not isinstance(t, int | np.integer):
            return np.asarray(self)[index]
        t = int(t) + (self.shape[0] if t < 0 else 0)
        if not 0 <= t < self.shape[0]:
            raise IndexError(f"frame {t} of {self.path.name}: it has {self.shape[0]}")
        count = int(np.prod(self.shape[1:], dtype=np.int64))
        frame = np.fromfile(
            self.path, self.dtype, count, offset=self.offset + t * count * self.dtype.itemsize
        )
        return frame.reshape(self.shape[1:])[rest] if rest else frame.reshape(self.shape[1:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = np.fromfile(self.path, self.dtype, offset=self.offset).reshape(self.shape)
        return array if dtype is None else array.astype(dtype)


class Results(Mapping[str, np.ndarray]):
    """The arrays of one results folder, memory-mapped: results["depth/depth"] -> (T, H, W).

    `meta` is meta.json (sizes, fps, input, per-array layout, units and meaning); `info(key)` one
    array's entry. Nothing is loaded until indexed; nothing in the files can execute.
    """

    def __init__(self, folder: Path, meta: dict[str, Any], mmap: bool = True):
        self.folder, self.meta, self.mmap = folder, meta, mmap
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.meta["arrays"]:
            raise KeyError(f"{key!r} is not in {self.folder}; it has {sorted(self.meta['arrays'])}")
        if key not in self._cache:
            path = self.folder / self.meta["arrays"][key]["file"]
            try:
                self._cache[key] = (
                    np.load(path, mmap_mode="r", allow_pickle=False) if self.mmap else FrameReader(path)
                )
            except (OSError, ValueError) as exc:
                raise L4PError(f"cannot read {path}: {exc}; rerun l4p run to rewrite it") from None
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.meta["arrays"])

    def __len__(self) -> int:
        return len(self.meta["arrays"])

    def info(self, key: str) -> dict[str, Any]:
        return self.meta["arrays"][key]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of every output in pixels."""
        return tuple(self.meta["size"])

    @property
    def fps(self) -> float | None:
        return self.meta.get("fps")

    def __repr__(self) -> str:
        return f"Results({str(self.folder)!r}, {len(self)} arrays, size {self.size})"


def load_results(folder: str | os.PathLike, mmap: bool = True) -> Results:
    """The results `l4p run` wrote to `folder` (OUT/NAME/), every array memory-mapped (mmap=False:
    `FrameReader`s, which read each indexed frame from the file and keep nothing mapped)."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise InputError(
            f"{folder} has no meta.json; point load_results at an l4p run output folder OUT/NAME/"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise L4PError(f"cannot read {meta_path}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise InputError(f"{meta_path}: format {found!r} is not {FORMAT!r}; rerun l4p run with this version")
    return Results(folder, meta, mmap)
