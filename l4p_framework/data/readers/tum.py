"""TUM RGB-D (incl. the dynamic-objects sequences) and Bonn RGB-D Dynamic.

Layout of one sequence folder::

    rgb/<timestamp>.png      depth/<timestamp>.png (uint16, d = v / 5000 m, 0 invalid)
    rgb.txt, depth.txt       lines ``timestamp filename`` ('#' starts a comment)
    groundtruth.txt          lines ``timestamp tx ty tz qx qy qz qw``

Each RGB frame is associated with the depth image and the ground-truth pose whose timestamps
are nearest, if within max_dt (0.02 s); frames lacking a depth match (or a pose match when
groundtruth.txt exists) are dropped. The ground truth is the pose of the colour camera's
optical centre in the world (camera-to-world; optical frame x right, y down, z forward), which
is l4p's convention, so poses are used as they are.

Intrinsics are not in the files: they are taken from the sequence name (freiburg1/2/3: TUM's
published calibration; rgbd_bonn_*: Bonn's), or from the ``intrinsics=(fx, fy, cx, cy)``
option, plus pixel_offset (0.5 by default: these calibrations use the OpenCV convention).
Sequences with unknown intrinsics have no ``intrinsics`` key. Benchmarks: MonST3R/CUT3R pose
protocol = first 90 frames at stride 3 (frame_stride=3, max_frames=90); Bonn depth protocol =
frames 30-140 (start=30, max_frames=110).
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
    list_dirs,
    quat_to_matrix,
    read_bytes,
    read_png_u16,
    read_rgb,
    require_dir,
    video_tensor,
)

SPLITS = ("val", "test")
PROVIDES = (K.VIDEO, K.DEPTH, K.DEPTH_VALID, K.POSES, K.INTRINSICS)

KNOWN_INTRINSICS = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
    "bonn": (542.822841, 542.576870, 315.593520, 237.756098),
}
"""(fx, fy, cx, cy) in the OpenCV convention, matched against the sequence folder name."""


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    text = read_bytes(path).decode("utf-8", errors="replace")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((n, line.split()))
    return out


def read_tum_list(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read rgb.txt / depth.txt -> (timestamps float64 [M], file names relative to the folder)."""
    p = Path(path)
    stamps, names = [], []
    for n, fields in _lines(p):
        if len(fields) != 2:
            raise data_error(
                p, f"line {n}: expected 'timestamp filename', got {len(fields)} fields", "the file is corrupt"
            )
        try:
            stamps.append(float(fields[0]))
        except ValueError:
            raise data_error(
                p, f"line {n}: timestamp {fields[0]!r} is not a number", "the file is corrupt"
            ) from None
        names.append(fields[1])
    return np.array(stamps, dtype=np.float64), names


