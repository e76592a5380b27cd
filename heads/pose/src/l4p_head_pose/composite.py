"""Joint depth + camera alignment of windowed outputs: an explicit, named composite (l4p-model.md §4.3).

Heads never read each other's outputs; this step is what a user asks for when depth and poses must be
chained *consistently* over a long video. Each window brings its depth (its own relative scale), its
poses (relative to its first camera, at its own scale) and its intrinsics. For every window after the
first, the overlap frames (every `frame_step`-th, official: 3) are unprojected into 3D point maps, in the
chained world for the frames already aligned and in the window's own frame for the new window, and a
robust Sim(3) (s, R, t) mapping the second onto the first is fitted by seeded RANSAC over Umeyama fits
(`geometry.ransac_sim3`; inlier threshold 0.01 x the 98th percentile of the chained overlap z-depth
unless given, as the official aligner), then refined by `refine_rounds` Umeyama refits on the points
within a shrinking robust residual scale (3 x 1.4826 x the median inlier residual, between 1e-3 and 1
times the threshold; 0 rounds = the official behaviour). The window is then moved by it:
poses' = [R R_p | s R c + t], depth' = s * depth (so depth and poses are re-scaled by the *same*
factor), intrinsics unchanged; later windows overwrite the overlap, as the official driver.

Robustness: where RANSAC finds no model (too few valid points, all outliers), the window falls back to
the Sim(3) between its overlap poses and the chained ones (rotation from orientations, scale and
translation from centres) and is flagged `success=False`; it never raises. Results are deterministic
(seeded CPU generator), unlike the official unseeded subsampling, and it runs batched in torch on any
device (the official code is B = 1, numpy/scikit-image on CPU).

Three entry points:
- `joint_windowed(model, video, ...)`: runs the encoder once per window and the depth and pose heads of
  a composed `L4P` on it, and aligns as it goes (memory bounded by the window plus the output buffers).
- `joint_depth_pose_alignment(depth, poses, intrinsics, starts, ...)`: the same on per-window outputs you
  already have (lists, one entry per window).
- `JointDepthPoseAligner`: the streaming step (merge / finalize) both use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from einops import rearrange

from l4p_framework.compose import L4P, check_video
from l4p_framework.errors import InputError, PluginError
from l4p_framework.geometry import (
    apply_sim3,
    ransac_sim3,
    to_world,
    transform_poses,
    umeyama,
    unproject_depth,
)
from l4p_framework.windows import pad_video, pingpong_indices, plan_windows

from .head import chain_step

DepthScale = Literal["keep", "pose_units"]


@dataclass
class JointResult:
    """Jointly aligned outputs of a video of T frames and W windows.

    depth: (B, 1, T, H, W) z-depth in the chained world's units (window 0's scale); poses: (B, T, 4, 4)
    camera-to-world, world = window 0's frame (the first camera of the video for pose-head outputs,
    whose frame 0 is the identity); intrinsics: (B, T, 3, 3) pixels (as given by
    the windows); scale (B, W), rotation (B, W, 3, 3), translation (B, W, 3): the Sim(3) of each window
    (identity for window 0); depth_factor (B, W): the total factor applied to each window's raw depth
    (`pose_units` normalisation x scale); success (B, W) bool: the window was fitted on points (False:
    pose-fit fallback, or no overlap); starts: first frame of each window.
    """

    depth: torch.Tensor
    poses: torch.Tensor
    intrinsics: torch.Tensor
    scale: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    depth_factor: torch.Tensor
    success: torch.Tensor
    starts: tuple[int, ...]

    def crop(self, num_frames: int) -> JointResult:
        """The first `num_frames` frames (drops ping-pong padding)."""
        return replace(
            self,
            depth=self.depth[:, :, :num_frames],
            poses=self.poses[:, :num_frames],
            intrinsics=self.intrinsics[:, :num_frames],
        )

    def as_outputs(self) -> dict[str, dict[str, torch.Tensor]]:
        """{"depth": {"depth": ...}, "pose": {"poses": ..., "intrinsics": ...}} like `L4P.forward`."""
        return {"depth": {"depth": self.depth}, "pose": {"poses": self.poses, "intrinsics": self.intrinsics}}


@dataclass
class JointState:
    """Running buffers of `JointDepthPoseAligner` (depth float32, poses float64, K float32) and per-window fits."""

    depth: torch.Tensor | None = None
    poses: torch.Tensor | None = None
    intrinsics: torch.Tensor | None = None
    fits: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)


def _grow(buf: torch.Tensor | None, value: torch.Tensor, dim: int, start: int) -> torch.Tensor:
    """Write value into buf along `dim` at [start, start + len), growing buf (zeros) as needed."""
    if buf is None:
        if start != 0:
            raise InputError(f"the first window must start at frame 0, got {start}")
        return value.clone()
    end = start + value.shape[dim]
    if buf.shape[dim] < end:
        shape = list(buf.shape)
        shape[dim] = end - buf.shape[dim]
        buf = torch.cat([buf, buf.new_zeros(shape)], dim)
    buf.narrow(dim, start, value.shape[dim]).copy_(value)
    return buf


def _median_first_depth(depth: torch.Tensor) -> torch.Tensor:
    """Median valid (finite, > 0) depth of frame 0 per sequence: depth (B, 1, T, H, W) -> (B,) float64."""
    d0 = depth[:, 0, 0].double()
    med = d0.masked_fill(~(torch.isfinite(d0) & (d0 > 0)), float("nan")).flatten(1).nanmedian(dim=1).values
    return torch.where(torch.isfinite(med) & (med > 0), med, torch.ones_like(med))


class JointDepthPoseAligner:
    """Streaming joint depth + pose alignment: `merge(state, depth, poses, intrinsics, start, overlap)` per
    window in order, then `finalize(state)` -> `JointResult`.

    frame_step: use every frame_step-th overlap frame (official 3); pixel_step: use every pixel_step-th
    pixel in x and y of those frames; threshold: RANSAC inlier distance in chained-world units (None:
    0.01 x the 98th percentile of the chained overlap z-depth); max_points: points per RANSAC fit (a
    seeded random subset); seed: RANSAC seed (window w uses seed + w); min_samples, max_trials,
    min_inlier_fraction: RANSAC settings (`geometry.ransac_sim3`); refine_rounds: robust refits after
    RANSAC (module docstring); method: the pose-fit fallback ("poses" or "centres", see
    `geometry.chain_windows`, used through `chain_step`); depth_scale: "keep" uses each window's depth as given;
    "pose_units" first divides it by its first frame's median depth, the unit of the translations of a
    pose head trained with `depth_normalized_loss`, so depth and poses of a window share a scale.
    """

    def __init__(
        self,
        frame_step: int = 3,
        pixel_step: int = 1,
        threshold: float | None = None,
        max_points: int | None = 20000,
        seed: int = 0,
        min_samples: int = 4,
        max_trials: int = 100,
        min_inlier_fraction: float = 0.1,
        method: Literal["poses", "centres"] = "poses",
        depth_scale: DepthScale = "keep",
        refine_rounds: int = 3,
    ) -> None:
        if frame_step < 1 or pixel_step < 1:
            raise InputError(f"frame_step and pixel_step must be >= 1, got {frame_step} and {pixel_step}")
        if depth_scale not in ("keep", "pose_units"):
            raise InputError(f"depth_scale must be 'keep' or 'pose_units', got {depth_scale!r}")
        self.frame_step, self.pixel_step = frame_step, pixel_step
        self.threshold, self.max_points, self.seed = threshold, max_points, seed
        self.ransac = {
            "min_samples": min_samples,
            "max_trials": max_trials,
            "min_inlier_fraction": min_inlier_fraction,
        }
        self.method, self.depth_scale, self.refine_rounds = method, depth_scale, max(0, int(refine_rounds))

    def _points(self, depth: torch.Tensor, K: torch.Tensor, poses: torch.Tensor):
        """depth (B, 1, F, H, W), K (B, F, 3, 3), poses (B, F, 4, 4) -> world points (B, F, h, w, 3)
        float64 and validity (B, F, h, w), on every pixel_step-th pixel."""
        k = self.pixel_step
        pts = to_world(unproject_depth(depth[:, 0].double(), K.double()), poses.double())[:, :, ::k, ::k]
        d = depth[:, 0, :, ::k, ::k]
        return pts, torch.isfinite(d) & (d > 0) & torch.isfinite(pts).all(-1)

    def _fit_points(self, src, dst, mask, z, seed: int):
        """Robust Sim(3) mapping window points src onto chained points dst (F, h, w, 3) over `mask`;
        z: chained z-depth (F, h, w) for the default threshold. Returns (s, R, t) float64 or None when
        there are too few points or RANSAC finds no model (the caller then keeps the pose fit)."""
        src, dst = src[mask], dst[mask]
        if src.shape[0] < self.ransac["min_samples"]:
            return None
        thr = self.threshold
        if thr is None:
            zz = z[mask].double().abs()
            if zz.numel() > 100000:
                zz = zz[torch.linspace(0, zz.numel() - 1, 100000, device=zz.device).long()]
            thr = 0.01 * float(torch.quantile(zz, 0.98))
            thr = thr if thr > 0 and thr == thr else 1e-6
        fit = ransac_sim3(src, dst, thr, seed=seed, max_points=self.max_points, **self.ransac)
        if not bool(fit.success):
            return None
        s, rot, t = fit.s.double(), fit.R.double(), fit.t.double()
        for _ in range(self.refine_rounds):
            res = (dst - apply_sim3(src, s, rot, t)).norm(dim=-1)
            inl = res < thr
            if int(inl.sum()) < self.ransac["min_samples"]:
                break
            tau = min(max(3.0 * 1.4826 * float(res[inl].median()), 1e-3 * thr), thr)
            keep = res <= tau
            if int(keep.sum()) < self.ransac["min_samples"]:
                break
            s, rot, t = umeyama(src[keep], dst[keep])
        return s, rot, t

    def merge(
        self,
        state: JointState | None,
        depth: torch.Tensor,
        poses: torch.Tensor,
        intrinsics: torch.Tensor,
        start: int,
        overlap: int,
    ) -> JointState:
        """Add one window: depth (B, 1, T_w, H, W) z-depth, poses (B, T_w, 4, 4) camera-to-world in the
        window's own frame, intrinsics (B, T_w, 3, 3) or (B, 3, 3) pixels for (H, W); start: its first
        frame; overlap: frames shared with the windows merged so far."""
        if depth.ndim != 5 or depth.shape[1] != 1:
            raise InputError(f"depth must be (B, 1, T, H, W), got {tuple(depth.shape)}")
        b, _, tw = depth.shape[:3]
        if poses.shape != (b, tw, 4, 4):
            raise InputError(
                f"poses must be (B, T, 4, 4) = {(b, tw, 4, 4)} like depth, got {tuple(poses.shape)}"
            )
        if intrinsics.ndim == 3:
            intrinsics = intrinsics[:, None].expand(b, tw, 3, 3)
        if intrinsics.shape != (b, tw, 3, 3):
            raise InputError(
                f"intrinsics must be (B, T, 3, 3) = {(b, tw, 3, 3)}, got {tuple(intrinsics.shape)}"
            )
        depth = depth.detach().float()
        poses = poses.detach().double().to(depth.device)
        intrinsics = intrinsics.detach().float().to(depth.device)
        dev = depth.device
        unit = (
            _median_first_depth(depth)
            if self.depth_scale == "pose_units"
            else torch.ones(b, dtype=torch.float64, device=dev)
        )
        depth = depth / unit.float()[:, None, None, None, None]
        state = state or JointState()
        if state.poses is None:
            s = torch.ones(b, dtype=torch.float64, device=dev)
            rot = torch.eye(3, dtype=torch.float64, device=dev).expand(b, 3, 3).clone()
            t = torch.zeros(b, 3, dtype=torch.float64, device=dev)
            ok = torch.ones(b, dtype=torch.bool, device=dev)
            moved = poses
        else:
            ov = max(0, min(overlap, tw, state.poses.shape[1] - start))
            moved, s, rot, t, _ = chain_step(state.poses, poses, start, ov, self.method)
            ok = torch.zeros(b, dtype=torch.bool, device=dev)
            if ov > 0:
                sel = torch.arange(0, ov, self.frame_step, device=dev)  # overlap frames used (window-local)
                glob = sel + start
                pa, va = self._points(
                    state.depth[:, :, glob], state.intrinsics[:, glob], state.poses[:, glob]
                )
                pn, vn = self._points(depth[:, :, sel], intrinsics[:, sel], poses[:, sel])
                z = state.depth[:, 0, glob, :: self.pixel_step, :: self.pixel_step]
                seed = self.seed + len(state.starts)
                for i in range(b):
                    fit = self._fit_points(pn[i], pa[i], va[i] & vn[i], z[i], seed)
                    if fit is not None:
                        s[i], rot[i], t[i], ok[i] = fit[0], fit[1], fit[2], True
                moved = transform_poses(poses, s, rot, t)
            depth = depth * s.float()[:, None, None, None, None]
        state.depth = _grow(state.depth, depth, 2, start)
        state.poses = _grow(state.poses, moved, 1, start)
        state.intrinsics = _grow(state.intrinsics, intrinsics, 1, start)
        state.fits.append((s, rot, t, s / unit, ok))
        state.starts.append(int(start))
        return state

    def finalize(self, state: JointState) -> JointResult:
        if state is None or state.poses is None:
            raise InputError("no window was merged")
        s, rot, t, factor, ok = (torch.stack(x, 1) for x in zip(*state.fits))
        return JointResult(
            depth=state.depth,
            poses=state.poses.float(),
            intrinsics=state.intrinsics,
            scale=s.float(),
            rotation=rot.float(),
            translation=t.float(),
            depth_factor=factor.float(),
            success=ok,
            starts=tuple(state.starts),
        )


def joint_depth_pose_alignment(
    depth: Sequence[torch.Tensor],
    poses: Sequence[torch.Tensor],
    intrinsics: Sequence[torch.Tensor] | torch.Tensor,
    starts: Sequence[int],
    **options: Any,
) -> JointResult:
    """Jointly chain per-window depth and poses (see the module docstring).

    depth: W tensors (B, 1, T_w, H, W) z-depth (any per-window scale, > 0 valid); poses: W tensors
    (B, T_w, 4, 4) camera-to-world in each window's own frame; intrinsics: W tensors (B, T_w, 3, 3) or
    (B, 3, 3), or one (B, 3, 3) tensor for all, pixels of (H, W); starts: W first frames, 0 first,
    strictly increasing, each window overlapping the frames before it (>= 2 frames to fix the scale).
    options: `JointDepthPoseAligner` settings. Returns a `JointResult` over max(start + T_w) frames.
    """
    n = len(depth)
    if n == 0 or len(poses) != n or len(starts) != n:
        raise InputError(f"need one depth, poses and start per window, got {n}, {len(poses)}, {len(starts)}")
    if isinstance(intrinsics, torch.Tensor):
        intrinsics = [intrinsics] * n
    if len(intrinsics) != n:
        raise InputError(f"need intrinsics per window ({n}), got {len(intrinsics)}")
    starts = [int(s) for s in starts]
    if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise InputError(f"starts must begin at 0 and increase strictly, got {starts}")
    aligner = JointDepthPoseAligner(**options)
    state, end = None, 0
    for d, p, k, s in zip(depth, poses, intrinsics, starts):
        state = aligner.merge(state, d, p, k, s, max(0, end - s))
        end = max(end, s + d.shape[2])
    return aligner.finalize(state)


def _per_frame_intrinsics(
    intrinsics: torch.Tensor | None, b: int, t: int, padded: int
) -> torch.Tensor | None:
    if intrinsics is None:
        return None
    if (
        not isinstance(intrinsics, torch.Tensor)
        or intrinsics.shape[-2:] != (3, 3)
        or intrinsics.ndim not in (3, 4)
    ):
        raise InputError("intrinsics must be (B, 3, 3) or (B, T, 3, 3) pixel K")
    if intrinsics.ndim == 3:
        intrinsics = intrinsics[:, None].expand(b, t, 3, 3)
    if tuple(intrinsics.shape[:2]) != (b, t):
        raise InputError(
            f"intrinsics must be (B, T, 3, 3) with B = {b}, T = {t}, got {tuple(intrinsics.shape)}"
        )
    if padded > t:
        intrinsics = intrinsics.index_select(1, pingpong_indices(t, padded).to(intrinsics.device))
    return intrinsics


def joint_windowed(
    model: L4P,
    video: torch.Tensor,
    intrinsics: torch.Tensor | None = None,
    depth_head: str = "depth",
    pose_head: str = "pose",
    depth_key: str = "depth",
    **options: Any,
) -> JointResult:
    """Run the depth and pose heads of `model` window by window and chain them jointly.

    model: a composed `L4P` holding both heads (only their layers are computed); video: (B, 3, T, H, W)
    float in [0, 1], any T (short clips are ping-pong padded, the padding is cropped); intrinsics:
    optional (B, 3, 3) or (B, T, 3, 3) pixel K (the pose head then uses it, mode "known");
    depth_head / pose_head: the composed heads' names; depth_key: the depth head's output (B, 1, T, H, W);
    options: `JointDepthPoseAligner` settings; depth_scale defaults to "pose_units" when the pose head
    was trained with `depth_normalized_loss` (translations in first-frame median-depth units), else "keep".
    Windows and stride are the model's (`L4P.window_stride`). Runs under `torch.no_grad()`.
    Returns a `JointResult` of T frames (`.as_outputs()` gives `L4P.forward`-style dicts).
    """
    check_video(video)
    for name in (depth_head, pose_head):
        if name not in model.heads:
            raise PluginError(
                f"joint_windowed needs head {name!r} composed; composed heads: {list(model.heads)}"
            )
    if "depth_scale" not in options:
        normalized = getattr(model.configs[pose_head], "depth_normalized_loss", False)
        options["depth_scale"] = "pose_units" if normalized else "keep"
    aligner = JointDepthPoseAligner(**options)
    b, _, t = video.shape[:3]
    size = model.encoder.config.num_frames
    padded = pad_video(video, size)
    K_all = _per_frame_intrinsics(intrinsics, b, t, padded.shape[2])
    head_layers = {n: model.layers_of(model.specs[n], model.configs[n]) for n in (depth_head, pose_head)}
    union = list(dict.fromkeys(layer for layers in head_layers.values() for layer in layers))
    plan = plan_windows(padded.shape[2], size, model.window_stride)
    state, memory = None, {depth_head: None, pose_head: None}
    with torch.no_grad():
        for i, window in enumerate(plan):
            clip = padded[:, :, window.start : window.start + size]
            features = model.encoder(clip, union)
            batch: dict[str, Any] = {
                "video": clip,
                "window": window,
                "next_window": plan[i + 1] if i + 1 < len(plan) else None,
                "num_frames": t,
            }
            if K_all is not None:
                batch["intrinsics"] = K_all[:, window.start : window.start + size]
            outs = {}
            for name in (depth_head, pose_head):
                module, feats = model.heads[name], features.select(head_layers[name])
                if hasattr(module, "forward_window"):
                    outs[name], memory[name] = module.forward_window(feats, batch, memory[name])
                else:
                    outs[name] = module(feats, batch)
            depth = outs[depth_head].get(depth_key)
            if depth is None:
                raise PluginError(
                    f"head {depth_head!r} returned no {depth_key!r} (got {sorted(outs[depth_head])})"
                )
            pose = outs[pose_head]
            state = aligner.merge(
                state, depth, pose["poses"], pose["intrinsics"], window.start, window.overlap
            )
    return aligner.finalize(state).crop(t)


def flatten_poses(poses: torch.Tensor) -> torch.Tensor:
    """Poses (B, T, 4, 4) -> the official `traj3d_est_b16t` layout (B, 16, T), row-major (index 4 r + c)."""
    return rearrange(poses, "b t r c -> b (r c) t")


__all__ = [
    "JointDepthPoseAligner",
    "JointResult",
    "JointState",
    "flatten_poses",
    "joint_depth_pose_alignment",
    "joint_windowed",
]
