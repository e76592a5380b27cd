"""Helpers shared by the public-format readers: errors, file decoding, clips, queries, resizing.

Everything here is format-agnostic. Arrays are numpy until a dataset turns them into an l4p
sample (torch tensors with the shapes of `l4p_framework.batch`).
"""

from __future__ import annotations

import inspect
import io
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import batch as K
from ...errors import DataError, InputError
from .safe_pickle import read_npy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------------
# Errors and arguments


def data_error(path: str | Path, problem: str, fix: str = "") -> DataError:
    """A DataError whose one-line message names the file, the problem and (optionally) the fix."""
    msg = f"{path}: {problem}"
    if fix:
        msg += f"; {fix}"
    return DataError(" ".join(msg.splitlines()))


def check_split(dataset: str, split: str, splits: Sequence[str]) -> None:
    """Raise InputError unless `split` is one of `splits`."""
    if split not in splits:
        raise InputError(f"dataset {dataset!r} has no split {split!r}; use one of {', '.join(splits)}")


def require_dir(dataset: str, root: str | Path | None, what: str = "root") -> Path:
    """`root` as a Path; InputError if it is None or not an existing folder."""
    if root is None:
        raise InputError(f"dataset {dataset!r} needs {what}=PATH (the folder holding the data)")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise InputError(f"{path}: {what} of dataset {dataset!r} is not an existing folder; check the path")
    return path


def require_path(dataset: str, root: str | Path | None) -> Path:
    """`root` as a Path; InputError if it is None or does not exist (file or folder)."""
    if root is None:
        raise InputError(f"dataset {dataset!r} needs root=PATH")
    path = Path(root).expanduser()
    if not path.exists():
        raise InputError(f"{path}: root of dataset {dataset!r} does not exist; check the path")
    return path


