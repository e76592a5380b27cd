"""Exactness and API tests of the synth4d procedural generator."""

from __future__ import annotations

import math

import pytest
import torch

from l4p_framework import batch as B
from l4p_framework.data.synth4d import (
    SPLIT_SEEDS,
    Synth4D,
    Synth4DConfig,
    generate_clip,
    render_clip,
    synth4d_spec,
)
from l4p_framework.errors import ConfigError

SMALL = Synth4DConfig(num_frames=8, height=64, width=64, num_queries=48)
SEEDS = (3, 11, 27, 40, 58)


@pytest.fixture(scope="module")
def clips():
    return [render_clip(seed, SMALL) for seed in SEEDS]


def _pixel_grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (H, W) and y (H, W) of the pixel centres (+0.5 convention)."""
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return xx, yy


def _bilinear(img: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample img (C, H, W) at continuous pixel positions x, y (...) (+0.5 centres) -> (C, ...)."""
    _, h, w = img.shape
    fx, fy = x - 0.5, y - 0.5
    x0, y0 = fx.floor(), fy.floor()
    ax, ay = fx - x0, fy - y0
    out = 0
    for dx, dy, weight in (
        (0, 0, (1 - ax) * (1 - ay)),
        (1, 0, ax * (1 - ay)),
        (0, 1, (1 - ax) * ay),
        (1, 1, ax * ay),
    ):
        xi = (x0 + dx).long().clamp(0, w - 1)
        yi = (y0 + dy).long().clamp(0, h - 1)
        out = out + img[:, yi, xi] * weight
    return out


