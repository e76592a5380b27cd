"""Ray casting of synth4d scenes and their exact dense labels: RGB, depth, normals, flow, motion.

All rays of a frame start at that frame's camera centre; a ray is given by its camera-frame
direction (X/Z, Y/Z, 1), so the ray parameter of a hit is its z-depth. Pixel (i, j) has its centre
at x = j + 0.5, y = i + 0.5 and a camera-frame point projects to x = fx * X / Z + cx.

Layout: per-ray quantities are channel-first, (C, T, P) with P = H * W pixels in row-major order
(viewed as (C, T * P) for sparse work). Element-wise ops then stay contiguous, 3x3 rotations are
a few fused multiply-adds, and the rays of one object or one material are gathered and scattered
with `index_select` / `index_copy_` along the flattened ray dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange

from .scene import NOISE_TERMS, NUM_ROOM_MATERIALS, SPHERE, Scene
from .textures import photo_color

NEAR = 1e-3
"""Smallest z-depth a hit may have (scene units)."""
VIS_ABS_TOL = 1e-3
VIS_REL_TOL = 1e-4
"""A track point is unoccluded when the first hit along its ray is within abs + rel * z of it."""
PREFILTER = 2 * math.pi**2 * 1.0**2
"""A Gaussian blur of sigma 1 px scales a sinusoid of f cycles/px by exp(-PREFILTER * f^2)."""
EDGE_SHARPNESS = 2.5
"""Checker and stripe edges are tanh(EDGE_SHARPNESS * attenuation * sin(...))."""
MIN_COS = 0.15
"""Footprints are computed with the cosine of the viewing angle clamped to at least this."""


def rotate(rot: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-frame rotation: rot (T, 3, 3) applied to vectors v (3, T, P) -> (3, T, P)."""
    r = rot[..., None]  # (T, 3, 3, 1) broadcasts against (T, P)
    out = torch.empty(torch.broadcast_shapes(v.shape, (3, *r.shape[:1], 1)))
    for i in range(3):
        torch.mul(v[0], r[:, i, 0], out=out[i])
        out[i].addcmul_(v[1], r[:, i, 1]).addcmul_(v[2], r[:, i, 2])
    return out