def natural_key(name: str) -> list[Any]:
    """Sort key ordering digit runs numerically: frame2 < frame10 (case-insensitive)."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_files(folder: Path, extensions: Iterable[str]) -> list[Path]:
    """Files of `folder` whose suffix (case-insensitive) is in `extensions`, naturally sorted."""
    exts = {e.lower() for e in extensions}
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts),
        key=lambda p: natural_key(p.name),
    )


def list_dirs(folder: Path) -> list[Path]:
    """Sub-folders of `folder`, naturally sorted (hidden ones skipped)."""
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )


# ----------------------------------------------------------------------------------------------
# Binary files


def read_bytes(path: str | Path) -> bytes:
    """Bytes of `path`; DataError if it is missing or unreadable."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise data_error(p, "file not found", "check the dataset layout") from None
    except OSError as e:
        raise data_error(p, f"cannot read file ({e.strerror or e})") from None


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) to uint8 [H, W, 3] RGB."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.array(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError)
        problem = "empty image data" if not data else f"cannot decode image ({type(e).__name__}: {e})"
        raise DataError(f"{where}: {problem}; the file is truncated or not an image") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an 8-bit image file as uint8 [H, W, 3] RGB (alpha dropped, grey replicated)."""
    return decode_image(read_bytes(path), str(path))


def check_png(path: Path, data: bytes) -> None:
    if len(data) == 0:
        raise data_error(path, "file is empty", "re-extract the dataset")
    if not data.startswith(PNG_MAGIC):
        raise data_error(
            path, f"wrong magic number {data[:8]!r} (expected a PNG signature)", "not a PNG file"
        )


def read_png_u16(path: str | Path) -> np.ndarray:
    """Read a single-channel 16-bit PNG as uint16 [H, W] (raw stored values)."""
    from PIL import Image

    p = Path(path)
    data = read_bytes(p)
    check_png(p, data)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)
    except Exception as e:
        raise data_error(
            p, f"truncated or corrupt PNG ({type(e).__name__}: {e})", "re-extract the dataset"
        ) from None
    if mode not in ("I;16", "I;16B", "I;16L", "I") or arr.ndim != 2:
        raise data_error(
            p, f"expected a 16-bit single-channel PNG, got PIL mode {mode!r}", "use the original files"
        )
    if arr.dtype != np.uint16:
        arr = arr.astype(np.uint16)
    return arr


def read_png_u16_rgb(path: str | Path) -> np.ndarray:
    """Read a 16-bit 3-channel PNG as uint16 [H, W, 3] in stored R, G, B order (decoded by PyAV).

    Pillow truncates 48-bit PNGs to 8 bits, so FFmpeg's PNG decoder is used instead.
    """
    import av

    p = Path(path)
    data = read_bytes(p)
    check_png(p, data)
    try:
        with av.open(io.BytesIO(data), format="png_pipe") as container:
            frame = next(container.decode(video=0))
            fmt = frame.format.name
            if fmt not in ("rgb48be", "rgb48le", "rgba64be", "rgba64le"):
                raise data_error(
                    p, f"expected a 16-bit 3-channel PNG, got pixel format {fmt}", "use the original files"
                )
            arr = frame.to_ndarray()
    except DataError:
        raise
    except Exception as e:
        raise data_error(
            p, f"truncated or corrupt PNG ({type(e).__name__}: {e})", "re-extract the dataset"
        ) from None
    return np.ascontiguousarray(arr[..., :3]).astype(np.uint16, copy=False)


def write_png_u16(path: str | Path, array: np.ndarray) -> None:
    """Write uint16 [H, W] (grey) or [H, W, 3] (RGB) as a 16-bit PNG (no filtering, zlib level 6)."""
    arr = np.asarray(array)
    if arr.dtype != np.uint16 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise InputError(f"write_png_u16 needs uint16 [H, W] or [H, W, 3], got {arr.dtype} {arr.shape}")
    h, w = arr.shape[:2]
    color_type = 0 if arr.ndim == 2 else 2
    rows = arr.astype(">u2").reshape(h, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    png = PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)


class ArrayBundle:
    """Named arrays from an `.npz` file or a folder of `<key>.npy` files, with checked access.

    `bundle[key]` raises a DataError naming the file and the missing key; `key in bundle` tests.
    """

    def __init__(self, path: Path, arrays: dict[str, Any]):
        self.path = path
        self._arrays = arrays

    def __contains__(self, key: str) -> bool:
        return key in self._arrays

    def keys(self) -> list[str]:
        return sorted(self._arrays)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            raise data_error(
                self.path,
                f"missing key {key!r} (keys present: {', '.join(self.keys()) or 'none'})",
                "the file was written by another tool or an older release",
            )
        value = self._arrays[key]
        if callable(value):  # lazily loaded .npy of a folder bundle
            value = value()
            self._arrays[key] = value
        return value

    def require(self, *keys: str) -> None:
        """DataError naming the file and the first of `keys` that is missing."""
        for key in keys:
            if key not in self._arrays:
                self[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


def load_arrays(
    path: str | Path, *, bytes_keys: Sequence[str] = (), required: Sequence[str] = ()
) -> ArrayBundle:
    """Open an `.npz` file (eagerly read) or a folder of `.npy` files (lazily read) as an ArrayBundle.

    Checks the zip magic number before numpy sees the file, reports truncated archives and
    entries, and checks `required` keys. Nothing is unpickled except the entries named in
    `bytes_keys`, which may be object arrays of bytes (e.g. JPEG frames): those are read by the
    restricted unpickler of `safe_pickle.read_npy`; any other object array is a DataError.
    """
    p = Path(path)
    if p.is_dir():
        files = {f.stem: f for f in p.iterdir() if f.suffix == ".npy"}
        if not files:
            raise data_error(p, "folder holds no .npy arrays", "point at the folder of <key>.npy files")

        def loader(f: Path):
            return lambda: _load_npy(f, f.stem in bytes_keys)

        bundle = ArrayBundle(p, {k: loader(f) for k, f in files.items()})
    else:
        data = read_bytes(p)
        if len(data) == 0:
            raise data_error(p, "file is empty", "re-download or re-generate it")
        if not data.startswith(ZIP_MAGIC):
            raise data_error(
                p,
                f"wrong magic number {data[:4]!r} (expected an .npz zip archive 'PK\\x03\\x04')",
                "not an .npz file",
            )
        try:
            arrays = {}
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for name in zf.namelist():
                    key = name.removesuffix(".npy")
                    arrays[key] = read_npy(zf.read(name), f"{p} [{key}]", object_of_bytes=key in bytes_keys)
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
            raise data_error(
                p,
                f"truncated or corrupt .npz archive ({type(e).__name__}: {e})",
                "re-download or re-generate it",
            ) from None
        except ValueError as e:
            raise data_error(p, f"cannot read .npz entry ({e})", "re-generate it") from None
        bundle = ArrayBundle(p, arrays)
    bundle.require(*required)
    return bundle


def npz_shape(path: str | Path, key: str) -> tuple[int, ...]:
    """Shape of entry `key` of an `.npz` (or of `<key>.npy` in a folder) read from its header only."""
    p = Path(path)
    try:
        if p.is_dir():
            f = p / f"{key}.npy"
            if not f.is_file():
                raise data_error(p, f"missing array {key}.npy", "the folder was written by another tool")
            with open(f, "rb") as fh:
                return _npy_header_shape(fh, f)
        with zipfile.ZipFile(p) as zf:
            name = f"{key}.npy"
            if name not in zf.namelist():
                keys = ", ".join(sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy")))
                raise data_error(
                    p,
                    f"missing key {key!r} (keys present: {keys or 'none'})",
                    "the file was written by another tool",
                )
            with zf.open(name) as fh:
                return _npy_header_shape(fh, p)
    except DataError:
        raise
    except FileNotFoundError:
        raise data_error(p, "file not found", "check the dataset layout") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise data_error(
            p, f"truncated or corrupt .npz archive ({type(e).__name__}: {e})", "re-download or re-generate it"
        ) from None


def _npy_header_shape(fh: Any, where: Path) -> tuple[int, ...]:
    try:
        version = np.lib.format.read_magic(fh)
        reader = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, _ = reader(fh)
    except ValueError as e:
        raise data_error(where, f"corrupt .npy header ({e})", "re-generate it") from None
    return tuple(shape)


def _load_npy(path: Path, object_of_bytes: bool) -> np.ndarray:
    data = read_bytes(path)
    if not data.startswith(NPY_MAGIC):
        raise data_error(path, f"wrong magic number {data[:6]!r} (expected '\\x93NUMPY')", "not a .npy file")
    return read_npy(data, path, object_of_bytes=object_of_bytes)


def check_size(path: Path | str, arr: np.ndarray, height: int, width: int, what: str) -> np.ndarray:
    """DataError unless the first two dims of `arr` are (height, width); returns `arr`."""
    if arr.shape[:2] != (height, width):
        raise data_error(
            path,
            f"{what} is {arr.shape[1]}x{arr.shape[0]} (WxH) but the frames are {width}x{height}",
            "the dataset files do not match",
        )
    return arr


def check_shape(
    path: Path | str, key: str, arr: np.ndarray, shape: Sequence[int | None], meaning: str
) -> None:
    """DataError unless `arr` has len(shape) dims and matches the non-None entries of `shape`."""
    ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
    if not ok:
        want = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
        raise data_error(path, f"{key} has shape {list(arr.shape)}, expected {want} ({meaning})")


# ----------------------------------------------------------------------------------------------
# Geometry


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Invert rigid transforms [..., 4, 4] (or [..., 3, 4], completed) -> [..., 4, 4] float64."""
    T = np.asarray(T, dtype=np.float64)
    R, t = T[..., :3, :3], T[..., :3, 3]
    out = np.zeros(T.shape[:-2] + (4, 4))
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def quat_to_matrix(q: np.ndarray, order: str) -> np.ndarray:
    """Unit quaternions [..., 4] in `order` "xyzw" or "wxyz" -> rotation matrices [..., 3, 3].

    The quaternion is normalised first (a zero quaternion gives a DataError upstream via NaN).
    """
    q = np.asarray(q, dtype=np.float64)
    if order == "xyzw":
        x, y, z, w = np.moveaxis(q, -1, 0)
    elif order == "wxyz":
        w, x, y, z = np.moveaxis(q, -1, 0)
    else:
        raise InputError(f"quaternion order must be 'xyzw' or 'wxyz', got {order!r}")
    n = np.sqrt(w * w + x * x + y * y + z * z)
    n = np.where(n > 0, n, np.nan)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Pixel-unit K [3, 3] float64."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def shift_principal_point(Kmat: np.ndarray, offset: float) -> np.ndarray:
    """Add `offset` pixels to cx, cy of K [..., 3, 3] (0.5 converts OpenCV-convention K to l4p's)."""
    K2 = np.array(Kmat, dtype=np.float64, copy=True)
    K2[..., 0, 2] += offset
    K2[..., 1, 2] += offset
    return K2


