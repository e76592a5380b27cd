"""Random synth4d scenes from a seed: a textured closed room, rigid objects and a moving camera.

World frame: x right, y down, z forward (the camera convention), so an unrotated camera looks down
+z at the back wall. Every random draw comes from one local `torch.Generator` seeded with the
clip seed; the global RNG is never touched, so a seed always gives the same scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import Synth4DConfig
from .textures import PhotoMaterials

SPHERE = 0
BOX = 1
NUM_ROOM_MATERIALS = 6
"""Room faces, material index = 2 * axis + (1 if the face is the high bound of that axis)."""
NOISE_TERMS = 4
"""Sinusoids per noise field; a material has two fields (pattern noise and colour noise)."""


@dataclass(frozen=True)
class Materials:
    """Procedural texture parameters of M materials (room faces first, then objects).

    Colours are RGB albedos in [0, 1]; frequencies are in cycles (or checker cells) per scene unit;
    angles in radians. `noise_freq` holds 2 * NOISE_TERMS 3D frequency vectors per material.
    """

    color0: torch.Tensor  # (M, 3)
    color1: torch.Tensor  # (M, 3)
    color2: torch.Tensor  # (M, 3) colour-noise direction
    checker_weight: torch.Tensor  # (M,)
    stripe_weight: torch.Tensor  # (M,)
    checker_freq: torch.Tensor  # (M,)
    checker_angle: torch.Tensor  # (M,)
    stripe_freq: torch.Tensor  # (M,)
    stripe_angle: torch.Tensor  # (M,)
    noise_freq: torch.Tensor  # (M, 2 * NOISE_TERMS, 3)
    noise_phase: torch.Tensor  # (M, 2 * NOISE_TERMS)
    color_noise: torch.Tensor  # (M,) amplitude of the colour noise


@dataclass(frozen=True)
class Scene:
    """One clip's geometry, motion, camera and materials (float32 tensors).

    room_lo/room_hi: (3,) bounds of the axis-aligned room box. intrinsics (T, 3, 3) in pixels with
    pixel centres at +0.5; cam_rot (T, 3, 3) and cam_pos (T, 3) are camera-to-world. Objects are
    ordered spheres first, then boxes: obj_kind (O,) in {SPHERE, BOX}; obj_half (O, 3) the sphere
    radius (repeated) or the box half extents; obj_rot (T, O, 3, 3) and obj_pos (T, O, 3) are
    object-to-world; obj_moving (O,) marks objects with non-zero world motion. light_dir (3,) is the
    unit direction towards the light, ambient the ambient shading term in [0, 1]. photos, when set,
    gives materials photo textures (`textures.PhotoMaterials`; None = procedural only).
    """

    room_lo: torch.Tensor
    room_hi: torch.Tensor
    intrinsics: torch.Tensor
    cam_rot: torch.Tensor
    cam_pos: torch.Tensor
    obj_kind: torch.Tensor
    obj_half: torch.Tensor
    obj_rot: torch.Tensor
    obj_pos: torch.Tensor
    obj_moving: torch.Tensor
    materials: Materials
    light_dir: torch.Tensor
    ambient: float
    photos: PhotoMaterials | None = None

    @property
    def num_frames(self) -> int:
        return int(self.cam_pos.shape[0])

    @property
    def num_objects(self) -> int:
        return int(self.obj_kind.shape[0])

    @property
    def num_spheres(self) -> int:
        return int((self.obj_kind == SPHERE).sum())

    @property
    def obj_radius(self) -> torch.Tensor:
        """Bounding-sphere radius (O,) of each object: the sphere radius or the box half diagonal."""
        return torch.where(self.obj_kind == SPHERE, self.obj_half[:, 0], self.obj_half.norm(dim=-1))

    def poses(self) -> torch.Tensor:
        """Camera-to-world 4x4 matrices, (T, 4, 4)."""
        t = self.num_frames
        out = torch.zeros(t, 4, 4)
        out[:, :3, :3] = self.cam_rot
        out[:, :3, 3] = self.cam_pos
        out[:, 3, 3] = 1.0
        return out


def _uniform(g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def rodrigues(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from unit axes (..., 3) and angles (...) in radians -> (..., 3, 3).

    Angle 0 gives the identity exactly, so static objects keep bitwise-constant poses.
    """
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis.shape[:-1], 3, 3)
    s = torch.sin(angle)[..., None, None]
    c = (1.0 - torch.cos(angle))[..., None, None]
    eye = torch.eye(3).expand_as(k)
    return eye + s * k + c * (k @ k)