def _unproject(depth: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Camera-frame points (3, H, W) of a z-depth map (H, W) with intrinsics k (3, 3)."""
    xx, yy = _pixel_grid(*depth.shape)
    x = (xx - k[0, 2]) / k[0, 0] * depth
    y = (yy - k[1, 2]) / k[1, 1] * depth
    return torch.stack([x, y, depth])


def test_keys_shapes_and_ranges(clips):
    sample, _ = clips[0]
    t, h, w, n = SMALL.num_frames, SMALL.height, SMALL.width, SMALL.num_queries
    expected = {
        B.VIDEO: (3, t, h, w),
        B.DEPTH: (1, t, h, w),
        B.DEPTH_VALID: (1, t, h, w),
        B.FLOW: (2, t, h, w),
        B.FLOW_VALID: (1, t, h, w),
        B.FLOW_FORWARD: (2, t, h, w),
        B.NORMALS: (3, t, h, w),
        B.MOTION_MASK: (1, t, h, w),
        B.INTRINSICS: (t, 3, 3),
        B.POSES: (t, 4, 4),
        B.QUERIES: (n, 3),
        B.TRACKS: (n, t, 2),
        B.VISIBILITY: (n, t),
        B.TRACK_DEPTH: (n, t),
        B.TRACKS_3D: (n, t, 3),
    }
    for key, shape in expected.items():
        assert tuple(sample[key].shape) == shape, key
        want = torch.bool if key in (B.DEPTH_VALID, B.FLOW_VALID, B.VISIBILITY) else torch.float32
        assert sample[key].dtype == want, key
        assert torch.isfinite(sample[key].float()).all(), key
    assert set(synth4d_spec().provides) == set(expected)
    assert sample["seed"] == SEEDS[0] and isinstance(sample["name"], str)
    video = sample[B.VIDEO]
    assert video.min() >= 0 and video.max() <= 1 and video.std() > 0.05
    assert (sample[B.DEPTH] > 0).all() and sample[B.DEPTH_VALID].all()
    assert torch.allclose(sample[B.NORMALS].norm(dim=0), torch.ones(t, h, w), atol=1e-5)
    assert not sample[B.FLOW_VALID][:, 0].any() and (sample[B.FLOW][:, 0] == 0).all()
    assert (sample[B.FLOW_FORWARD][:, -1] == 0).all()
    assert sample[B.FLOW_VALID][:, 1:].float().mean() > 0.8
    assert set(sample[B.MOTION_MASK].unique().tolist()) <= {0.0, 1.0}
    rot = sample[B.POSES][:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(t, 3, 3), atol=1e-5)
    k = sample[B.INTRINSICS]
    assert (k[:, 0, 2] - w / 2).abs().max() < 0.05 * w and (k[:, 1, 2] - h / 2).abs().max() < 0.05 * h


def test_backward_flow_warps_previous_frame():
    """I_{t-1} sampled at x + flow(x) reproduces I_t where the point is visible in both frames.

    Visible in both: the forward flow of t-1 at the warped point leads back (forward-backward
    check) and the four pixels the bilinear sampler reads at t-1 show the same object. 96x96 so
    that flows are a few pixels (at tiny sizes sub-pixel flows leave zero-flow errors tiny too).
    """
    cfg = Synth4DConfig(num_frames=6, height=96, width=96, num_queries=1)
    err_flow, err_zero, used = 0.0, 0.0, 0
    for seed in range(6):
        sample, aux = render_clip(seed, cfg)
        video, flow, fwd, ids = sample[B.VIDEO], sample[B.FLOW], sample[B.FLOW_FORWARD], aux["object_id"]
        valid = sample[B.FLOW_VALID][0]
        h, w = video.shape[-2:]
        xx, yy = _pixel_grid(h, w)
        for t in range(1, video.shape[1]):
            x, y = xx + flow[0, t], yy + flow[1, t]
            back = _bilinear(fwd[:, t - 1], x, y)
            both = ((back + flow[:, t]).norm(dim=0) < 0.25) & valid[t]
            x0, y0 = (x - 0.5).floor().long(), (y - 0.5).floor().long()
            for dx in (0, 1):
                for dy in (0, 1):
                    both &= ids[t - 1][(y0 + dy).clamp(0, h - 1), (x0 + dx).clamp(0, w - 1)] == ids[t]
            warped = _bilinear(video[:, t - 1], x, y)
            err_flow += (warped - video[:, t]).abs().mean(0)[both].sum().item()
            err_zero += (video[:, t - 1] - video[:, t]).abs().mean(0)[both].sum().item()
            used += int(both.sum())
    assert used > 0.6 * 6 * 5 * 96 * 96
    assert err_flow <= err_zero / 5, (err_flow, err_zero)


def test_tracks_reproject_and_are_rigidly_attached(clips):
    for sample, _ in clips:
        k, poses = sample[B.INTRINSICS], sample[B.POSES]
        tracks, vis, pts = sample[B.TRACKS], sample[B.VISIBILITY], sample[B.TRACKS_3D]
        queries, z = sample[B.QUERIES], sample[B.TRACK_DEPTH]
        assert torch.equal(z, pts[..., 2])
        # 3D camera-frame positions project to the 2D tracks.
        proj_x = k[None, :, 0, 0] * pts[..., 0] / pts[..., 2] + k[None, :, 0, 2]
        proj_y = k[None, :, 1, 1] * pts[..., 1] / pts[..., 2] + k[None, :, 1, 2]
        err = (torch.stack([proj_x, proj_y], -1) - tracks).norm(dim=-1)
        assert vis.any() and err[vis].max() < 1e-3
        # Queries: integral frame index, visible there, at the track's position.
        q_t = queries[:, 0].long()
        assert torch.equal(queries[:, 0], q_t.float())
        n = torch.arange(len(q_t))
        assert vis[n, q_t].all()
        assert (tracks[n, q_t] - queries[:, 1:]).abs().max() < 1e-3
        # Visible points are inside the image, in front of the camera and on the rendered surface.
        t_len, h, w = sample[B.DEPTH].shape[1:]
        assert (tracks[vis][:, 0] >= 0).all() and (tracks[vis][:, 0] < w).all()
        assert (tracks[vis][:, 1] >= 0).all() and (tracks[vis][:, 1] < h).all() and (z[vis] > 0).all()
        ni, ti = vis.nonzero(as_tuple=True)
        px = tracks[ni, ti].floor().long()
        rendered = sample[B.DEPTH][0, ti, px[:, 1], px[:, 0]]
        close = (rendered - z[ni, ti]).abs() / z[ni, ti] < 0.05
        assert close.float().mean() > 0.8
        # World-frame positions: camera-to-world pose of the 3D track; static surfaces stay put.
        world = torch.einsum("tij,ntj->nti", poses[:, :3, :3], pts) + poses[None, :, :3, 3]
        unproj = torch.stack(
            [
                (queries[:, 1] - k[q_t, 0, 2]) / k[q_t, 0, 0] * z[n, q_t],
                (queries[:, 2] - k[q_t, 1, 2]) / k[q_t, 1, 1] * z[n, q_t],
                z[n, q_t],
            ],
            -1,
        )
        assert (unproj - pts[n, q_t]).abs().max() < 1e-3
        mm = sample[B.MOTION_MASK][0]
        qpx = queries[:, 1:].floor().long()
        neigh = torch.stack(
            [
                mm[q_t, (qpx[:, 1] + dy).clamp(0, h - 1), (qpx[:, 0] + dx).clamp(0, w - 1)]
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
            ],
            -1,
        )
        spread = (world - world[:, :1]).norm(dim=-1).amax(-1)
        static, moving = (neigh == 0).all(-1), (neigh == 1).all(-1)
        assert static.any() and (spread[static] < 1e-4 * world[static].norm(dim=-1).amax(-1) + 1e-4).all()
        assert (spread[moving] > 1e-3).all()


def test_track_sampling_hits_moving_objects_and_later_frames():
    cfg = Synth4DConfig(num_frames=8, height=48, width=48, num_queries=400)
    sample = generate_clip(5, cfg)
    q_t = sample[B.QUERIES][:, 0]
    assert 0.55 < (q_t == 0).float().mean() < 0.85 and (q_t > 0).any()
    mm = sample[B.MOTION_MASK][0]
    px = sample[B.QUERIES][:, 1:].floor().long()
    on_moving = mm[q_t.long(), px[:, 1], px[:, 0]].mean()
    assert on_moving >= 0.2 and on_moving > mm.mean()
    assert (~sample[B.VISIBILITY]).any()  # some points leave the view or get occluded


def test_normals_agree_with_depth_on_planes(clips):
    angles = []
    for sample, _ in clips:
        depth, normals, k = sample[B.DEPTH][0], sample[B.NORMALS], sample[B.INTRINSICS]
        for t in range(depth.shape[0]):
            p = _unproject(depth[t], k[t])
            dx = p[:, 1:-1, 2:] - p[:, 1:-1, :-2]
            dy = p[:, 2:, 1:-1] - p[:, :-2, 1:-1]
            est = -torch.linalg.cross(dx, dy, dim=0)
            est = est / est.norm(dim=0, keepdim=True)
            n = normals[:, t]
            # Planar pixels: all 3x3 neighbours share the exact normal (a room face or box face).
            flat = torch.ones_like(n[0, 1:-1, 1:-1], dtype=torch.bool)
            for oy in (0, 1, 2):
                for ox in (0, 1, 2):
                    flat &= (
                        n[:, oy : oy + n.shape[1] - 2, ox : ox + n.shape[2] - 2] == n[:, 1:-1, 1:-1]
                    ).all(0)
            cos = (est * n[:, 1:-1, 1:-1]).sum(0)[flat].clamp(-1, 1)
            angles.append(torch.rad2deg(torch.acos(cos)))
    angles = torch.cat(angles)
    assert angles.numel() > 10_000
    assert angles.max() < 1.0, angles.max()


def test_motion_mask_is_exactly_the_moving_objects(clips):
    any_static_object = False
    for sample, aux in clips:
        scene, ids = aux["scene"], aux["object_id"]
        moving_ids = torch.cat([torch.zeros(1, dtype=torch.bool), scene.obj_moving])
        assert torch.equal(sample[B.MOTION_MASK][0], moving_ids[ids].float())
        assert sample[B.MOTION_MASK].any()
        # Moving objects really move (in the world) and static ones do not.
        for k in range(scene.num_objects):
            pos, rot = scene.obj_pos[:, k], scene.obj_rot[:, k]
            still = torch.equal(pos, pos[:1].expand_as(pos)) and torch.equal(rot, rot[:1].expand_as(rot))
            assert still != bool(scene.obj_moving[k])
            if still and (ids == k + 1).any():
                any_static_object = True
    assert any_static_object


def test_static_flow_matches_depth_and_camera_motion(clips):
    """Flow of non-moving pixels = unproject with depth/K/pose at t, project into t-1 (and t+1)."""
    moving_differs = []
    for sample, _ in clips:
        depth, k, poses = sample[B.DEPTH][0], sample[B.INTRINSICS], sample[B.POSES]
        still = sample[B.MOTION_MASK][0] == 0
        xx, yy = _pixel_grid(*depth.shape[-2:])
        for t in range(1, depth.shape[0]):
            for other, flow, valid in (
                (t - 1, sample[B.FLOW][:, t], sample[B.FLOW_VALID][0, t]),
                (t - 2, sample[B.FLOW_FORWARD][:, t - 1], None),
            ):
                src = t if other == t - 1 else t - 1
                dst = t - 1 if other == t - 1 else t
                p = _unproject(depth[src], k[src]).reshape(3, -1)
                world = poses[src, :3, :3] @ p + poses[src, :3, 3:]
                cam = poses[dst, :3, :3].T @ (world - poses[dst, :3, 3:])
                x = k[dst, 0, 0] * cam[0] / cam[2] + k[dst, 0, 2]
                y = k[dst, 1, 1] * cam[1] / cam[2] + k[dst, 1, 2]
                implied = torch.stack([x - xx.reshape(-1), y - yy.reshape(-1)]).reshape(flow.shape)
                inside = (cam[2] > 0).reshape(x.shape) & (x >= 0) & (x <= xx.shape[1]) & (y >= 0)
                inside &= y <= xx.shape[0]
                inside = inside.reshape(still.shape[1:])
                if valid is not None:  # validity of static pixels = lands in view
                    assert torch.equal(valid[still[src]], inside[still[src]])
                m = still[src] & inside
                assert (implied - flow)[:, m].abs().max() < 2e-3
                mv = ~still[src] & inside
                if mv.any():
                    moving_differs.append((implied - flow)[:, mv].norm(dim=0).median())
    assert moving_differs and torch.stack(moving_differs).max() > 0.05


def test_determinism():
    cfg = Synth4DConfig(num_frames=4, height=32, width=40, num_queries=16)
    a, b, c = generate_clip(123, cfg), generate_clip(123, cfg), generate_clip(124, cfg)
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key
        else:
            assert value == b[key]
    assert not torch.equal(a[B.VIDEO], c[B.VIDEO])
    # The generator never touches the global RNG.
    state = torch.get_rng_state()
    generate_clip(7, cfg)
    assert torch.equal(state, torch.get_rng_state())


def test_any_size_and_edge_cases():
    cfg = Synth4DConfig(num_frames=2, height=24, width=40, num_queries=0, min_objects=0, max_objects=0)
    sample = generate_clip(1, cfg)
    assert sample[B.VIDEO].shape == (3, 2, 24, 40)
    assert sample[B.TRACKS].shape == (0, 2, 2) and sample[B.QUERIES].shape == (0, 3)
    assert not sample[B.MOTION_MASK].any()
    cfg = Synth4DConfig(num_frames=3, height=20, width=30, num_queries=5, static_object_prob=1.0)
    sample = generate_clip(2, cfg)
    assert sample[B.VIDEO].shape == (3, 3, 20, 30) and sample[B.TRACKS].shape == (5, 3, 2)


def test_dataset_splits_and_options():
    ranges = sorted(SPLIT_SEEDS.values())
    for (_, stop), (start, _) in zip(ranges, ranges[1:]):
        assert stop <= start
    opts = dict(num_frames=2, height=16, width=16, num_queries=4)
    seen = {}
    for split in ("train", "val", "test"):
        ds = synth4d_spec().build(split, length=3, **opts)
        assert len(ds) == 3
        seeds = [ds[i]["seed"] for i in range(3)]
        lo, hi = SPLIT_SEEDS[split]
        assert all(lo <= s < hi for s in seeds)
        seen[split] = set(seeds)
        assert ds[0]["name"].startswith(f"synth4d-{split}-")
        with pytest.raises(IndexError):
            ds[3]
    assert not (seen["train"] & seen["val"]) and not (seen["val"] & seen["test"])
    assert len(Synth4D("val")) == SPLIT_SEEDS["val"][1] - SPLIT_SEEDS["val"][0]
    with pytest.raises(ConfigError, match=r"num_frame.*valid options:.*num_frames"):
        Synth4D("train", num_frame=8)
    with pytest.raises(ConfigError, match="split"):
        Synth4D("training")
    with pytest.raises(ConfigError, match="length"):
        Synth4D("val", length=10**7)
    with pytest.raises(ConfigError, match="min_objects"):
        Synth4D("train", min_objects=5, max_objects=2)


def test_spec_registered_by_core_plugin():
    from l4p_framework.data.synth4d import synth4d_spec as spec_fn

    spec = spec_fn()
    assert spec.name == "synth4d" and set(spec.splits) == {"train", "val", "test"}
    assert math.isclose(len(spec.provides), len(set(spec.provides)))


def test_rays_parallel_to_a_room_face_still_hit_the_room():
    """Seed 994309 has a ray with world direction x exactly 0.0 (it once gave depth -inf and NaN RGB)."""
    from l4p_framework.data.synth4d import Synth4DConfig, generate_clip

    clip = generate_clip(994309, Synth4DConfig(num_frames=16, height=64, width=64, num_queries=8))
    for key in ("video", "depth", "normals", "flow", "flow_forward", "tracks"):
        assert torch.isfinite(clip[key]).all(), key
    assert clip["depth"].min() > 0
