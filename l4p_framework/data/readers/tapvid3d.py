"""TAPVid-3D: one ``.npz`` per video (ADT, Panoptic Studio, DriveTrack), 3D point tracks.

Keys read (the names the official evaluation code uses; its README says ``tracks_xyz`` and
``intrinsics``, which are accepted as fallbacks):

- ``images_jpeg_bytes`` [T]: JPEG-encoded frames;
- ``queries_xyt`` [N, 3]: query (x, y) in pixels and frame t;
- ``tracks_XYZ`` [T, N, 3]: points in the camera frame of each frame, metres;
- ``visibility`` [T, N] bool;
- ``fx_fy_cx_cy`` [4]: pixel intrinsics;
- ``extrinsics_w2c`` [T, 4, 4] (ADT and DriveTrack; absent for the static PStudio camera).

Conversion to l4p: tracks_3d = tracks_XYZ as (N, T, 3), track_depth = its Z; 2D tracks are the
projection of tracks_XYZ with the intrinsics (pixel_offset is added to cx, cy, to the
projections and to the query x, y: 0 by default, i.e. the file's intrinsics are assumed to
use l4p's corner-origin convention, as tapnet scales them without a half-pixel shift when it
resizes); poses = inverse of extrinsics_w2c (identity when absent); visibility = the file's
visibility, forced False where the point is behind the camera (Z <= 0). With a clip window
(clip_len, start, ...) queries are re-sampled in "first" mode inside the window.
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
    check_split,
    data_error,
    decode_image,
    invert_rigid,
    load_arrays,
    natural_key,
    npz_shape,
    project,
    require_path,
    track_sample,
    video_tensor,
)

SPLITS = ("val", "test")
PROVIDES = (K.VIDEO, K.QUERIES, K.TRACKS, K.VISIBILITY, K.TRACKS_3D, K.TRACK_DEPTH, K.INTRINSICS, K.POSES)


def _first_key(bundle, *names: str) -> str:
    for n in names:
        if n in bundle:
            return n
    bundle.require(names[0])  # raises DataError naming the file and the expected key
    return names[0]


def read_tapvid3d_npz(path: str | Path, *, decode: bool = True) -> dict[str, Any]:
    """Read one TAPVid-3D file.

    Returns video uint8 [T, H, W, 3] (or the raw JPEG bytes list when decode=False),
    queries_xyt float32 [N, 3], tracks_xyz float32 [T, N, 3] (camera frame, metres),
    visibility bool [T, N], fx_fy_cx_cy float64 [4], extrinsics_w2c float64 [T, 4, 4] or None.
    DataError (naming the file) for a bad magic number, truncation, missing keys, bad shapes,
    pickled objects other than the bytes of ``images_jpeg_bytes``, or undecodable JPEG frames.
    """
    p = Path(path)
    # JPEG frames may be an object array of bytes (pickled by numpy): only that entry is unpickled,
    # by the restricted unpickler of safe_pickle; every numeric array is read with allow_pickle=False
    b = load_arrays(p, bytes_keys=("images_jpeg_bytes",))
    b.require("images_jpeg_bytes", "queries_xyt", "visibility")
    tracks = np.asarray(b[_first_key(b, "tracks_XYZ", "tracks_xyz")], dtype=np.float32)
    intr = np.asarray(b[_first_key(b, "fx_fy_cx_cy", "intrinsics")], dtype=np.float64).reshape(-1)
    queries = np.asarray(b["queries_xyt"], dtype=np.float32)
    vis = np.asarray(b["visibility"]).astype(bool)
    frames = b["images_jpeg_bytes"]
    if frames.ndim != 1 or frames.dtype.kind not in "OS":  # object arrays hold only bytes (read_npy)
        raise data_error(
            p, f"images_jpeg_bytes is a {frames.dtype} array {list(frames.shape)}, expected [T] JPEG bytes"
        )
    jpegs = list(frames)
    T = len(jpegs)
    check_shape(p, "tracks_XYZ", tracks, (T, None, 3), "T, N, XYZ metres")
    N = tracks.shape[1]
    check_shape(p, "visibility", vis, (T, N), "T, N")
    check_shape(p, "queries_xyt", queries, (N, 3), "N, (x, y, t)")
    if intr.shape != (4,):
        raise data_error(p, f"fx_fy_cx_cy has {intr.size} values, expected 4")
    ext = None
    if "extrinsics_w2c" in b:
        ext = np.asarray(b["extrinsics_w2c"], dtype=np.float64)
        check_shape(p, "extrinsics_w2c", ext, (T, 4, 4), "T, 4, 4 world-to-camera")
    video: Any = jpegs
    if decode:
        video = np.stack([decode_image(bytes(j), f"{p} frame {i}") for i, j in enumerate(jpegs)])
    return {
        "video": video,
        "queries_xyt": queries,
        "tracks_xyz": tracks,
        "visibility": vis,
        "fx_fy_cx_cy": intr,
        "extrinsics_w2c": ext,
    }


class TapVid3DDataset(SequenceDataset):
    """TAPVid-3D clips.

    root: one ``.npz`` or a folder searched recursively for ``*.npz`` (e.g. adt/, pstudio/,
    drivetrack/); ``files``: optional list of file names (stems or names) to keep, e.g. a
    minival list. Options: pixel_offset (0.0), clip/resize options. Samples: video, queries,
    tracks, visibility, tracks_3d, track_depth, intrinsics (T, 3, 3), poses (T, 4, 4), name.
    """

    dataset_name = "tapvid3d"

    def __init__(
        self,
        split: str = "test",
        *,
        root: str | Path | None = None,
        files: list[str] | None = None,
        pixel_offset: float = 0.0,
        **options: Any,
    ):
        check_split(self.dataset_name, split, SPLITS)
        super().__init__(**options)
        path = require_path(self.dataset_name, root)
        found = sorted(path.rglob("*.npz"), key=lambda f: natural_key(str(f))) if path.is_dir() else [path]
        if files is not None:
            wanted = {Path(f).stem for f in files}
            found = [f for f in found if f.stem in wanted]
        if not found:
            raise data_error(
                path, "no .npz files found", "point root at TAPVid-3D .npz files or their folder"
            )
        self.files = found
        self.pixel_offset = float(pixel_offset)
        lengths = [npz_shape(f, "visibility")[0] for f in found]
        self._index([f.stem for f in found], lengths)

    def load(self, seq: int, frames: np.ndarray) -> dict[str, Any]:
        d = read_tapvid3d_npz(self.files[seq], decode=False)
        T = len(d["video"])
        rgb = np.stack([decode_image(bytes(d["video"][i]), f"{self.files[seq]} frame {i}") for i in frames])
        fx, fy, cx, cy = d["fx_fy_cx_cy"]
        o = self.pixel_offset
        Kmat = np.array([[fx, 0.0, cx + o], [0.0, fy, cy + o], [0.0, 0.0, 1.0]])
        pts = d["tracks_xyz"].transpose(1, 0, 2)  # N, T, 3
        uv, front = project(pts.astype(np.float64), Kmat)
        vis = d["visibility"].T & front
        ext = d["extrinsics_w2c"]
        poses = invert_rigid(ext) if ext is not None else np.broadcast_to(np.eye(4), (T, 4, 4))
        sample: dict[str, Any] = {
            K.VIDEO: video_tensor(rgb),
            K.INTRINSICS: torch.from_numpy(np.broadcast_to(Kmat, (len(frames), 3, 3)).copy()).float(),
            K.POSES: torch.from_numpy(np.ascontiguousarray(poses[frames])).float(),
        }
        whole = len(frames) == T and bool((frames == np.arange(T)).all())
        if whole:
            q = d["queries_xyt"]
            sample[K.QUERIES] = torch.from_numpy(np.stack([q[:, 2], q[:, 0] + o, q[:, 1] + o], 1)).float()
            sample[K.TRACKS] = torch.from_numpy(uv).float()
            sample[K.VISIBILITY] = torch.from_numpy(vis)
            sample[K.TRACKS_3D] = torch.from_numpy(np.ascontiguousarray(pts)).float()
            sample[K.TRACK_DEPTH] = sample[K.TRACKS_3D][..., 2].clone()
        else:
            sample.update(track_sample(uv[:, frames], vis[:, frames], "first", tracks_3d=pts[:, frames]))
        return sample


def spec() -> DatasetSpec:
    return DatasetSpec(
        name="tapvid3d",
        build=lambda split="test", **options: TapVid3DDataset(split, **options),
        provides=PROVIDES,
        splits=SPLITS,
        description="TAPVid-3D .npz files (3D tracks in metres, intrinsics, poses; root=NPZ or folder)",
    )
