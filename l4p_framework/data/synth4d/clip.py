"""One synth4d clip from a seed: scene sampling, rendering and track sampling together."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import torch

from ... import batch as B
from .camera_effects import apply_camera_effects
from .config import Synth4DConfig
from .render import render
from .scene import NUM_ROOM_MATERIALS, Scene, sample_scene
from .textures import sample_photo_materials, scan_photos
from .tracks import sample_tracks

TEXTURE_STREAM = "textures"
EFFECTS_STREAM = "camera_effects"


def stream_generator(seed: int, stream: str) -> torch.Generator:
    """A generator for one optional part of clip `seed` (photo textures, camera effects).

    Its own stream, seeded from (seed, stream) by hashing, so switching an option on draws nothing
    from the clip's main generator: geometry, labels and tracks stay those of the plain clip.
    """
    digest = hashlib.sha256(f"synth4d:{int(seed)}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def render_clip(
    seed: int, config: Synth4DConfig | None = None, split: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sample of clip `seed` plus auxiliary ground truth.

    split ("train", "val", "test") picks the photos of config.photo_split (needed only then).
    Returns (sample, aux): sample as `generate_clip`; aux holds "scene" (the `Scene`) and
    "object_id" (T, H, W) long (0 = room, k = object k-1 of the scene).
    """
    config = config or Synth4DConfig()
    g = torch.Generator().manual_seed(int(seed))
    scene = sample_scene(seed, config, generator=g)
    if config.textures is not None:
        paths = scan_photos(config.textures, config.photo_split, split)
        photos = sample_photo_materials(
            stream_generator(seed, TEXTURE_STREAM),
            paths,
            NUM_ROOM_MATERIALS,
            scene.obj_radius,
            config.texture_mix,
        )
        scene = dataclasses.replace(scene, photos=photos)
    labels = render(scene, config.height, config.width)
    tracks = sample_tracks(
        scene,
        labels["object_id"],
        config.num_queries,
        config.query_first_frame_fraction,
        config.moving_query_fraction,
        g,
    )
    video = labels["video"]
    if config.camera_effects:
        video = apply_camera_effects(
            video,
            labels["flow"],
            labels["flow_valid"],
            labels["flow_forward"],
            stream_generator(seed, EFFECTS_STREAM),
        )
    sample: dict[str, Any] = {
        B.VIDEO: video,
        B.DEPTH: labels["depth"],
        B.DEPTH_VALID: torch.ones_like(labels["depth"], dtype=torch.bool),
        B.FLOW: labels["flow"],
        B.FLOW_VALID: labels["flow_valid"],
        B.FLOW_FORWARD: labels["flow_forward"],
        B.NORMALS: labels["normals"],
        B.MOTION_MASK: labels["motion_mask"],
        B.INTRINSICS: scene.intrinsics.clone(),
        B.POSES: scene.poses(),
        B.QUERIES: tracks["queries"],
        B.TRACKS: tracks["tracks"],
        B.VISIBILITY: tracks["visibility"],
        B.TRACK_DEPTH: tracks["track_depth"],
        B.TRACKS_3D: tracks["tracks_3d"],
        "seed": int(seed),
        "name": f"synth4d-{int(seed):07d}",
    }
    return sample, {"scene": scene, "object_id": labels["object_id"]}


def generate_clip(seed: int, config: Synth4DConfig | None = None, split: str | None = None) -> dict[str, Any]:
    """Render clip `seed`: a sample dict with the keys of `l4p_framework.batch`.

    Shapes (T = num_frames, H x W, N = num_queries), all float32 unless noted: video (3, T, H, W)
    in [0, 1]; depth (1, T, H, W) z-depth in scene units; depth_valid (1, T, H, W) bool (all True:
    the room is closed); flow / flow_forward (2, T, H, W) pixels, (u, v) = position at t-1 / t+1
    minus position at t (frame 0 / frame T-1 zeros); flow_valid (1, T, H, W) bool, False at frame 0
    and where the point, moved to frame t-1, is behind the camera or outside the image (pixels
    occluded at t-1 stay valid: their flow is exact); normals (3, T, H, W) unit, camera frame,
    facing the camera; motion_mask (1, T, H, W) {0, 1}; intrinsics (T, 3, 3) pixels (+0.5 centres);
    poses (T, 4, 4) camera-to-world; queries (N, 3) (t, x, y); tracks (N, T, 2) pixels; visibility
    (N, T) bool; track_depth (N, T); tracks_3d (N, T, 3) camera frame; seed int; name str.
    Same seed and config -> bitwise identical tensors. With config.textures, the room faces and
    objects show photos (split picks config.photo_split's photos); with config.camera_effects the
    video (only) gets real-camera artefacts. Neither changes geometry, labels or tracks.
    """
    return render_clip(seed, config, split)[0]


__all__ = ["Scene", "generate_clip", "render_clip", "stream_generator"]
