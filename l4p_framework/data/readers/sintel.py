"""MPI Sintel (+ the depth/camera package): frames, forward optical flow, depth, cameras.

Layout under root (the flow and depth packages merged into one tree)::

    training/{clean,final}/<scene>/frame_%04d.png      1024 x 436 RGB
    training/flow/<scene>/frame_%04d.flo               forward flow frame i -> i+1 (none for the last)
    training/depth/<scene>/frame_%04d.dpt              z-depth
    training/camdata_left/<scene>/frame_%04d.cam       K and world-to-camera [R|t]
    test/{clean,final}/<scene>/frame_%04d.png          (no ground truth)

Binary formats (little-endian): ``.flo``: float32 tag 202021.25, int32 W, int32 H, float32
[H, W, 2] (u, v). ``.dpt``: the same tag, W, H, float32 [H, W]. ``.cam``: the tag, 9 float64 K
(3 x 3, row-major) and 12 float64 [R|t] (3 x 4, world-to-camera).

Conversion to l4p: depth is used as z-depth (valid: finite and > 0); poses = inverse of the
world-to-camera matrices; intrinsics: K with pixel_offset (0.5 by default: Sintel's K puts
the principal point at ((W-1)/2, (H-1)/2), the integer-pixel-centre convention) added to cx, cy.

Flow: Sintel's ground truth is FORWARD flow (t -> t+1); backward flow is not provided. By
default samples carry ``flow_forward`` (2, T, H, W), the clip's last frame zero, plus the extra
key ``flow_forward_valid`` (1, T, H, W) (False on the last frame); the canonical ``flow`` key is
absent. With reverse_time=True the clip's frames (and every per-frame key) are reversed, which
turns that forward flow into l4p's backward flow: samples then carry ``flow`` and ``flow_valid``
(frame 0 invalid) and no ``flow_forward``. Flow keys need frame_stride == 1 (flow only links
consecutive frames); with a larger stride they are omitted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import batch as K
from ...errors import InputError
from ...specs import DatasetSpec
from ._common import (
    SequenceDataset,
    check_size,
    check_split,
    data_error,
    dense_tensor,
    forward_flow_sample,
    invert_rigid,
    list_dirs,
    list_files,
    read_bytes,
    read_rgb,
    require_dir,
    shift_principal_point,
    video_tensor,
)

TAG_FLOAT = 202021.25
TAG_BYTES = np.array([TAG_FLOAT], dtype="<f4").tobytes()  # b"PIEH"
SPLITS = ("train", "test")
PROVIDES = (K.VIDEO, K.DEPTH, K.DEPTH_VALID, K.FLOW_FORWARD, K.INTRINSICS, K.POSES)
_MAX_PIXELS = 100_000_000


def _read_tagged(path: str | Path, kind: str) -> tuple[Path, bytes]:
    p = Path(path)
    data = read_bytes(p)
    if len(data) < 4:
        raise data_error(
            p,
            f"truncated {kind} file ({len(data)} bytes, shorter than the 4-byte tag)",
            "re-extract the dataset",
        )
    if data[:4] != TAG_BYTES:
        tag = float(np.frombuffer(data[:4], "<f4")[0])
        raise data_error(
            p,
            f"wrong magic number {tag!r} (expected {TAG_FLOAT}, bytes 'PIEH')",
            f"not a Sintel {kind} file, or big-endian",
        )
    return p, data


def _read_grid(path: str | Path, kind: str, channels: int) -> np.ndarray:
    p, data = _read_tagged(path, kind)
    if len(data) < 12:
        raise data_error(p, f"truncated {kind} header ({len(data)} bytes, need 12)", "re-extract the dataset")
    w, h = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    if w <= 0 or h <= 0 or w * h > _MAX_PIXELS:
        raise data_error(p, f"invalid size W={w}, H={h} in the header", "the file is corrupt")
    need = 12 + 4 * w * h * channels
    if len(data) < need:
        raise data_error(
            p,
            f"truncated: {len(data)} bytes, expected {need} for {w}x{h}x{channels} float32",
            "re-extract the dataset",
        )
    if len(data) > need:
        raise data_error(
            p,
            f"{len(data) - need} unexpected trailing bytes after {w}x{h}x{channels} float32 data",
            "the file is corrupt",
        )
    arr = np.frombuffer(data, "<f4", count=w * h * channels, offset=12).astype(np.float32)
    return arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)


def read_flo(path: str | Path) -> np.ndarray:
    """Read a Middlebury/Sintel ``.flo`` file -> float32 [H, W, 2] (u, v) pixels."""
    return _read_grid(path, ".flo", 2)


def read_dpt(path: str | Path) -> np.ndarray:
    """Read a Sintel ``.dpt`` depth file -> float32 [H, W]."""
    return _read_grid(path, ".dpt", 1)


def read_cam(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a Sintel ``.cam`` file -> (K float64 [3, 3], world-to-camera [R|t] float64 [3, 4]).

    K is returned exactly as stored (integer-pixel-centre convention; the dataset adds 0.5).
    """
    p, data = _read_tagged(path, ".cam")
    need = 4 + 8 * 21
    if len(data) != need:
        problem = "truncated" if len(data) < need else "unexpected trailing bytes"
        raise data_error(
            p, f"{problem}: {len(data)} bytes, expected {need} (tag + 21 float64)", "re-extract the dataset"
        )
    vals = np.frombuffer(data, "<f8", count=21, offset=4)
    return vals[:9].reshape(3, 3).copy(), vals[9:].reshape(3, 4).copy()


def _write_grid(path: str | Path, arr: np.ndarray) -> None:
    arr = np.asarray(arr, dtype="<f4")
    h, w = arr.shape[:2]
    Path(path).write_bytes(TAG_BYTES + np.array([w, h], "<i4").tobytes() + arr.tobytes())


