"""PointOdyssey: synthetic long videos with 2D/3D point tracks, depth and cameras.

Layout::

    <root>/<split>/<seq>/rgbs/rgb_%05d.jpg
    <root>/<split>/<seq>/depths/depth_%05d.png     uint16, d = v / 65535 * 1000 metres
    <root>/<split>/<seq>/anno.npz                  (raw Blender output: annotations.npz)

``anno.npz``: ``trajs_2d`` [T, N, 2] pixels, ``trajs_3d`` [T, N, 3] world coordinates,
``visibs`` [T, N] and ``valids`` [T, N] (older releases: ``visibilities`` with 0 = occluded,
1 = visible, 2 = invalid), ``intrinsics`` [T, 3, 3], ``extrinsics`` [T, 4, 4] world-to-camera.

Conversion to l4p: poses = inverse(extrinsics); tracks_3d = extrinsics @ trajs_3d (each
frame's camera frame), track_depth its Z; tracks = trajs_2d (+ pixel_offset, 0 by default:
the Blender-rendered intrinsics are assumed to use l4p's corner-origin convention, with the
same offset added to cx, cy); visibility = visible & valid & finite & inside the frame;
queries: "first" mode (points never visible in the clip are dropped), at most `max_points`
points drawn at random (seeded per clip). Depth is used as z-depth; 0 and the saturated value
65535 are marked invalid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import batch as K
from ...specs import DatasetSpec
from ._common import (
    SequenceDataset,
    check_shape,
    check_size,
    check_split,
    data_error,
    dense_tensor,
    inside_frame,
    invert_rigid,
    list_dirs,
    list_files,
    load_arrays,
    read_png_u16,
    read_rgb,
    require_dir,
    shift_principal_point,
    subsample_points,
    track_sample,
    video_tensor,
)

SPLITS = ("train", "val", "test", "sample")
PROVIDES = (
    K.VIDEO,
    K.DEPTH,
    K.DEPTH_VALID,
    K.INTRINSICS,
    K.POSES,
    K.QUERIES,
    K.TRACKS,
    K.VISIBILITY,
    K.TRACKS_3D,
    K.TRACK_DEPTH,
)


def read_pointodyssey_anno(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``anno.npz`` -> trajs_2d float32 [T, N, 2], trajs_3d float32 [T, N, 3] (world),
    visibs bool [T, N], valids bool [T, N], intrinsics float64 [T, 3, 3], extrinsics float64
    [T, 4, 4] (world-to-camera). Handles the older ``visibilities`` (0/1/2) encoding.
    """
    p = Path(path)
    b = load_arrays(p)
    b.require("trajs_2d", "trajs_3d", "intrinsics", "extrinsics")
    t2 = np.asarray(b["trajs_2d"], dtype=np.float32)
    check_shape(p, "trajs_2d", t2, (None, None, 2), "T, N, (x, y) pixels")
    T, N = t2.shape[:2]
    t3 = np.asarray(b["trajs_3d"], dtype=np.float32)
    check_shape(p, "trajs_3d", t3, (T, N, 3), "T, N, XYZ world")
    if "visibs" in b:
        vis = np.asarray(b["visibs"]).astype(bool)
        valid = np.asarray(b["valids"]).astype(bool) if "valids" in b else np.ones((T, N), bool)
    elif "visibilities" in b:
        code = np.asarray(b["visibilities"])
        vis, valid = code == 1, code != 2
    else:
        b.require("visibs")  # raises: names the file and the missing key
        raise AssertionError  # unreachable
    check_shape(p, "visibs", vis, (T, N), "T, N")
    check_shape(p, "valids", valid, (T, N), "T, N")
    intr = np.asarray(b["intrinsics"], dtype=np.float64)
    if intr.shape == (3, 3):
        intr = np.broadcast_to(intr, (T, 3, 3)).copy()
    check_shape(p, "intrinsics", intr, (T, 3, 3), "T, 3, 3")
    ext = np.asarray(b["extrinsics"], dtype=np.float64)
    check_shape(p, "extrinsics", ext, (T, 4, 4), "T, 4, 4 world-to-camera")
    return {
        "trajs_2d": t2,
        "trajs_3d": t3,
        "visibs": vis,
        "valids": valid,
        "intrinsics": intr,
        "extrinsics": ext,
    }


def read_pointodyssey_depth(path: str | Path) -> np.ndarray:
    """PointOdyssey depth PNG -> float32 [H, W] metres (v / 65535 * 1000; 0 and 65535 -> 0)."""
    raw = read_png_u16(path)
    d = raw.astype(np.float32) * (1000.0 / 65535.0)
    d[(raw == 0) | (raw == 65535)] = 0.0
    return d