# ----------------------------------------------------------------------------------------------
# Clips and samples


def frame_indices(
    num_frames: int, *, start: int = 0, frame_stride: int = 1, max_frames: int | None = None
) -> np.ndarray:
    """Frames kept of a sequence: range(start, num_frames, frame_stride)[:max_frames]."""
    if frame_stride < 1 or start < 0 or (max_frames is not None and max_frames < 1):
        raise InputError(
            f"need frame_stride >= 1, start >= 0, max_frames >= 1; got {frame_stride}, {start}, {max_frames}"
        )
    idx = np.arange(start, num_frames, frame_stride)
    return idx[:max_frames] if max_frames is not None else idx


def clip_windows(frames: np.ndarray, clip_len: int | None, clip_stride: int | None) -> list[np.ndarray]:
    """Split kept frame indices into windows of `clip_len` (None: one window with all frames).

    Windows start every `clip_stride` kept frames (default `clip_len`: no overlap); a sequence
    shorter than `clip_len` gives no window.
    """
    if clip_len is None:
        return [frames] if len(frames) else []
    if clip_len < 1 or (clip_stride is not None and clip_stride < 1):
        raise InputError(f"clip_len and clip_stride must be >= 1, got {clip_len}, {clip_stride}")
    step = clip_stride or clip_len
    return [frames[s : s + clip_len] for s in range(0, len(frames) - clip_len + 1, step)]