def write_flo(path: str | Path, flow: np.ndarray) -> None:
    """Write float [H, W, 2] (u, v) as a ``.flo`` file."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise InputError(f"write_flo needs [H, W, 2], got {flow.shape}")
    _write_grid(path, flow)


def write_dpt(path: str | Path, depth: np.ndarray) -> None:
    """Write float [H, W] as a ``.dpt`` file."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise InputError(f"write_dpt needs [H, W], got {depth.shape}")
    _write_grid(path, depth)


def write_cam(path: str | Path, Kmat: np.ndarray, w2c: np.ndarray) -> None:
    """Write K [3, 3] and world-to-camera [R|t] [3, 4] (or [4, 4]) as a ``.cam`` file."""
    Kmat, w2c = np.asarray(Kmat, "<f8"), np.asarray(w2c, "<f8")[:3]
    if Kmat.shape != (3, 3) or w2c.shape != (3, 4):
        raise InputError(f"write_cam needs K [3, 3] and [R|t] [3, 4], got {Kmat.shape} and {w2c.shape}")
    Path(path).write_bytes(TAG_BYTES + Kmat.tobytes() + w2c.tobytes())


class SintelDataset(SequenceDataset):
    """MPI Sintel clips.

    Options: render_pass "clean" | "final", scenes (list of scene names, default all),
    reverse_time (False; see the module docstring), pixel_offset (0.5), and the clip/resize
    options. Keys present depend on the folders found for a scene (depth/, camdata_left/,
    flow/; none for the test split). Samples: video, [depth, depth_valid], [intrinsics, poses],
    [flow_forward + flow_forward_valid | flow + flow_valid], name.
    """

    dataset_name = "sintel"

    def __init__(
        self,
        split: str = "train",
        *,
        root: str | Path | None = None,
        render_pass: str = "clean",
        scenes: list[str] | None = None,
        reverse_time: bool = False,
        pixel_offset: float = 0.5,
        **options: Any,
    ):
        check_split(self.dataset_name, split, SPLITS)
        if render_pass not in ("clean", "final"):
            raise InputError(f"render_pass must be 'clean' or 'final', got {render_pass!r}")
        super().__init__(**options)
        base = require_dir(self.dataset_name, root) / ("training" if split == "train" else "test")
        frames_dir = base / render_pass
        if not frames_dir.is_dir():
            raise data_error(
                frames_dir,
                "folder not found",
                f"root must hold {'training' if split == 'train' else 'test'}/{render_pass}/<scene>/",
            )
        dirs = list_dirs(frames_dir)
        if scenes is not None:
            missing = sorted(set(scenes) - {d.name for d in dirs})
            if missing:
                raise InputError(
                    f"{frames_dir}: no scene(s) {', '.join(missing)}; "
                    f"available: {', '.join(d.name for d in dirs)}"
                )
            dirs = [d for d in dirs if d.name in set(scenes)]
        self.base, self.reverse_time, self.pixel_offset = base, bool(reverse_time), float(pixel_offset)
        self.frame_files = [list_files(d, (".png",)) for d in dirs]
        for d, files in zip(dirs, self.frame_files):
            if not files:
                raise data_error(d, "scene folder holds no frame_%04d.png images", "re-extract the dataset")
        self._index([d.name for d in dirs], [len(f) for f in self.frame_files])

    def load(self, seq: int, frames: np.ndarray) -> dict[str, Any]:
        scene = self.sequence_names[seq]
        files = [self.frame_files[seq][i] for i in frames]
        order = slice(None, None, -1) if self.reverse_time else slice(None)
        sample: dict[str, Any] = {K.VIDEO: video_tensor(np.stack([read_rgb(f) for f in files])[order])}
        stems = [f.stem for f in files]
        H, W = sample[K.VIDEO].shape[-2:]
        depth_dir = self.base / "depth" / scene
        if depth_dir.is_dir():
            depth = np.stack(
                [check_size(f, read_dpt(f), H, W, "depth") for f in (depth_dir / f"{s}.dpt" for s in stems)]
            )[order]
            valid = np.isfinite(depth) & (depth > 0)
            sample[K.DEPTH] = dense_tensor(np.where(valid, depth, 0.0))
            sample[K.DEPTH_VALID] = dense_tensor(valid, torch.bool)
        cam_dir = self.base / "camdata_left" / scene
        if cam_dir.is_dir():
            cams = [read_cam(cam_dir / f"{s}.cam") for s in stems]
            Ks = shift_principal_point(np.stack([c[0] for c in cams]), self.pixel_offset)[order]
            poses = invert_rigid(np.stack([c[1] for c in cams]))[order]
            sample[K.INTRINSICS] = torch.from_numpy(np.ascontiguousarray(Ks)).float()
            sample[K.POSES] = torch.from_numpy(np.ascontiguousarray(poses)).float()
        flow_dir = self.base / "flow" / scene
        if flow_dir.is_dir() and self.frame_stride == 1:
            flow = np.zeros((len(stems), H, W, 2), np.float32)
            valid = np.zeros((len(stems), H, W), bool)
            for j, s in enumerate(stems[:-1]):  # the clip's last frame: flow leaves the clip
                f = flow_dir / f"{s}.flo"
                flow[j] = check_size(f, read_flo(f), H, W, "flow")
                valid[j] = True
            sample.update(forward_flow_sample(flow, valid, self.reverse_time))
        return sample


def spec() -> DatasetSpec:
    return DatasetSpec(
        name="sintel",
        build=lambda split="train", **options: SintelDataset(split, **options),
        provides=PROVIDES,
        splits=SPLITS,
        description="MPI Sintel (+depth/camera package): forward flow, z-depth, K, poses",
    )
