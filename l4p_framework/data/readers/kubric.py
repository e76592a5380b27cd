"""Kubric MOVi (A-F) examples exported from TFDS to plain arrays.

TFDS records cannot be read without TensorFlow, so l4p reads one example per ``.npz`` file (or
per folder of ``<key>.npy`` files) holding the TFDS features with ``/`` replaced by ``_``::

    video                  uint8  [T, H, W, 3]
    depth                  uint16 [T, H, W(, 1)]   + depth_range [2] (metadata.depth_range)
    forward_flow           uint16 [T, H, W, 2]     + forward_flow_range [2]
    backward_flow          uint16 [T, H, W, 2]     + backward_flow_range [2]
    segmentations          uint8  [T, H, W(, 1)]   0 = background, id = instance index + 1
    instances_is_dynamic   bool   [I]              (optional; gives motion_mask)
    camera_positions       float  [T, 3]           world, metres
    camera_quaternions     float  [T, 4]           (w, x, y, z), camera-to-world rotation
    camera_focal_length    float  []               mm
    camera_sensor_width    float  []               mm
    query_points           float  [N, 3]           (t, y, x) pixels  (TAP-Vid-Kubric tracks,
    target_points          float  [N, T, 2]        (x, y) pixels      optional; pixel coords
    occluded               bool   [N, T]                              with corner origin)

Only ``video`` is required; a decoded key needs its range; depth needs the camera keys.
Layout of a dataset: ``<root>/<split>/*.npz`` (or ``<root>/*.npz`` for every split); a
sub-folder holding ``video.npy`` counts as one example.

Decoding and conversion to l4p:

- uint16 v -> v / 65535 * (max - min) + min for depth and flows (float arrays are taken as
  already decoded);
- flows are stored (d_row, d_col): reordered to (u, v) = (d_col, d_row). backward_flow (to
  the previous frame) is l4p's ``flow`` (frame 0 of the clip invalid), forward_flow is
  ``flow_forward`` (last frame zero); both need frame_stride == 1;
- depth is the distance to the camera centre: converted to z-depth z = d / |K^-1 (x, y, 1)|
  at pixel centres;
- intrinsics: fx = fy = focal_length / sensor_width * W, cx = W / 2, cy = H / 2 (Kubric's
  principal point is the image centre, square pixels);
- poses: Kubric/Blender cameras look down -Z with +Y up and +X right. The camera-to-world
  rotation from the quaternion is converted to l4p's camera axes (x right, y down, z forward)
  by post-multiplying diag(1, -1, -1): poses = [R @ diag(1, -1, -1) | position];
- motion_mask = segmentation id belongs to an instance with is_dynamic (when given);
- tracks: target_points, visibility = ~occluded, queries (t, x, y) from query_points for
  whole videos, or "first" mode inside a clip window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import batch as K
from ...specs import DatasetSpec
from ._common import (
    ArrayBundle,
    SequenceDataset,
    check_shape,
    check_split,
    data_error,
    dense_tensor,
    list_dirs,
    load_arrays,
    natural_key,
    npz_shape,
    quat_to_matrix,
    require_dir,
    track_sample,
    video_tensor,
)

SPLITS = ("train", "val", "test")
PROVIDES = (
    K.VIDEO,
    K.DEPTH,
    K.DEPTH_VALID,
    K.FLOW,
    K.FLOW_VALID,
    K.FLOW_FORWARD,
    K.MOTION_MASK,
    K.INTRINSICS,
    K.POSES,
    K.QUERIES,
    K.TRACKS,
    K.VISIBILITY,
)
BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


def decode_range(values: np.ndarray, value_range: np.ndarray | tuple[float, float]) -> np.ndarray:
    """uint16 -> float32 v / 65535 * (max - min) + min; float input is returned as float32."""
    v = np.asarray(values)
    if np.issubdtype(v.dtype, np.floating):
        return v.astype(np.float32)
    lo, hi = (float(x) for x in np.asarray(value_range, dtype=np.float64).reshape(2))
    return (v.astype(np.float32) / 65535.0 * (hi - lo) + lo).astype(np.float32)


def kubric_intrinsics(focal_length: float, sensor_width: float, height: int, width: int) -> np.ndarray:
    """Pixel-unit K [3, 3] (l4p convention): fx = fy = focal / sensor_width * W, centre (W/2, H/2)."""
    f = float(focal_length) / float(sensor_width) * width
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def kubric_camera_to_world(positions: np.ndarray, quaternions_wxyz: np.ndarray) -> np.ndarray:
    """Kubric camera positions [T, 3] and (w, x, y, z) quaternions [T, 4] -> l4p camera-to-world
    poses float64 [T, 4, 4] (camera axes x right, y down, z forward)."""
    R = quat_to_matrix(quaternions_wxyz, "wxyz") @ BLENDER_TO_OPENCV
    T = np.tile(np.eye(4), (len(R), 1, 1))
    T[:, :3, :3] = R
    T[:, :3, 3] = positions
    return T


def distance_to_z_depth(distance: np.ndarray, Kmat: np.ndarray) -> np.ndarray:
    """Distance to the camera centre [..., H, W] -> z-depth, with pixel centres at +0.5."""
    H, W = distance.shape[-2:]
    x = (np.arange(W) + 0.5 - Kmat[0, 2]) / Kmat[0, 0]
    y = (np.arange(H) + 0.5 - Kmat[1, 2]) / Kmat[1, 1]
    norm = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + 1.0)
    return (distance / norm).astype(np.float32)


def _squeeze_channel(arr: np.ndarray) -> np.ndarray:
    return arr[..., 0] if arr.ndim == 4 and arr.shape[-1] == 1 else arr


def read_kubric(path: str | Path) -> dict[str, Any]:
    """Read and decode one Kubric example (``.npz`` or folder of ``.npy``).

    Returns a dict with video uint8 [T, H, W, 3] and, when present: depth float32 [T, H, W]
    (z-depth), forward_flow / backward_flow float32 [T, H, W, 2] (u, v), segmentations uint8
    [T, H, W], intrinsics [3, 3], poses [T, 4, 4] (camera-to-world, l4p axes), is_dynamic [I],
    query_points [N, 3] (t, y, x), target_points [N, T, 2] (x, y), occluded [N, T].
    """
    p = Path(path)
    b = load_arrays(p)
    video = np.asarray(b["video"])
    check_shape(p, "video", video, (None, None, None, 3), "T, H, W, RGB uint8")
    T, H, W = video.shape[:3]
    out: dict[str, Any] = {"video": video.astype(np.uint8, copy=False)}
    has_cam = "camera_focal_length" in b or "camera_sensor_width" in b
    if has_cam:
        b.require("camera_focal_length", "camera_sensor_width")
        focal = float(np.asarray(b["camera_focal_length"]).reshape(-1)[0])
        sensor = float(np.asarray(b["camera_sensor_width"]).reshape(-1)[0])
        if not (focal > 0 and sensor > 0):
            raise data_error(p, f"camera_focal_length={focal} and camera_sensor_width={sensor} must be > 0")
        out["intrinsics"] = kubric_intrinsics(focal, sensor, H, W)
    if "camera_positions" in b or "camera_quaternions" in b:
        b.require("camera_positions", "camera_quaternions")
        pos, quat = (
            np.asarray(b["camera_positions"], np.float64),
            np.asarray(b["camera_quaternions"], np.float64),
        )
        check_shape(p, "camera_positions", pos, (T, 3), "T, xyz")
        check_shape(p, "camera_quaternions", quat, (T, 4), "T, (w, x, y, z)")
        poses = kubric_camera_to_world(pos, quat)
        if not np.isfinite(poses).all():
            raise data_error(p, "camera_quaternions has a zero-norm or non-finite quaternion")
        out["poses"] = poses
    if "depth" in b:
        raw = _squeeze_channel(np.asarray(b["depth"]))
        check_shape(p, "depth", raw, (T, H, W), "T, H, W(, 1)")
        if not np.issubdtype(raw.dtype, np.floating):
            b.require("depth_range")
        if "intrinsics" not in out:
            raise data_error(
                p,
                "depth is distance to the camera centre and needs camera_focal_length and "
                "camera_sensor_width to become z-depth",
                "add the camera keys",
            )
        out["depth"] = distance_to_z_depth(decode_range(raw, b.get("depth_range", (0, 1))), out["intrinsics"])
    for key in ("forward_flow", "backward_flow"):
        if key in b:
            raw = np.asarray(b[key])
            check_shape(p, key, raw, (T, H, W, 2), "T, H, W, (d_row, d_col)")
            if not np.issubdtype(raw.dtype, np.floating):
                b.require(f"{key}_range")
            flow = decode_range(raw, b.get(f"{key}_range", (0, 1)))
            out[key] = np.ascontiguousarray(flow[..., ::-1])  # (d_row, d_col) -> (u, v)
    if "segmentations" in b:
        seg = _squeeze_channel(np.asarray(b["segmentations"]))
        check_shape(p, "segmentations", seg, (T, H, W), "T, H, W(, 1)")
        out["segmentations"] = seg
        if "instances_is_dynamic" in b:
            out["is_dynamic"] = np.asarray(b["instances_is_dynamic"]).astype(bool).reshape(-1)
    _read_tracks(p, b, T, out)
    return out


def _read_tracks(p: Path, b: ArrayBundle, T: int, out: dict[str, Any]) -> None:
    if not any(k in b for k in ("target_points", "occluded", "query_points")):
        return
    b.require("target_points", "occluded")
    tp = np.asarray(b["target_points"], np.float32)
    check_shape(p, "target_points", tp, (None, T, 2), "N, T, (x, y) pixels")
    occ = np.asarray(b["occluded"]).astype(bool)
    check_shape(p, "occluded", occ, tp.shape[:2], "N, T")
    out["target_points"], out["occluded"] = tp, occ
    if "query_points" in b:
        qp = np.asarray(b["query_points"], np.float32)
        check_shape(p, "query_points", qp, (tp.shape[0], 3), "N, (t, y, x)")
        out["query_points"] = qp


class KubricDataset(SequenceDataset):
    """Kubric MOVi examples in the array layout of the module docstring.

    Options: clip/resize options. Samples: video and, when the file has them, depth,
    depth_valid, flow, flow_valid, flow_forward, motion_mask, intrinsics, poses, queries,
    tracks, visibility, name.
    """

    dataset_name = "kubric"

    def __init__(self, split: str = "train", *, root: str | Path | None = None, **options: Any):
        check_split(self.dataset_name, split, SPLITS)
        super().__init__(**options)
        base = require_dir(self.dataset_name, root)
        folder = base / split if (base / split).is_dir() else base
        files = sorted(folder.glob("*.npz"), key=lambda f: natural_key(f.name))
        files += [d for d in list_dirs(folder) if (d / "video.npy").is_file()]
        if not files:
            raise data_error(
                folder,
                "no Kubric examples (*.npz or folders with video.npy)",
                "export MOVi examples as documented in l4p_framework.data.readers.kubric",
            )
        self.files = files
        self._index(
            [f.stem if f.is_file() else f.name for f in files], [npz_shape(f, "video")[0] for f in files]
        )

    def load(self, seq: int, frames: np.ndarray) -> dict[str, Any]:
        d = read_kubric(self.files[seq])
        T = d["video"].shape[0]
        sample: dict[str, Any] = {K.VIDEO: video_tensor(d["video"][frames])}
        n = len(frames)
        consecutive = bool((np.diff(frames) == 1).all())
        if "depth" in d:
            depth = d["depth"][frames]
            sample[K.DEPTH] = dense_tensor(depth)
            sample[K.DEPTH_VALID] = dense_tensor(depth > 0, torch.bool)
        if "backward_flow" in d and consecutive:
            flow = d["backward_flow"][frames].copy()
            flow[0] = 0.0
            valid = np.ones(flow.shape[:3], bool)
            valid[0] = False
            sample[K.FLOW] = dense_tensor(flow)
            sample[K.FLOW_VALID] = dense_tensor(valid, torch.bool)
        if "forward_flow" in d and consecutive:
            flow = d["forward_flow"][frames].copy()
            flow[-1] = 0.0
            sample[K.FLOW_FORWARD] = dense_tensor(flow)
        if "segmentations" in d and "is_dynamic" in d:
            ids = np.concatenate([[False], d["is_dynamic"]])
            seg = d["segmentations"][frames].astype(np.int64)
            moving = np.where(seg < len(ids), ids[np.minimum(seg, len(ids) - 1)], False)
            sample[K.MOTION_MASK] = dense_tensor(moving)
        if "intrinsics" in d:
            sample[K.INTRINSICS] = torch.from_numpy(
                np.broadcast_to(d["intrinsics"], (n, 3, 3)).copy()
            ).float()
        if "poses" in d:
            sample[K.POSES] = torch.from_numpy(d["poses"][frames]).float()
        if "target_points" in d:
            tracks, vis = d["target_points"][:, frames], ~d["occluded"][:, frames]
            if n == T and "query_points" in d and bool((frames == np.arange(T)).all()):
                q = d["query_points"]
                sample[K.QUERIES] = torch.from_numpy(np.stack([q[:, 0], q[:, 2], q[:, 1]], 1)).float()
                sample[K.TRACKS] = torch.from_numpy(np.ascontiguousarray(tracks)).float()
                sample[K.VISIBILITY] = torch.from_numpy(np.ascontiguousarray(vis))
            else:
                sample.update(track_sample(tracks, vis, "first"))
        return sample


def spec() -> DatasetSpec:
    return DatasetSpec(
        name="kubric",
        build=lambda split="train", **options: KubricDataset(split, **options),
        provides=PROVIDES,
        splits=SPLITS,
        description="Kubric MOVi examples exported to .npz (video, z-depth, flows, K, poses, tracks)",
    )
