"""KITTI: annotated depth (depth completion/prediction benchmark) and optical flow 2015.

Depth layout::

    <root>/{train,val}/<drive>/proj_depth/groundtruth/image_02/%010d.png    uint16, d = v / 256 m, 0 invalid
    <raw_root>/<date>/<drive>/image_02/data/%010d.png                        RGB (KITTI raw)
    <raw_root>/<date>/calib_cam_to_cam.txt                                   P_rect_02 (optional)

(``<date>`` is the drive name's first 10 characters; ``<raw_root>/<drive>/image_02/data`` and
``<root>/<split>/<drive>/image_02/data`` are looked up too.) The ground truth skips the first
and last 5 raw frames; RGB is read for the frames that have ground truth.

Flow 2015 layout::

    <root>/training/image_2/%06d_10.png, %06d_11.png       RGB pair
    <root>/training/flow_occ/%06d_10.png (or flow_noc/)    16-bit RGB PNG
    <root>/testing/image_2/...                              (no ground truth)

Flow PNG: 16-bit, 3 channels; in R, G, B order (what OpenCV calls BGR -> RGB) the channels
are (u, v, valid) with u = (value - 2**15) / 64. The flow is FORWARD, frame 10 -> frame 11.
Samples are 2-frame clips: by default video = [10, 11] with ``flow_forward`` (frame 0 = GT,
frame 1 zero) and the extra key ``flow_forward_valid``; with reverse_time=True video =
[11, 10] and the GT becomes l4p's backward flow ``flow`` / ``flow_valid`` at frame 1.

Intrinsics: P_rect_02[:, :3] with pixel_offset (0.5 by default: OpenCV convention) added.
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
    list_dirs,
    list_files,
    read_bytes,
    read_png_u16,
    read_png_u16_rgb,
    read_rgb,
    require_dir,
    shift_principal_point,
    video_tensor,
    write_png_u16,
)

DEPTH_SPLITS = ("train", "val")
FLOW_SPLITS = ("train", "test")


def read_kitti_depth_png(path: str | Path) -> np.ndarray:
    """KITTI depth PNG (uint16, v / 256 metres) -> float32 [H, W] metres, 0 where invalid."""
    return read_png_u16(path).astype(np.float32) / 256.0


def write_kitti_depth_png(path: str | Path, depth: np.ndarray) -> None:
    """Write float [H, W] metres (0 = invalid) as a KITTI depth PNG (round(d * 256), clipped)."""
    d = np.asarray(depth, dtype=np.float64)
    write_png_u16(path, np.clip(np.rint(np.nan_to_num(d) * 256.0), 0, 65535).astype(np.uint16))


def read_kitti_flow_png(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """KITTI flow PNG -> (flow float32 [H, W, 2] (u, v) pixels, valid bool [H, W]).

    Invalid pixels have flow 0.
    """
    raw = read_png_u16_rgb(path)
    valid = raw[..., 2] > 0
    flow = (raw[..., :2].astype(np.float32) - 2.0**15) / 64.0
    flow[~valid] = 0.0
    return flow, valid


def write_kitti_flow_png(path: str | Path, flow: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write flow [H, W, 2] and valid [H, W] (default all) as a KITTI flow PNG (R=u, G=v, B=valid)."""
    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise InputError(f"write_kitti_flow_png needs flow [H, W, 2], got {flow.shape}")
    valid = np.ones(flow.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    enc = np.clip(np.rint(flow * 64.0 + 2.0**15), 0, 65535).astype(np.uint16)
    write_png_u16(path, np.concatenate([enc, valid[..., None].astype(np.uint16)], axis=2))


def read_kitti_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Parse a KITTI calibration text file (``key: v1 v2 ...``) -> {key: float64 array}.

    Lines whose values are not all numbers (e.g. ``calib_time``) are skipped.
    """
    p = Path(path)
    text = read_bytes(p).decode("utf-8", errors="replace")
    out: dict[str, np.ndarray] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, vals = line.split(":", 1)
        try:
            out[key.strip()] = np.array([float(v) for v in vals.split()])
        except ValueError:
            continue
    return out


def _calib_K(path: Path, camera: str) -> np.ndarray:
    key = f"P_rect_{camera[-2:]}"
    calib = read_kitti_calib(path)
    if key not in calib:
        raise data_error(path, f"missing key {key!r}", "use the calib_cam_to_cam.txt of KITTI raw")
    if calib[key].size != 12:
        raise data_error(path, f"{key} has {calib[key].size} values, expected 12 (3 x 4)")
    return calib[key].reshape(3, 4)[:, :3]


class KittiDepthDataset(SequenceDataset):
    """KITTI annotated depth clips (one sequence per drive).

    root: the ``data_depth_annotated`` folder; raw_root: the KITTI raw folder with the RGB
    frames (and calibration). Options: camera "image_02" | "image_03", pixel_offset (0.5),
    clip/resize options (the video-depth benchmark uses max_frames=110). Samples: video,
    depth, depth_valid (depth > 0), [intrinsics], name.
    """

    dataset_name = "kitti-depth"

    def __init__(
        self,
        split: str = "val",
        *,
        root: str | Path | None = None,
        raw_root: str | Path | None = None,
        camera: str = "image_02",
        pixel_offset: float = 0.5,
        **options: Any,
    ):
        check_split(self.dataset_name, split, DEPTH_SPLITS)
        if camera not in ("image_02", "image_03"):
            raise InputError(f"camera must be 'image_02' or 'image_03', got {camera!r}")
        super().__init__(**options)
        base = require_dir(self.dataset_name, root) / split
        if not base.is_dir():
            raise data_error(
                base, "folder not found", f"root must be data_depth_annotated with {split}/<drive>/"
            )
        raw = Path(raw_root).expanduser() if raw_root is not None else None
        self.camera, self.pixel_offset = camera, float(pixel_offset)
        self.depth_files, self.rgb_dirs, self.Ks = [], [], []
        names = []
        for drive in list_dirs(base):
            gt_dir = drive / "proj_depth" / "groundtruth" / camera
            if not gt_dir.is_dir():
                continue
            files = list_files(gt_dir, (".png",))
            if not files:
                continue
            date = drive.name[:10]
            candidates = [drive / camera / "data"]
            if raw is not None:
                candidates = [
                    raw / date / drive.name / camera / "data",
                    raw / drive.name / camera / "data",
                    *candidates,
                ]
            rgb_dir = next((c for c in candidates if c.is_dir()), None)
            if rgb_dir is None:
                looked = ", ".join(str(c) for c in candidates)
                raise data_error(
                    drive,
                    f"no RGB frames for this drive (looked in {looked})",
                    "pass raw_root=<KITTI raw folder>",
                )
            Kmat = None
            calib = [raw / date / "calib_cam_to_cam.txt"] if raw is not None else []
            calib.append(drive / "calib_cam_to_cam.txt")
            found = next((c for c in calib if c.is_file()), None)
            if found is not None:
                Kmat = shift_principal_point(_calib_K(found, camera), self.pixel_offset)
            names.append(drive.name)
            self.depth_files.append(files)
            self.rgb_dirs.append(rgb_dir)
            self.Ks.append(Kmat)
        if not names:
            raise data_error(
                base,
                f"no drives with proj_depth/groundtruth/{camera}/*.png",
                "check root (data_depth_annotated)",
            )
        self._index(names, [len(f) for f in self.depth_files])

    def load(self, seq: int, frames: np.ndarray) -> dict[str, Any]:
        files = [self.depth_files[seq][i] for i in frames]
        rgb = np.stack([read_rgb(self.rgb_dirs[seq] / f.name) for f in files])
        H, W = rgb.shape[1:3]
        depth = np.stack([check_size(f, read_kitti_depth_png(f), H, W, "depth") for f in files])
        sample: dict[str, Any] = {
            K.VIDEO: video_tensor(rgb),
            K.DEPTH: dense_tensor(depth),
            K.DEPTH_VALID: dense_tensor(depth > 0, torch.bool),
        }
        if self.Ks[seq] is not None:
            sample[K.INTRINSICS] = torch.from_numpy(
                np.broadcast_to(self.Ks[seq], (len(files), 3, 3)).copy()
            ).float()
        return sample


class KittiFlowDataset(SequenceDataset):
    """KITTI 2015 optical flow pairs (frame 10 and 11 of each scene).

    root: the folder holding ``training/`` and ``testing/`` (data_scene_flow). Options:
    occlusions "occ" (all pixels, flow_occ/) | "noc" (non-occluded, flow_noc/), reverse_time
    (False; see the module docstring), size/resize_mode. Clip options do not apply.
    """

    dataset_name = "kitti-flow"

    def __init__(
        self,
        split: str = "train",
        *,
        root: str | Path | None = None,
        occlusions: str = "occ",
        reverse_time: bool = False,
        **options: Any,
    ):
        check_split(self.dataset_name, split, FLOW_SPLITS)
        if occlusions not in ("occ", "noc"):
            raise InputError(f"occlusions must be 'occ' or 'noc', got {occlusions!r}")
        for opt in ("clip_len", "clip_stride", "frame_stride", "start", "max_frames"):
            if options.get(opt) is not None:
                raise InputError(f"dataset 'kitti-flow' has 2-frame pairs; option {opt!r} does not apply")
        super().__init__(**options)
        base = require_dir(self.dataset_name, root) / ("training" if split == "train" else "testing")
        img_dir = base / "image_2"
        if not img_dir.is_dir():
            raise data_error(
                img_dir,
                "folder not found",
                "root must hold training/image_2 and training/flow_occ (KITTI 2015)",
            )
        self.img_dir, self.reverse_time = img_dir, bool(reverse_time)
        self.flow_dir = base / f"flow_{occlusions}" if split == "train" else None
        if self.flow_dir is not None and not self.flow_dir.is_dir():
            raise data_error(self.flow_dir, "folder not found", "extract the KITTI 2015 flow ground truth")
        names = sorted({f.name[: -len("_10.png")] for f in img_dir.glob("*_10.png")})
        if not names:
            raise data_error(img_dir, "no *_10.png frames", "check root")
        self._index(names, [2] * len(names))

    def load(self, seq: int, frames: np.ndarray) -> dict[str, Any]:
        name = self.sequence_names[seq]
        rgb = np.stack([read_rgb(self.img_dir / f"{name}_10.png"), read_rgb(self.img_dir / f"{name}_11.png")])
        if self.reverse_time:
            rgb = rgb[::-1]
        sample: dict[str, Any] = {K.VIDEO: video_tensor(rgb)}
        if self.flow_dir is not None:
            H, W = rgb.shape[1:3]
            path = self.flow_dir / f"{name}_10.png"
            gt, valid = read_kitti_flow_png(path)
            check_size(path, gt, H, W, "flow")
            flow = np.stack([gt, np.zeros_like(gt)])
            valids = np.stack([valid, np.zeros_like(valid)])
            sample.update(forward_flow_sample(flow, valids, self.reverse_time))
        return sample


def specs() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="kitti-depth",
            build=lambda split="val", **options: KittiDepthDataset(split, **options),
            provides=(K.VIDEO, K.DEPTH, K.DEPTH_VALID, K.INTRINSICS),
            splits=DEPTH_SPLITS,
            description="KITTI annotated depth (root=data_depth_annotated, raw_root=KITTI raw)",
        ),
        DatasetSpec(
            name="kitti-flow",
            build=lambda split="train", **options: KittiFlowDataset(split, **options),
            provides=(K.VIDEO, K.FLOW_FORWARD),
            splits=FLOW_SPLITS,
            description="KITTI 2015 flow pairs (forward 10 -> 11; reverse_time=True gives backward 'flow')",
        ),
    ]