def rotate_rows(rot9: torch.Tensor, v: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """Per-ray rotation: rot9 (9, n) row-major 3x3 entries applied to v (3, n) -> (3, n).

    With transpose=True applies the inverse rotation R^T.
    """
    out = torch.empty(3, v.shape[1])
    for i in range(3):
        e0, e1, e2 = (rot9[i], rot9[3 + i], rot9[6 + i]) if transpose else rot9[3 * i : 3 * i + 3]
        torch.mul(v[0], e0, out=out[i])
        out[i].addcmul_(v[1], e1).addcmul_(v[2], e2)
    return out


def _rot_table(rot: torch.Tensor) -> torch.Tensor:
    """(T, 3, 3) rotations -> (9, T) table for `index_select` by frame."""
    return rot.reshape(-1, 9).T.contiguous()


def pixel_centers(height: int, width: int) -> torch.Tensor:
    """Continuous (x, y) of every pixel centre, (2, H*W), row-major: pixel (i, j) -> (j + 0.5, i + 0.5)."""
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return rearrange(torch.stack([xx, yy]), "c h w -> c (h w)")


def unproject_dirs(intrinsics: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Camera-frame directions (X/Z, Y/Z, 1) (3, T, P) of pixel positions xy (2, T, P)."""
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None]
    x = (xy[0] - cx) / fx
    y = (xy[1] - cy) / fy
    return torch.stack([x, y, torch.ones_like(x)])


def project(intrinsics: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Pixel positions (2, T, P) of camera-frame points (3, T, P) with z > 0; intrinsics (T, 3, 3)."""
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None]
    inv_z = 1.0 / points[2]
    return torch.stack([fx * points[0] * inv_z + cx, fy * points[1] * inv_z + cy])


def to_camera(scene: Scene, points: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Camera-frame coordinates (3, S, P) of world points (3, S, P) in the cameras of frames (S,)."""
    rot, pos = scene.cam_rot[frames], scene.cam_pos[frames]
    return rotate(rot.transpose(1, 2), points - pos.T[..., None])


@dataclass(frozen=True)
class Hits:
    """First hits of (T, P) rays.

    depth (T, P) z-depth; obj (T, P) long id (0 = room, k = object k-1); world_dirs (3, T, P) the
    world-frame ray directions (camera rotation times (X/Z, Y/Z, 1)); face (T, P) the axis of the
    room face each ray leaves the room through. Hit point = camera centre + depth * world_dirs.
    """

    depth: torch.Tensor
    obj: torch.Tensor
    world_dirs: torch.Tensor
    face: torch.Tensor


def cast(scene: Scene, dirs_cam: torch.Tensor) -> Hits:
    """Nearest hits of rays from each frame's camera centre with directions dirs_cam (3, T, P)."""
    _, n_t, n_p = dirs_cam.shape
    d = rotate(scene.cam_rot, dirs_cam)  # world directions (3, T, P)

    # Room: the camera is inside the box, so each ray leaves it through exactly one face.
    t_axes = torch.where(d > 0, scene.room_hi[:, None, None], scene.room_lo[:, None, None])
    t_axes.sub_(scene.cam_pos.T[..., None]).div_(d)
    t_axes.masked_fill_(d == 0, math.inf)  # parallel to that axis' faces (x / +0.0 may be -inf)
    t_room, face = t_axes.min(0)
    del t_axes

    n_o = scene.num_objects
    if n_o == 0:
        return Hits(t_room, torch.zeros_like(face), d, face)
    # Objects: bounding-sphere test on every (frame, object, ray), exact test on the candidates.
    # (In-place ops: fresh multi-megabyte temporaries cost more than the arithmetic.)
    w = scene.obj_pos - scene.cam_pos[:, None]  # (T, O, 3) camera -> centre
    b = w[..., 0, None] * d[0][:, None]  # (T, O, P) = d . w
    b.addcmul_(w[..., 1, None], d[1][:, None]).addcmul_(w[..., 2, None], d[2][:, None])
    dd = (d[0] * d[0]).addcmul_(d[1], d[1]).addcmul_(d[2], d[2])[:, None]  # (T, 1, P) = |d|^2
    r2 = torch.where(scene.obj_kind == SPHERE, scene.obj_half[:, 0] ** 2, (scene.obj_half**2).sum(-1))
    cc = ((w * w).sum(-1) - r2)[..., None]  # (T, O, 1): |w|^2 - r^2
    disc = (b * b).addcmul_(dd, cc, value=-1.0)
    # b <= 0 with the camera outside the sphere puts both roots behind the camera.
    disc.masked_fill_(b <= 0, -1.0)
    ti, oi, pi = (disc >= 0).nonzero(as_tuple=True)
    t_hit = torch.full((ti.numel(),), math.inf)
    is_sphere = scene.obj_kind[oi] == SPHERE
    # Spheres: stable near root t0 = cc / (b + sqrt(disc)).
    sel = is_sphere.nonzero()[:, 0]
    if sel.numel():
        ts, os_, ps = ti[sel], oi[sel], pi[sel]
        t0 = cc[ts, os_, 0] / (b[ts, os_, ps] + torch.sqrt(disc[ts, os_, ps]))
        t_hit[sel] = torch.where(t0 > NEAR, t0, math.inf)
    del b, disc
    # Boxes: slab test in the box frame.
    sel = (~is_sphere).nonzero()[:, 0]
    if sel.numel():
        tb, ob = ti[sel], oi[sel]
        table = scene.obj_rot.reshape(n_t * n_o, 9).T.contiguous()  # (9, T * O) object-to-world
        rot9 = table.index_select(1, tb * n_o + ob)
        d_local = rotate_rows(rot9, d.reshape(3, -1).index_select(1, tb * n_p + pi[sel]), transpose=True)
        o_local = rotate_rows(rot9, -w[tb, ob].T, transpose=True)  # R^T (camera - centre)
        half = scene.obj_half[ob].T  # (3, n)
        inv = d_local.reciprocal_()
        t1 = (-half - o_local).mul_(inv)
        t2 = (half - o_local).mul_(inv)
        t_near = torch.minimum(t1, t2).amax(0)
        t_far = torch.maximum(t1, t2).amin(0)
        t_hit[sel] = torch.where((t_near <= t_far) & (t_near > NEAR), t_near, math.inf)
    # Nearest hit: min over the room and the object candidates of each ray.
    hit = t_hit < math.inf
    ray, t_hit, oi = (ti * n_p + pi)[hit], t_hit[hit], oi[hit]
    depth = t_room.reshape(-1)
    depth.scatter_reduce_(0, ray, t_hit, reduce="amin")
    won = t_hit == depth[ray]
    obj = torch.zeros(n_t * n_p, dtype=torch.long)
    obj[ray[won]] = oi[won] + 1
    return Hits(depth.reshape(n_t, n_p), obj.reshape(n_t, n_p), d, face)


@dataclass(frozen=True)
class Surface:
    """Surface attributes of the hits of (T, P) rays, channel-first over the T * P rays.

    point (3, TP) world; normal (3, TP) world, unit, facing the camera; material (TP,) long (room
    face 2 * axis + high, then NUM_ROOM_MATERIALS + object); texture (9, TP) packed texture inputs:
    rows 0-2 the point in its texture frame (world for the room, object frame for objects), rows
    3-5 the normal in that frame, rows 6-7 uv in-surface coordinates in scene units, row 8 the
    pixel footprint (scene units per pixel; left for the caller to fill).
    """

    point: torch.Tensor
    normal: torch.Tensor
    material: torch.Tensor
    texture: torch.Tensor


def surface(scene: Scene, hits: Hits) -> Surface:
    """World points, normals, texture coordinates and materials of `hits`."""
    d = hits.world_dirs
    _, n_t, n_p = d.shape
    point = (hits.depth * d).add_(scene.cam_pos.T[..., None])  # (3, T, P)

    # Room faces everywhere first (dense), then overwritten on object rays.
    face = hits.face[None]
    high = d.gather(0, face)[0] > 0
    normal = torch.zeros_like(point).scatter_(0, face, torch.where(high, -1.0, 1.0)[None])
    texture = torch.empty(9, n_t, n_p)
    texture[0:3] = point
    texture[3:6] = normal
    torch.gather(point, 0, torch.cat([(face + 1) % 3, (face + 2) % 3]), out=texture[6:8])
    point, normal, texture = point.reshape(3, -1), normal.reshape(3, -1), texture.reshape(9, -1)
    material = (2 * hits.face + high.long()).reshape(-1)

    obj = hits.obj.reshape(-1)
    for k in range(scene.num_objects):
        idx = (obj == k + 1).nonzero()[:, 0]
        if idx.numel() == 0:
            continue
        frame = idx // n_p
        rot9 = _rot_table(scene.obj_rot[:, k]).index_select(1, frame)  # (9, n)
        centre = scene.obj_pos[:, k].T.index_select(1, frame)
        local = rotate_rows(rot9, point.index_select(1, idx) - centre, transpose=True)  # (3, n)
        half = scene.obj_half[k]
        if int(scene.obj_kind[k]) == SPHERE:
            r = half[0]
            n_local = local / local.norm(dim=0, keepdim=True)
            lon = torch.atan2(local[2], local[0])
            lat = torch.asin((local[1] / r).clamp(-1.0, 1.0))
            uv_k = torch.stack([lon * r, lat * r])
        else:
            a = local.abs() / half[:, None]
            axis = torch.where((a[0] >= a[1]) & (a[0] >= a[2]), 0, torch.where(a[1] >= a[2], 1, 2))[None]
            sign = torch.where(local.gather(0, axis) >= 0, 1.0, -1.0)
            n_local = torch.zeros_like(local).scatter_(0, axis, sign)
            uv_k = local.gather(0, torch.cat([(axis + 1) % 3, (axis + 2) % 3]))
        texture.index_copy_(1, idx, torch.cat([local, n_local, uv_k, torch.zeros(1, idx.numel())]))
        normal.index_copy_(1, idx, rotate_rows(rot9, n_local))
        material.index_fill_(0, idx, NUM_ROOM_MATERIALS + k)
    # Face the camera (only matters if the camera were ever inside an object).
    d = d.reshape(3, -1)
    facing = (normal[0] * d[0]).addcmul_(normal[1], d[1]).addcmul_(normal[2], d[2])
    normal = torch.where(facing > 0, -normal, normal)
    return Surface(point, normal, material, texture)


def _material_color(scene: Scene, m: int, attrs: torch.Tensor) -> torch.Tensor:
    """Colour (3, n) of material m from packed attributes attrs (9, n): texture-frame point (3),
    texture-frame normal (3), uv (2) and pixel footprint (1) in scene units per pixel."""
    mats = scene.materials
    p, n, uv, fp = attrs[0:3], attrs[3:6], attrs[6:8], attrs[8]
    fp2 = fp * fp
    freq = mats.noise_freq[m]  # (2K, 3) cycles per unit
    # Squared frequency within the surface plane; room faces have one constant normal.
    f_n = freq @ (n[:, :1] if m < NUM_ROOM_MATERIALS else n)  # (2K, 1) or (2K, n)
    in_plane2 = ((freq * freq).sum(-1)[:, None] - f_n * f_n).clamp(min=0)
    waves = (freq @ p).mul_(2 * math.pi).add_(mats.noise_phase[m][:, None]).sin_()
    waves.mul_((in_plane2 * fp2).mul_(-PREFILTER).exp_())
    noise1 = waves[:NOISE_TERMS].sum(0) * 0.5
    noise2 = waves[NOISE_TERMS:].sum(0) * 0.5

    def along(angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, s = torch.cos(angle), torch.sin(angle)
        return c * uv[0] + s * uv[1], c * uv[1] - s * uv[0]

    fc = mats.checker_freq[m]
    a0, a1 = along(mats.checker_angle[m])
    sharp = EDGE_SHARPNESS * torch.exp(-PREFILTER * (fc * fc / 4) * fp2)
    checker = torch.tanh(sharp * torch.sin(math.pi * fc * a0) * torch.sin(math.pi * fc * a1))
    fs = mats.stripe_freq[m]
    s0, _ = along(mats.stripe_angle[m])
    sharp = EDGE_SHARPNESS * torch.exp(-PREFILTER * (fs * fs) * fp2)
    stripe = torch.tanh(sharp * torch.sin((2 * math.pi) * fs * s0))
    wc, ws = mats.checker_weight[m], mats.stripe_weight[m]
    pattern = 0.5 + 0.5 * (wc * checker + ws * stripe + (1 - wc - ws) * noise1.clamp(-1, 1))
    c0, c1, c2 = mats.color0[m][:, None], mats.color1[m][:, None], mats.color2[m][:, None]
    col = c0 + (c1 - c0) * pattern + (mats.color_noise[m] * (2 * c2 - 1)) * noise2
    return col.clamp(0.0, 1.0)


def albedo(scene: Scene, surf: Surface) -> torch.Tensor:
    """Texture colour (3, TP) in [0, 1] of surface points: procedural, or a photo where scene.photos says.

    Reads surf.texture (row 8 = pixel footprint in scene units per pixel); procedural patterns
    finer than about two pixels fade out (an analytic Gaussian prefilter) and photos are mip-mapped
    by the same footprint, which limits aliasing.
    """
    out = torch.empty_like(surf.point)
    photos = scene.photos
    for m in range(NUM_ROOM_MATERIALS + scene.num_objects):
        idx = (surf.material == m).nonzero()[:, 0]
        if idx.numel():
            attrs = surf.texture.index_select(1, idx)
            if photos is not None and bool(photos.use[m]):
                color = photo_color(photos, m, attrs[6:8], attrs[8])
            else:
                color = _material_color(scene, m, attrs)
            out.index_copy_(1, idx, color)
    return out


def move_points(
    scene: Scene, points: torch.Tensor, obj: torch.Tensor, src: torch.Tensor, dst: torch.Tensor
) -> torch.Tensor:
    """World positions at frames dst of surface points seen at frames src.

    points (3, S, P) world at frames src; obj (S, P) ids; src and dst (S, P) frame indices. Room
    and static-object points stay put; points of moving objects follow their object's rigid motion.
    """
    movers = [k for k in range(scene.num_objects) if bool(scene.obj_moving[k])]
    if not movers:
        return points
    flat = points.reshape(3, -1).clone()
    obj, src, dst = obj.reshape(-1), src.reshape(-1), dst.reshape(-1)
    for k in movers:
        idx = (obj == k + 1).nonzero()[:, 0]
        if idx.numel() == 0:
            continue
        f_src, f_dst = src[idx], dst[idx]
        table, centres = _rot_table(scene.obj_rot[:, k]), scene.obj_pos[:, k].T
        local = flat.index_select(1, idx) - centres.index_select(1, f_src)
        local = rotate_rows(table.index_select(1, f_src), local, transpose=True)
        moved = rotate_rows(table.index_select(1, f_dst), local) + centres.index_select(1, f_dst)
        flat.index_copy_(1, idx, moved)
    return flat.reshape(points.shape)


def _flow(
    scene: Scene,
    points: torch.Tensor,
    obj: torch.Tensor,
    pix: torch.Tensor,
    src: torch.Tensor,
    dst: torch.Tensor,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow (2, S, P) in pixels from frames src (S,) to frames dst (S,) and its validity (S, P).

    points (3, S, P) are the world hits at frames src with ids obj (S, P) seen at pixel positions
    pix (2, 1, P). Valid where the moved point lies in front of the dst camera and inside the dst
    image; occlusion in dst does not invalidate (the flow there is exact geometry too).
    """
    h, w = size
    grid = obj.shape
    moved = move_points(scene, points, obj, src[:, None].expand(grid), dst[:, None].expand(grid))
    cam = to_camera(scene, moved, dst)
    front = cam[2] > NEAR
    cam[2].masked_fill_(~front, 1.0)
    xy = project(scene.intrinsics[dst], cam)
    inside = (xy[0] >= 0) & (xy[0] <= w) & (xy[1] >= 0) & (xy[1] <= h)
    valid = front & inside
    flow = (xy - pix).masked_fill_(~valid, 0.0)
    return flow, valid


def render(scene: Scene, height: int, width: int) -> dict[str, torch.Tensor]:
    """Dense labels of every frame of `scene` at H x W.

    Returns video (3, T, H, W) in [0, 1]; depth (1, T, H, W) z-depth; normals (3, T, H, W) unit,
    camera frame; flow / flow_forward (2, T, H, W) pixels; flow_valid (1, T, H, W) bool;
    motion_mask (1, T, H, W) float {0, 1}; object_id (T, H, W) long (0 room, k object k-1).
    """
    n_t = scene.num_frames
    pix = pixel_centers(height, width)[:, None]  # (2, 1, P)
    dirs = unproject_dirs(scene.intrinsics, pix.expand(2, n_t, -1))  # (3, T, P)
    hits = cast(scene, dirs)
    surf = surface(scene, hits)

    # Shading: texture times (ambient + Lambertian term of one directional light).
    d = hits.world_dirs.reshape(3, -1)
    n = surf.normal
    d_norm = (d[0] * d[0]).addcmul_(d[1], d[1]).addcmul_(d[2], d[2]).sqrt_()
    cos = (n[0] * d[0]).addcmul_(n[1], d[1]).addcmul_(n[2], d[2]).abs_().div_(d_norm).clamp_(min=MIN_COS)
    fx = scene.intrinsics[:, 0, 0, None].expand(n_t, height * width).reshape(-1)
    torch.mul(hits.depth.reshape(-1), d_norm, out=surf.texture[8]).div_(cos.mul_(fx))
    light = scene.light_dir
    shade = (n[0] * light[0]).add_(n[1] * light[1]).add_(n[2] * light[2]).clamp_(min=0)
    shade.mul_(1 - scene.ambient).add_(scene.ambient)
    rgb = albedo(scene, surf).mul_(shade)
    normals_cam = rotate(scene.cam_rot.transpose(1, 2), n.reshape(3, n_t, -1))
    normals_cam.div_((normals_cam * normals_cam).sum(0).sqrt_())
    points = surf.point.reshape(3, n_t, -1)

    obj = hits.obj
    frames = torch.arange(n_t)
    flow_b = torch.zeros(2, n_t, height * width)
    flow_f = torch.zeros(2, n_t, height * width)
    valid_b = torch.zeros(n_t, height * width, dtype=torch.bool)
    if n_t > 1:
        size = (height, width)
        fb, vb = _flow(scene, points[:, 1:], obj[1:], pix, frames[1:], frames[:-1], size)
        ff, _ = _flow(scene, points[:, :-1], obj[:-1], pix, frames[:-1], frames[1:], size)
        flow_b[:, 1:], valid_b[1:], flow_f[:, :-1] = fb, vb, ff
    moving_ids = torch.cat([torch.zeros(1, dtype=torch.bool), scene.obj_moving])

    def img(x: torch.Tensor) -> torch.Tensor:
        return rearrange(x.reshape(-1, n_t, height * width), "c t (h w) -> c t h w", h=height)

    return {
        "video": img(rgb),
        "depth": img(hits.depth),
        "normals": img(normals_cam),
        "flow": img(flow_b),
        "flow_valid": img(valid_b),
        "flow_forward": img(flow_f),
        "motion_mask": img(moving_ids[obj].float()),
        "object_id": rearrange(obj, "t (h w) -> t h w", h=height),
    }