class SequenceDataset(torch.utils.data.Dataset):
    """Base of the readers: sequences of frames cut into clips; `load` builds one sample.

    Options shared by every reader (all optional):

    - ``start``, ``frame_stride``, ``max_frames``: which frames of a sequence are kept;
    - ``clip_len``, ``clip_stride``: cut the kept frames into clips (default: whole sequence);
    - ``size`` (H', W') and ``resize_mode`` ("letterbox" | "crop" | "squash"): resize every
      sample with `l4p_framework.data.video.fit_to_size`, updating intrinsics and tracks.

    An option no reader class takes raises InputError listing those it does (`option_names`).
    """

    dataset_name = "dataset"

    def __init__(
        self,
        *,
        start: int = 0,
        frame_stride: int = 1,
        max_frames: int | None = None,
        clip_len: int | None = None,
        clip_stride: int | None = None,
        size: Sequence[int] | None = None,
        resize_mode: str = "squash",
        **unknown: Any,
    ):
        if unknown:
            raise InputError(
                f"dataset {self.dataset_name!r} does not take the options {sorted(unknown)}; it takes "
                f"{', '.join(self.option_names())} (see the reader's docstring)"
            )
        self.start, self.frame_stride, self.max_frames = int(start), int(frame_stride), max_frames
        self.clip_len, self.clip_stride = clip_len, clip_stride
        if size is not None and (len(size) != 2 or min(int(s) for s in size) < 1):
            raise InputError(f"size must be (H, W) with positive ints, got {size!r}")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        if resize_mode not in ("letterbox", "crop", "squash"):
            raise InputError(f"resize_mode must be 'letterbox', 'crop' or 'squash', got {resize_mode!r}")
        self.resize_mode = resize_mode
        self.items: list[tuple[int, np.ndarray]] = []
        self.sequence_names: list[str] = []

    @classmethod
    def option_names(cls) -> list[str]:
        """The keyword options of `cls(split, **options)`: the reader's own, then the shared ones."""
        names: list[str] = []
        for klass in cls.__mro__[: cls.__mro__.index(SequenceDataset) + 1]:
            init = vars(klass).get("__init__")
            if init is not None:
                params = inspect.signature(init).parameters.values()
                names += [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in names]
        return names

    def _index(self, names: Sequence[str], lengths: Sequence[int]) -> None:
        """Build the clip list from sequence names and their frame counts."""
        self.sequence_names = list(names)
        self.items = []
        for i, n in enumerate(lengths):
            kept = frame_indices(
                n, start=self.start, frame_stride=self.frame_stride, max_frames=self.max_frames
            )
            self.items += [(i, w) for w in clip_windows(kept, self.clip_len, self.clip_stride)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.dataset_name}: index {index} out of range for {len(self)} clips")
        seq, frames = self.items[index]
        sample = self.load(seq, frames)
        name = self.sequence_names[seq]
        whole = (
            self.clip_len is None and self.start == 0 and self.frame_stride == 1 and self.max_frames is None
        )
        sample["name"] = name if whole else f"{name}[{frames[0]}:{frames[-1] + 1}:{self.frame_stride}]"
        if self.size is not None:
            sample = resize_sample(sample, self.size, self.resize_mode)
        return sample

    def load(self, seq: int, frames: np.ndarray) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