class PointOdysseyDataset(SequenceDataset):
    """PointOdyssey clips.

    Options: max_points (None = all; sequences hold tens of thousands), seed (0), with_depth
    (True), pixel_offset (0.0), clip/resize options. Samples: video, [depth, depth_valid],
    intrinsics, poses, queries, tracks, visibility, tracks_3d, track_depth, name.
    """

    dataset_name = "pointodyssey"

    def __init__(
        self,
        split: str = "train",
        *,
        root: str | Path | None = None,
        max_points: int | None = None,
        seed: int = 0,
        with_depth: bool = True,
        pixel_offset: float = 0.0,
        **options: Any,
    ):
        check_split(self.dataset_name, split, SPLITS)
        super().__init__(**options)
        base = require_dir(self.dataset_name, root) / split
        if not base.is_dir():
            raise data_error(base, "folder not found", f"root must hold {split}/<seq>/rgbs and anno.npz")
        self.max_points, self.seed, self.with_depth, self.pixel_offset = (
            max_points,
            int(seed),
            bool(with_depth),
            float(pixel_offset),
        )
        self.dirs, self.rgb_files = [], []
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None
        for d in list_dirs(base):
            rgbs = list_files(d / "rgbs", (".jpg", ".jpeg", ".png")) if (d / "rgbs").is_dir() else []
            if rgbs:
                self.dirs.append(d)
                self.rgb_files.append(rgbs)
        if not self.dirs:
            raise data_error(base, "no sequences with rgbs/rgb_%05d.jpg", "check root and split")
        self._index([d.name for d in self.dirs], [len(f) for f in self.rgb_files])

    def _anno_path(self, d: Path) -> Path:
        for name in ("anno.npz", "annotations.npz"):
            if (d / name).is_file():
                return d / name
        raise data_error(
            d / "anno.npz", "file not found", "every sequence needs anno.npz (or annotations.npz)"
        )

    def _anno(self, seq: int) -> dict[str, np.ndarray]:
        """Annotations of sequence `seq`; the last one read is cached (anno.npz files are large)."""
        if self._cache is None or self._cache[0] != seq:
            self._cache = (seq, read_pointodyssey_anno(self._anno_path(self.dirs[seq])))
        return self._cache[1]

    def load(self, seq: int, frames: np.ndarray) -> dict[str, Any]:
        d = self.dirs[seq]
        rgb = np.stack([read_rgb(self.rgb_files[seq][i]) for i in frames])
        T, H, W = rgb.shape[:3]
        a = self._anno(seq)
        if a["trajs_2d"].shape[0] < frames[-1] + 1:
            raise data_error(
                self._anno_path(d),
                f"annotations cover {a['trajs_2d'].shape[0]} frames, rgbs/ has {len(self.rgb_files[seq])}",
            )
        o = self.pixel_offset
        ext = a["extrinsics"][frames]
        sample: dict[str, Any] = {
            K.VIDEO: video_tensor(rgb),
            K.INTRINSICS: torch.from_numpy(shift_principal_point(a["intrinsics"][frames], o)).float(),
            K.POSES: torch.from_numpy(invert_rigid(ext)).float(),
        }
        if self.with_depth and (d / "depths").is_dir():
            files = [
                d / "depths" / f"depth_{f.stem.split('_')[-1]}.png"
                for f in (self.rgb_files[seq][i] for i in frames)
            ]
            depth = np.stack([check_size(f, read_pointodyssey_depth(f), H, W, "depth") for f in files])
            sample[K.DEPTH] = dense_tensor(depth)
            sample[K.DEPTH_VALID] = dense_tensor(depth > 0, torch.bool)
        idx = subsample_points(
            a["trajs_2d"].shape[1], self.max_points, self.seed * 1_000_003 + seq * 7919 + int(frames[0])
        )
        t2 = a["trajs_2d"][frames][:, idx].astype(np.float64) + o  # T, n, 2
        w = a["trajs_3d"][frames][:, idx].astype(np.float64)  # T, n, 3 world
        cam = np.einsum("tij,tnj->tni", ext[:, :3, :3], w) + ext[:, None, :3, 3]
        finite = np.isfinite(t2).all(-1) & np.isfinite(cam).all(-1)
        vis = a["visibs"][frames][:, idx] & a["valids"][frames][:, idx] & finite & inside_frame(t2, H, W)
        t2 = np.where(finite[..., None], t2, 0.0)
        cam = np.where(finite[..., None], cam, 0.0)
        sample.update(
            track_sample(
                t2.transpose(1, 0, 2).astype(np.float32),
                vis.T,
                "first",
                tracks_3d=cam.transpose(1, 0, 2).astype(np.float32),
            )
        )
        return sample


def spec() -> DatasetSpec:
    return DatasetSpec(
        name="pointodyssey",
        build=lambda split="train", **options: PointOdysseyDataset(split, **options),
        provides=PROVIDES,
        splits=SPLITS,
        description="PointOdyssey (2D/3D tracks, depth, K, poses; root holds train/ val/ test/)",
    )