def read_tum_groundtruth(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read groundtruth.txt -> (timestamps float64 [M], camera-to-world poses float64 [M, 4, 4])."""
    p = Path(path)
    rows = []
    for n, fields in _lines(p):
        if len(fields) != 8:
            raise data_error(
                p,
                f"line {n}: expected 8 fields 'timestamp tx ty tz qx qy qz qw', got {len(fields)}",
                "the file is corrupt",
            )
        try:
            rows.append([float(v) for v in fields])
        except ValueError:
            raise data_error(
                p, f"line {n}: non-numeric value in {' '.join(fields)!r}", "the file is corrupt"
            ) from None
    arr = np.array(rows, dtype=np.float64).reshape(-1, 8)
    poses = np.tile(np.eye(4), (len(arr), 1, 1))
    poses[:, :3, :3] = quat_to_matrix(arr[:, 4:8], "xyzw")
    poses[:, :3, 3] = arr[:, 1:4]
    if not np.isfinite(poses).all():
        raise data_error(p, "a quaternion has zero norm or a value is not finite", "the file is corrupt")
    return arr[:, 0], poses


def read_tum_depth(path: str | Path, scale: float = 5000.0) -> np.ndarray:
    """TUM/Bonn depth PNG -> float32 [H, W] metres (v / scale; 0 = invalid)."""
    return read_png_u16(path).astype(np.float32) / float(scale)


def associate(query: np.ndarray, reference: np.ndarray, max_dt: float = 0.02) -> np.ndarray:
    """For each query timestamp the index of the nearest reference timestamp, -1 if > max_dt away."""
    query, reference = np.asarray(query, np.float64), np.asarray(reference, np.float64)
    if len(reference) == 0:
        return np.full(len(query), -1)
    order = np.argsort(reference)
    ref = reference[order]
    pos = np.clip(np.searchsorted(ref, query), 1, len(ref) - 1) if len(ref) > 1 else np.zeros(len(query), int)
    left = np.maximum(pos - 1, 0)
    pick = np.where(np.abs(ref[left] - query) <= np.abs(ref[pos] - query), left, pos)
    ok = np.abs(ref[pick] - query) <= max_dt
    return np.where(ok, order[pick], -1)


class TumDataset(SequenceDataset):
    """TUM RGB-D / Bonn sequences.

    root: one sequence folder (holding rgb.txt) or a folder of them; sequences: names to keep.
    Options: intrinsics (fx, fy, cx, cy) override, depth_scale (5000), max_dt (0.02 s),
    pixel_offset (0.5), clip/resize options. Samples: video, depth, depth_valid, [poses],
    [intrinsics], name.
    """

    dataset_name = "tum"

    def __init__(
        self,
        split: str = "test",
        *,
        root: str | Path | None = None,
        sequences: list[str] | None = None,
        intrinsics: tuple[float, float, float, float] | None = None,
        depth_scale: float = 5000.0,
        max_dt: float = 0.02,
        pixel_offset: float = 0.5,
        **options: Any,
    ):
        check_split(self.dataset_name, split, SPLITS)
        super().__init__(**options)
        base = require_dir(self.dataset_name, root)
        dirs = (
            [base]
            if (base / "rgb.txt").is_file()
            else [d for d in list_dirs(base) if (d / "rgb.txt").is_file()]
        )
        if sequences is not None:
            dirs = [d for d in dirs if d.name in set(sequences)]
        if not dirs:
            raise data_error(
                base,
                "no sequence folder with rgb.txt found",
                "point root at a TUM sequence or a folder of them",
            )
        if intrinsics is not None and len(intrinsics) != 4:
            raise InputError(f"intrinsics must be (fx, fy, cx, cy), got {intrinsics!r}")
        self.depth_scale = float(depth_scale)
        self.seqs: list[dict[str, Any]] = []
        for d in dirs:
            rgb_t, rgb_f = read_tum_list(d / "rgb.txt")
            if not (d / "depth.txt").is_file():
                raise data_error(d / "depth.txt", "file not found", "every TUM sequence has depth.txt")
            dep_t, dep_f = read_tum_list(d / "depth.txt")
            di = associate(rgb_t, dep_t, max_dt)
            keep = di >= 0
            poses = None
            if (d / "groundtruth.txt").is_file():
                gt_t, gt_poses = read_tum_groundtruth(d / "groundtruth.txt")
                gi = associate(rgb_t, gt_t, max_dt)
                keep &= gi >= 0
                poses = gt_poses[gi[keep]]
            idx = np.flatnonzero(keep)
            fxyc = intrinsics
            if fxyc is None:
                name = d.name.lower()
                fxyc = next((v for k, v in KNOWN_INTRINSICS.items() if k in name), None)
            Kmat = None
            if fxyc is not None:
                fx, fy, cx, cy = (float(v) for v in fxyc)
                Kmat = np.array(
                    [[fx, 0, cx + pixel_offset], [0, fy, cy + pixel_offset], [0, 0, 1]], np.float64
                )
            self.seqs.append(
                {
                    "dir": d,
                    "rgb": [rgb_f[i] for i in idx],
                    "depth": [dep_f[di[i]] for i in idx],
                    "poses": poses,
                    "K": Kmat,
                }
            )
        self._index([s["dir"].name for s in self.seqs], [len(s["rgb"]) for s in self.seqs])

    def load(self, seq: int, frames: np.ndarray) -> dict[str, Any]:
        s = self.seqs[seq]
        rgb = np.stack([read_rgb(s["dir"] / s["rgb"][i]) for i in frames])
        H, W = rgb.shape[1:3]
        depth = np.stack(
            [
                check_size(f, read_tum_depth(f, self.depth_scale), H, W, "depth")
                for f in (s["dir"] / s["depth"][i] for i in frames)
            ]
        )
        sample: dict[str, Any] = {
            K.VIDEO: video_tensor(rgb),
            K.DEPTH: dense_tensor(depth),
            K.DEPTH_VALID: dense_tensor(depth > 0, torch.bool),
        }
        if s["poses"] is not None:
            sample[K.POSES] = torch.from_numpy(s["poses"][frames]).float()
        if s["K"] is not None:
            sample[K.INTRINSICS] = torch.from_numpy(
                np.broadcast_to(s["K"], (len(frames), 3, 3)).copy()
            ).float()
        return sample


def spec() -> DatasetSpec:
    return DatasetSpec(
        name="tum",
        build=lambda split="test", **options: TumDataset(split, **options),
        provides=PROVIDES,
        splits=SPLITS,
        description="TUM RGB-D / Bonn sequences (depth / 5000, camera-to-world GT poses)",
    )