def video_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 (3, T, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div_(255.0)


def dense_tensor(arr: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[T, H, W] -> (1, T, H, W) or [T, H, W, C] -> (C, T, H, W)."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t.unsqueeze(0) if t.ndim == 3 else t.permute(3, 0, 1, 2)
    return t.to(dtype)


def forward_flow_sample(
    flow_fwd: np.ndarray, valid: np.ndarray, reverse_time: bool
) -> dict[str, torch.Tensor]:
    """Sample keys for per-frame forward flow t -> t+1 of the clip ([T, H, W, 2], [T, H, W] bool).

    The last frame's flow must already be zero/invalid (it would point outside the clip).
    Natural order: "flow_forward" (2, T, H, W) and the extra key "flow_forward_valid" (1, T, H, W).
    reverse_time (the caller reversed the frames): forward flow of the original order is
    backward flow (t -> t-1) of the reversed clip: "flow" and "flow_valid", frame 0 invalid.
    """
    if reverse_time:
        return {K.FLOW: dense_tensor(flow_fwd[::-1]), K.FLOW_VALID: dense_tensor(valid[::-1], torch.bool)}
    return {K.FLOW_FORWARD: dense_tensor(flow_fwd), "flow_forward_valid": dense_tensor(valid, torch.bool)}


def subsample_points(n: int, max_points: int | None, seed: int) -> np.ndarray:
    """Indices of at most `max_points` of `n` points, drawn without replacement (sorted)."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_points, replace=False))


def queries_first(tracks: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TAP-Vid "first" query mode: each point queried at its first visible frame.

    tracks [N, T, 2] pixels, visible [N, T] bool -> (queries [M, 3] as (t, x, y), kept indices
    [M]); points never visible are dropped.
    """
    keep = np.flatnonzero(visible.any(axis=1))
    t = visible[keep].argmax(axis=1)
    xy = tracks[keep, t]
    return np.concatenate([t[:, None].astype(np.float32), xy.astype(np.float32)], axis=1), keep


def queries_strided(
    tracks: np.ndarray, visible: np.ndarray, stride: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """TAP-Vid "strided" query mode: every point visible at frame t = 0, stride, 2*stride, ...

    Returns (queries [M, 3] (t, x, y), point index of each query [M]); a point can be queried
    several times (its track is then repeated by the caller).
    """
    qs, idx = [], []
    for t in range(0, visible.shape[1], stride):
        pts = np.flatnonzero(visible[:, t])
        idx.append(pts)
        qs.append(
            np.concatenate([np.full((len(pts), 1), t, np.float32), tracks[pts, t].astype(np.float32)], 1)
        )
    if not qs:
        return np.zeros((0, 3), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(qs), np.concatenate(idx)


def track_sample(
    tracks: np.ndarray,
    visible: np.ndarray,
    query_mode: str,
    *,
    query_stride: int = 5,
    tracks_3d: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """Sample keys queries/tracks/visibility(/tracks_3d/track_depth) from tracks [N, T, 2] px,
    visible [N, T] bool and optional camera-frame points [N, T, 3]."""
    if query_mode == "first":
        queries, idx = queries_first(tracks, visible)
    elif query_mode == "strided":
        queries, idx = queries_strided(tracks, visible, query_stride)
    else:
        raise InputError(f"query_mode must be 'first' or 'strided', got {query_mode!r}")
    out = {
        K.QUERIES: torch.from_numpy(queries).float(),
        K.TRACKS: torch.from_numpy(np.ascontiguousarray(tracks[idx])).float(),
        K.VISIBILITY: torch.from_numpy(np.ascontiguousarray(visible[idx])).bool(),
    }
    if tracks_3d is not None:
        pts = torch.from_numpy(np.ascontiguousarray(tracks_3d[idx])).float()
        out[K.TRACKS_3D] = pts
        out[K.TRACK_DEPTH] = pts[..., 2].clone()
    return out


def project(points: np.ndarray, Kmat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project camera-frame points [..., 3] with K [3, 3] (or broadcastable [..., 3, 3]).

    Returns (pixels [..., 2], in_front [...] bool = Z > 0); pixels of points with Z <= 0 are 0.
    """
    z = points[..., 2]
    front = z > 1e-9
    safe = np.where(front, z, 1.0)
    x = points[..., 0] / safe
    y = points[..., 1] / safe
    u = Kmat[..., 0, 0] * x + Kmat[..., 0, 1] * y + Kmat[..., 0, 2]
    v = Kmat[..., 1, 1] * y + Kmat[..., 1, 2]
    uv = np.stack([u, v], -1)
    uv[~front] = 0.0
    return uv, front


def inside_frame(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """[..., 2] pixel coords (corner origin) -> bool [...] inside [0, W) x [0, H)."""
    return (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)


# ----------------------------------------------------------------------------------------------
# Resizing a whole sample


_NEAREST_DENSE = (K.DEPTH, K.DEPTH_VALID, K.FLOW_VALID, K.NORMALS, K.MOTION_MASK, "flow_forward_valid")


def resize_sample(sample: dict[str, Any], size: tuple[int, int], mode: str) -> dict[str, Any]:
    """Resize every spatial key of an l4p sample to `size` (H', W') with `fit_to_size`.

    video: bilinear (antialiased when shrinking); depth, masks, normals: nearest (no mixing of
    invalid zeros); flows: nearest and vectors scaled by (sx, sy); intrinsics and 2D tracks and
    queries: mapped by the FrameTransform; visibility also requires the point to stay inside the
    output, and queries outside it (crop mode) are dropped with their tracks. 3D values are
    unchanged.
    """
    from ..video import fit_to_size

    out = dict(sample)
    video, tf = fit_to_size(sample[K.VIDEO], size, mode)
    out[K.VIDEO] = video
    for key in _NEAREST_DENSE:
        if key in sample:
            out[key] = tf.apply(sample[key], interpolation="nearest")
    for key in (K.FLOW, K.FLOW_FORWARD):
        if key in sample:
            flow = tf.apply(sample[key], interpolation="nearest")
            scale = torch.tensor(tf.scale, dtype=flow.dtype).view(2, 1, 1, 1)
            out[key] = flow * scale
    if K.INTRINSICS in sample:
        out[K.INTRINSICS] = tf.apply_to_intrinsics(sample[K.INTRINSICS])
    if K.TRACKS in sample:
        tracks = tf.map_points(sample[K.TRACKS])
        out[K.TRACKS] = tracks
        if K.VISIBILITY in sample:
            h, w = size
            inside = (
                (tracks[..., 0] >= 0) & (tracks[..., 0] < w) & (tracks[..., 1] >= 0) & (tracks[..., 1] < h)
            )
            out[K.VISIBILITY] = sample[K.VISIBILITY] & inside
    if K.QUERIES in sample:
        q = sample[K.QUERIES].clone()
        q[:, 1:] = tf.map_points(q[:, 1:])
        out[K.QUERIES] = q
        h, w = size
        keep = (q[:, 1] >= 0) & (q[:, 1] < w) & (q[:, 2] >= 0) & (q[:, 2] < h)
        if not bool(keep.all()):  # crop mode: queries cut off by the crop are dropped
            for key in K.QUERY_KEYS:
                if key in out and out[key].shape[0] == q.shape[0]:
                    out[key] = out[key][keep]
    return out