def random_rotation(g: torch.Generator, n: int) -> torch.Tensor:
    """Uniformly random rotations from normalised Gaussian quaternions, (n, 3, 3)."""
    q = _unit(torch.randn(n, 4, generator=g))
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - z * w),
            2 * (x * z + y * w),
            2 * (x * y + z * w),
            1 - 2 * (x * x + z * z),
            2 * (y * z - x * w),
            2 * (x * z - y * w),
            2 * (y * z + x * w),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(n, 3, 3)


def _bounce(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Reflect free positions x into [lo, hi] (a triangle wave: objects bounce off the bounds)."""
    span = hi - lo
    u = torch.remainder(x - lo, 2 * span)
    return lo + torch.where(u > span, 2 * span - u, u)


def _sample_materials(g: torch.Generator, num_objects: int, obj_scale: torch.Tensor) -> Materials:
    """Random procedural materials: 6 room faces then one per object.

    obj_scale (O,) is each object's size; object textures get finer with smaller objects.
    """
    m = NUM_ROOM_MATERIALS + num_objects
    dark = 0.04 + 0.42 * torch.rand(m, 3, generator=g)
    bright = 0.5 + 0.48 * torch.rand(m, 3, generator=g)
    swap = (torch.rand(m, 1, generator=g) < 0.5).expand(m, 3)
    color0 = torch.where(swap, bright, dark)
    color1 = torch.where(swap, dark, bright)
    color2 = torch.rand(m, 3, generator=g)

    # Per-material scale of the texture: room faces ~1 unit features, objects relative to size.
    scale = torch.cat([torch.ones(NUM_ROOM_MATERIALS), 1.2 / obj_scale.clamp(min=0.1)])
    style = torch.randint(0, 4, (m,), generator=g)
    checker_w = torch.where(style == 0, _uniform(g, 0.6, 0.9, m), torch.zeros(m))
    checker_w = torch.where(style == 3, _uniform(g, 0.2, 0.45, m), checker_w)
    stripe_w = torch.where(style == 1, _uniform(g, 0.55, 0.85, m), torch.zeros(m))
    stripe_w = torch.where(style == 3, _uniform(g, 0.15, 0.4, m), stripe_w)

    def log_uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.exp(_uniform(g, math.log(lo), math.log(hi), *shape))

    checker_freq = log_uniform(0.8, 4.0, m) * scale
    stripe_freq = log_uniform(0.8, 4.0, m) * scale
    mag = log_uniform(0.4, 5.0, m, 2 * NOISE_TERMS) * scale[:, None]
    noise_freq = _unit(torch.randn(m, 2 * NOISE_TERMS, 3, generator=g)) * mag[..., None]
    return Materials(
        color0=color0,
        color1=color1,
        color2=color2,
        checker_weight=checker_w,
        stripe_weight=stripe_w,
        checker_freq=checker_freq,
        checker_angle=_uniform(g, 0.0, math.pi, m),
        stripe_freq=stripe_freq,
        stripe_angle=_uniform(g, 0.0, math.pi, m),
        noise_freq=noise_freq,
        noise_phase=_uniform(g, 0.0, 2 * math.pi, m, 2 * NOISE_TERMS),
        color_noise=_uniform(g, 0.12, 0.3, m),
    )


def _look_at(pos: torch.Tensor, target: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Camera-to-world rotations (T, 3, 3) looking from pos (T, 3) at target (T, 3), y down."""
    z = _unit(target - pos)
    down = torch.tensor([0.0, 1.0, 0.0]).expand_as(z)
    x = _unit(torch.linalg.cross(down, z))
    y = torch.linalg.cross(z, x)
    c, s = torch.cos(roll)[:, None], torch.sin(roll)[:, None]
    x, y = c * x + s * y, c * y - s * x
    return torch.stack([x, y, z], dim=-1)


def _dolly(
    g: torch.Generator,
    cam_pos: torch.Tensor,
    target: torch.Tensor,
    scale: float,
    room_lo: torch.Tensor,
    room_hi: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add a steady travel along the first frame's view direction to camera path and target (T, 3).

    Forward (70 %) or backward at 0.04-0.15 units/frame times `scale`, shortened where needed so the
    camera stays 0.5 units inside the side walls and floor/ceiling and at least 4 units before the
    back wall (room for the objects, which are placed beyond the camera path). The target moves
    along, so the dolly changes no viewing angle.
    """
    frames = torch.arange(cam_pos.shape[0], dtype=torch.float32)
    forward = _unit(target[0] - cam_pos[0])
    sign = 1.0 if bool(torch.rand((), generator=g) < 0.7) else -1.0
    speed = sign * float(_uniform(g, 0.04, 0.15)) * scale
    offset = (speed * frames)[:, None] * forward  # (T, 3)
    lo = room_lo + 0.5
    hi = torch.stack([room_hi[0] - 0.5, room_hi[1] - 0.4, room_hi[2] - 4.0])
    base = torch.minimum(torch.maximum(cam_pos, lo), hi)
    # Largest fraction s of the travel with base + s * offset inside [lo, hi] on every frame.
    room_left = torch.where(offset > 0, hi - base, lo - base)
    ratio = torch.where(offset != 0, room_left / torch.where(offset != 0, offset, 1.0), math.inf)
    s = float(ratio.min().clamp(0.0, 1.0))
    return cam_pos + s * offset, target + s * offset


def sample_scene(seed: int, config: Synth4DConfig, generator: torch.Generator | None = None) -> Scene:
    """Draw the scene of clip `seed` (same seed and config -> identical scene).

    With `generator` given, draws from it instead (it must already be seeded; `seed` is ignored),
    so the caller can go on drawing from the same stream afterwards.
    """
    g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    n_t, h, w = config.num_frames, config.height, config.width
    frames = torch.arange(n_t, dtype=torch.float32)

    # Room: camera starts near the origin, the back wall is far in +z, the floor is at +y.
    half_x = float(_uniform(g, 2.5, 5.0))
    room_lo = torch.stack([torch.tensor(-half_x), -_uniform(g, 1.2, 2.5), -_uniform(g, 1.5, 3.0)])
    room_hi = torch.stack([torch.tensor(half_x), _uniform(g, 1.0, 1.8), _uniform(g, 7.0, 14.0)])
    room_lo, room_hi = room_lo.reshape(3).float(), room_hi.reshape(3).float()

    # Intrinsics (pixels, +0.5 centres): horizontal fov in the configured range.
    fov = math.radians(float(_uniform(g, *config.fov_range_deg)))
    fx = (w / 2) / math.tan(fov / 2)
    fy = fx * float(_uniform(g, 0.98, 1.02))
    cx = w / 2 + float(_uniform(g, -0.02, 0.02)) * w
    cy = h / 2 + float(_uniform(g, -0.02, 0.02)) * h
    k = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]).expand(n_t, 3, 3).clone()

    # Camera: smooth sinusoidal path per axis inside a box well within the room (never clamped),
    # looking at a target near the back wall that drifts too.
    motion = config.camera_motion_scale * float(_uniform(g, 0.25, 1.0))
    cam_lo = torch.stack([room_lo[0] + 0.5, torch.clamp(room_lo[1] + 0.5, min=-0.6), room_lo[2] + 0.5])
    cam_hi = torch.stack([room_hi[0] - 0.5, room_hi[1] - 0.4, torch.tensor(1.0)])
    speed = _uniform(g, 0.3, 1.0, 3) * torch.tensor([0.15, 0.05, 0.12]) * motion  # peak units/frame
    omega = _uniform(g, 0.05, 0.25, 3)
    amp = torch.minimum(speed / omega, (cam_hi - cam_lo) / 2)
    centre = cam_lo + amp + torch.rand(3, generator=g) * (cam_hi - cam_lo - 2 * amp)
    phase = _uniform(g, 0.0, 2 * math.pi, 3)
    cam_pos = centre + amp * torch.sin(omega * frames[:, None] + phase)
    back = float(room_hi[2])
    tgt0 = torch.stack(
        [_uniform(g, -0.4, 0.4) * half_x, _uniform(g, -0.2, 0.6), _uniform(g, 0.5, 0.9) * back]
    )
    tgt_omega = _uniform(g, 0.03, 0.15, 3)
    tgt_amp = _uniform(g, 0.3, 1.0, 3) * torch.tensor([0.3, 0.1, 0.1]) * motion / tgt_omega
    tgt_phase = _uniform(g, 0.0, 2 * math.pi, 3)
    target = tgt0.reshape(3) + tgt_amp * torch.sin(tgt_omega * frames[:, None] + tgt_phase)
    if config.camera_motion != "pan":  # no draws for "pan": the original clips stay bit for bit
        dolly = config.camera_motion == "dolly" or bool(torch.rand((), generator=g) < 0.5)
        if dolly:
            cam_pos, target = _dolly(g, cam_pos, target, config.camera_motion_scale, room_lo, room_hi)
    roll = _uniform(g, 0.0, 0.08) * motion * torch.sin(_uniform(g, 0.02, 0.1) * frames + _uniform(g, 0, 6.3))
    cam_rot = _look_at(cam_pos, target, roll)

    # Objects: spheres and boxes, mostly placed inside the first frame's view, spheres first.
    n_obj = int(torch.randint(config.min_objects, config.max_objects + 1, (1,), generator=g))
    kind = (torch.rand(n_obj, generator=g) < 0.5).long()
    kind, _ = torch.sort(kind, stable=True)
    radius = _uniform(g, 0.25, 0.75, n_obj)
    box_half = _uniform(g, 0.2, 0.55, n_obj, 3)
    half = torch.where((kind == SPHERE)[:, None], radius[:, None].expand(n_obj, 3), box_half)
    bound_r = torch.where(kind == SPHERE, radius, box_half.norm(dim=-1))
    moving = torch.rand(n_obj, generator=g) >= config.static_object_prob
    if n_obj > 0:
        moving[int(torch.randint(0, n_obj, (1,), generator=g))] = True

    safe_z = float(cam_pos[:, 2].max()) + 0.6
    lo = torch.stack([room_lo[0].expand(n_obj), room_lo[1].expand(n_obj), torch.full((n_obj,), safe_z)], -1)
    lo = lo + bound_r[:, None]
    hi = room_hi - bound_r[:, None]
    in_view = torch.rand(n_obj, generator=g) < 0.8
    px = torch.stack([_uniform(g, 0.12, 0.88, n_obj) * w, _uniform(g, 0.25, 0.85, n_obj) * h], -1)
    ray = torch.stack([(px[:, 0] - cx) / fx, (px[:, 1] - cy) / fy, torch.ones(n_obj)], -1)
    view_pt = cam_pos[0] + _uniform(g, 2.0, 6.0, n_obj)[:, None] * (ray @ cam_rot[0].T)
    free_pt = lo + torch.rand(n_obj, 3, generator=g) * (hi - lo)
    center0 = torch.where(in_view[:, None], view_pt, free_pt)
    center0 = torch.maximum(torch.minimum(center0, hi), lo)

    direction = _unit(torch.randn(n_obj, 3, generator=g) * torch.tensor([1.0, 0.6, 0.6]))
    speed = _uniform(g, 0.25, 1.0, n_obj) * config.max_object_speed * moving
    spin_axis = _unit(torch.randn(n_obj, 3, generator=g))
    spin = torch.rand(n_obj, generator=g) * config.max_object_spin * moving
    obj_pos = _bounce(center0 + frames[:, None, None] * (speed[:, None] * direction), lo, hi)
    rot0 = random_rotation(g, n_obj)
    obj_rot = rodrigues(spin_axis.expand(n_t, n_obj, 3), frames[:, None] * spin) @ rot0
    # Objects flagged moving but with zero speed and spin (config maxima 0) are static after all.
    moving = moving & ((speed > 0) | (spin > 0))

    materials = _sample_materials(g, n_obj, bound_r)
    light = _unit(
        torch.stack([_uniform(g, -0.5, 0.5), torch.tensor(-1.0), _uniform(g, -0.6, 0.3)]).reshape(3)
    )
    ambient = float(_uniform(g, 0.35, 0.55))
    return Scene(
        room_lo=room_lo,
        room_hi=room_hi,
        intrinsics=k.float(),
        cam_rot=cam_rot.float().contiguous(),
        cam_pos=cam_pos.float().contiguous(),
        obj_kind=kind,
        obj_half=half.float(),
        obj_rot=obj_rot.float().contiguous(),
        obj_pos=obj_pos.float().contiguous(),
        obj_moving=moving,
        materials=materials,
        light_dir=light.float(),
        ambient=ambient,
    )
