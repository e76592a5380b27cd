"""The camera head: a 3D DPT predicting Plücker rays per frame, solved into camera poses and intrinsics.

Per window the decoder (`l4p_framework.blocks.DPT3D`, ray variant: 6 channels on the token grid of each
frame, l4p-model.md §2.3) predicts a ray map (B, 6, T, h, w): channels 0-2 the direction d of the ray
through each grid cell, channels 3-5 its moment m = c x d (c = camera centre), both in the frame of the
**first camera of the window** (the convention of `l4p_framework.geometry.plucker_rays`). The network's
channels 3-5 are m * `moment_scale`; the `rays` output has that factor removed.

Solving (`solve_rays`, float32 output, solved in float64 by `geometry.rays_to_cameras`, no gradient):
camera centres are the least-squares points nearest each frame's rays; the rotation is a Procrustes fit
against K^-1 [x, y, 1] with K either given (`intrinsics=` of `L4P.forward`, mode "known"), estimated
once from the first frame by a homography + RQ ("fixed", default) or per frame ("per_frame").

Fixed mode over a long video: window 0 estimates K (on its first frame) and the head carries it to the
later windows through `forward_window` memory, which solve their rotations with it (mode "known") and
report it: the video gets a single K, the first window's estimate. The official driver reports the same
K but solves later windows' rotations with the batch's (dummy) intrinsics, a probable bug
(l4p-model.md §2.4); this head uses the stored estimate.

Long videos: `PoseStitcher` chains every window's poses into the first window's frame through the
overlap (a Sim(3) from `geometry.chain_windows`), so `poses` are relative to the first camera of the
video at the first window's scale; rays and intrinsics are overwritten by later windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from l4p_framework import OutputSpec, OverwriteStitcher
from l4p_framework.blocks import (
    DPT3D,
    DPT3DConfig,
    dpt3d_cpu,
    dpt3d_hook_layers,
    dpt3d_official_rays,
    dpt3d_small,
)
from l4p_framework.blocks.dense_head import official_to_dense_head, with_widths
from l4p_framework.errors import ConfigError, InputError
from l4p_framework.features import TokenFeatures
from l4p_framework.geometry import (
    chain_windows,
    matrix_to_quaternion,
    plucker_rays,
    quaternion_to_matrix,
    rays_to_cameras,
    relative_to_first,
    save_intrinsics_json,
    save_tum,
    transform_poses,
)
from l4p_framework.matching import shared_matching
from l4p_framework.metrics.pose import align_trajectory, pose_metrics
from l4p_framework.official import official_key_map_for, official_module, official_prefix
from l4p_framework.specs import EncoderInfo, HeadSpec
from l4p_framework.viz import trajectory_plot

from . import __version__
from .odometry import matched_window_poses

NAME = "pose"
OFFICIAL_MODULE = official_module(NAME)
"""Key of this head in the official checkpoint: `l4p_model.task_heads.camray.task_head.dpt.*`."""
OFFICIAL_PREFIX = official_prefix(OFFICIAL_MODULE)


class PoseConfig(BaseModel):
    """Camera head options.

    preset: decoder widths, "small" (32/64/128/128, fusion 64, head 32: tiny encoders), "cpu" (16/32/64/64, 32, 8) or
        "official" (`dpt3d_official_rays`: 256/512/1024/1024, 256, 128; the L4P `camray` head).
    layers: the four hooked encoder blocks (1-based block outputs); None picks them for the encoder's
        depth with `dpt3d_hook_layers` (14/21/28/36 on the 40-block official encoder).
    layer_dims / feature_dim / last_dim: optional width overrides of the preset (e.g. a reduced-width
        official checkpoint converted by `l4p convert-official`).
    intrinsics_mode: how K is estimated when no intrinsics are given: "fixed" (one K from the first
        frame of the first window, shared by the whole video) or "per_frame" (each frame its own K).
    use_batch_intrinsics: use `batch["intrinsics"]` (the `intrinsics=` argument of `L4P.forward`, or a
        training batch's ground truth) as known K when present; False always estimates K.
    moment_scale: the decoder's channels 3-5 predict moment * moment_scale (> 0); the `rays` output and
        the solver use the moment itself. It weighs the moment term of the loss (see `pose_loss`).
    depth_normalized_loss: express the target translations (hence moments) in units of the median GT
        depth of the window's first frame when the batch has `depth`, making the loss scale-free.
    robust_iters: Cauchy IRLS rounds of every fit of the ray solver (0 = plain least squares).
    chain_method: how windows are chained through their overlap by `PoseStitcher` ("poses": rotation
        from the camera orientations, scale and translation from the centres; "centres": Umeyama).
    chain_scale: the scale of each window in the chain. "fit" (default): fitted on the overlap's
        camera centres, exact for an unbiased decoder whose windows each have their own scale;
        "same": every window keeps the scale of the first (its translations are in units of its first
        frame's median depth when the head was trained with depth_normalized_loss, a depth that
        changes little between windows 8 frames apart), rotation and translation still fitted on the
        overlap. A least-squares fit of noisy window centres shrinks (~0.7 per window without
        matching, path lengths 0.1-0.4 of the truth after 240 frames with it), so the shipped
        registry chains with "same".
    chain_blend: over each window overlap, cross-fade from the already-chained poses to the new
        window's (default); False lets the later window overwrite them, as the official driver does
        (l4p-model.md §4.2-4.3; the `official` profile sets it).
    matching: "none" keeps the ray solution; "shared" takes the window's camera motion from the
        shared frame matching (points tracked through the window at the input resolution, a small
        structure-from-motion with this head's K, `odometry.py`) and only its step length from the
        rays.
    self_calibrate: with matching "shared" and no K given, re-estimate the focal length from the
        tracked points (`odometry.self_calibrate`) on every window that estimates K (the first in
        "fixed" mode); the reported `intrinsics` are the calibrated ones.
    """

    model_config = ConfigDict(extra="forbid")

    preset: Literal["small", "cpu", "official"] = "small"
    layers: tuple[int, int, int, int] | None = None
    layer_dims: tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt] | None = None
    feature_dim: PositiveInt | None = None
    last_dim: PositiveInt | None = None
    intrinsics_mode: Literal["fixed", "per_frame"] = "fixed"
    use_batch_intrinsics: bool = True
    moment_scale: float = Field(1.0, gt=0.0)
    depth_normalized_loss: bool = True
    robust_iters: int = Field(5, ge=0, le=50)
    chain_method: Literal["poses", "centres"] = "poses"
    chain_scale: Literal["fit", "same"] = "fit"
    chain_blend: bool = True
    matching: Literal["none", "shared"] = "none"
    self_calibrate: bool = True

    def hook_layers(self, info: EncoderInfo) -> tuple[int, int, int, int]:
        """The four encoder blocks this head reads on encoder `info`."""
        return self.layers if self.layers is not None else dpt3d_hook_layers(info.depth)

    def dpt_config(self, info: EncoderInfo) -> DPT3DConfig:
        """The ray-variant `DPT3DConfig` (6 channels, native token-grid output) for encoder `info`."""
        layers = self.hook_layers(info)
        if self.preset == "official":
            base = dpt3d_official_rays(layers)
        elif self.preset == "cpu":  # the widths of the dense heads' cpu preset, ray-variant factors
            widths = dpt3d_cpu(6, layers)
            base = dpt3d_small(layers=layers, rays=True).model_copy(
                update={k: getattr(widths, k) for k in ("layer_dims", "feature_dim", "last_dim")}
            )
        else:
            base = dpt3d_small(layers=layers, rays=True)
        return with_widths(base, self)


# -- solving ---------------------------------------------------------------------------------------------


def _sanitize_rays(rays: torch.Tensor) -> torch.Tensor:
    """float32 copy without NaN/inf and without zero directions (replaced by +z), for the solver."""
    r = torch.nan_to_num(rays.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    d, m = r[:, :3], r[:, 3:]
    fallback = torch.zeros_like(d)
    fallback[:, 2] = 1.0
    d = torch.where(d.norm(dim=1, keepdim=True) > 1e-12, d, fallback)
    return torch.cat([d, m], 1)


def _as_window_intrinsics(K: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """(B, 3, 3) or (B, T, 3, 3) -> float32 (B, T, 3, 3), checked."""
    if not isinstance(K, torch.Tensor) or K.shape[-2:] != (3, 3) or K.ndim not in (3, 4):
        shape = tuple(K.shape) if isinstance(K, torch.Tensor) else type(K).__name__
        raise InputError(f"intrinsics must be (B, 3, 3) or (B, T, 3, 3) pixel K, got {shape}")
    if K.ndim == 3:
        K = K[:, None].expand(K.shape[0], t, 3, 3)
    if K.shape[0] != b or K.shape[1] != t:
        raise InputError(
            f"intrinsics must be (B, T, 3, 3) = ({b}, {t}, 3, 3) for this window, got {tuple(K.shape)}"
        )
    return K.float()


def solve_rays(
    rays: torch.Tensor,
    mode: Literal["fixed", "per_frame", "known"] = "fixed",
    K_known: torch.Tensor | None = None,
    image_size: tuple[int, int] = (224, 224),
    robust_iters: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera poses and pixel intrinsics of one window from its ray map (no gradient, never in autocast).

    rays: (B, 6, T, h, w) Plücker rays (d, m = c x d) relative to the window's first camera (any float
    dtype; NaN/inf are zeroed and zero directions replaced, so a bad prediction never raises);
    mode / K_known / robust_iters: as `geometry.rays_to_cameras` (K_known (B, 3, 3) or (B, T, 3, 3)
    pixels of `image_size`); image_size: (H, W) of the input frames.
    Returns poses (B, T, 4, 4) float32 camera-to-world re-referenced so frame 0 is exactly the identity
    (translation in the moments' units) and K (B, T, 3, 3) float32 pixels of `image_size` (+0.5
    convention); in "known" mode K is K_known itself (cast to float32), not a round trip.
    """
    b, _, t = rays.shape[:3]
    r = _sanitize_rays(rays)
    known = _as_window_intrinsics(K_known, b, t).to(r.device) if mode == "known" else None
    with torch.no_grad(), torch.autocast(r.device.type, enabled=False):
        poses, K = rays_to_cameras(
            r, mode=mode, K_known=known, image_size=image_size, robust_iters=robust_iters
        )
        poses = relative_to_first(poses.double()).float()
    if known is not None:
        K = known
    return poses, K.float()


class PoseHead(nn.Module):
    """Ray DPT over four hooked token layers of one window -> {"rays", "poses", "intrinsics"}.

    Args:
        info: the encoder the head runs on; config: `PoseConfig`.

    `forward(features, batch)` solves the window alone; `forward_window(features, batch, memory)` (used
    by `L4P.forward` on long videos) also carries the first window's K in fixed mode. Module keys are
    `dpt.<DPT3D key>` (official: `task_head.dpt.*`, see `official_key_map`).
    """

    def __init__(self, info: EncoderInfo, config: PoseConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = tuple(config.hook_layers(info))
        self.token_grid = tuple(info.token_grid)
        try:
            dpt_config = config.dpt_config(info)
        except ValueError as exc:
            raise ConfigError(f"invalid pose-head config {config.model_dump()}: {exc}") from None
        self.dpt = DPT3D(
            dpt_config,
            encoder_width=info.width,
            token_grid=self.token_grid,
            patch=(info.tubelet, info.patch_size, info.patch_size),
        )
        frames, h, w = self.dpt.native_size
        if frames != info.num_frames:
            raise ConfigError(
                f"the ray decoder gives {frames} frames per window on token grid {self.token_grid}, but the "
                f"encoder's window has {info.num_frames}; the ray variant needs tubelet 2"
            )
        self.grid = (h, w)
        """(h, w) of the ray grid (the token grid of a frame)."""

    def decode(self, features: TokenFeatures, batch: dict[str, Any] | None = None) -> torch.Tensor:
        """The decoder's raw map (B, 6, T, h, w): (d, moment_scale * m)."""
        if tuple(features.grid_size) != self.token_grid:
            raise InputError(
                f"this head was built for token grid (t, h, w) = {self.token_grid} but got tokens of grid "
                f"{tuple(features.grid_size)} from a {tuple(features.input_size)} window; resize the video "
                "to the encoder's image size"
            )
        return self.dpt([features[layer] for layer in self.layers])

    def forward(
        self, features: TokenFeatures, batch: dict[str, Any] | None = None
    ) -> dict[str, torch.Tensor]:
        """One window: rays (B, 6, T, h, w), poses (B, T, 4, 4) relative to its first camera, K (B, T, 3, 3)."""
        return self.forward_window(features, batch or {}, None)[0]

    def forward_window(
        self, features: TokenFeatures, batch: dict[str, Any], memory: dict | None
    ) -> tuple[dict[str, torch.Tensor], dict | None]:
        """One window with memory = {"K": (B, 3, 3)} (fixed mode: the first window's estimate) or None."""
        raw = self.decode(features, batch)
        rays = torch.cat([raw[:, :3], raw[:, 3:] / self.config.moment_scale], 1)
        image_size = (int(features.input_size[1]), int(features.input_size[2]))
        given = batch.get("intrinsics") if self.config.use_batch_intrinsics else None
        args = {"image_size": image_size, "robust_iters": self.config.robust_iters}
        if given is not None:
            poses, K = solve_rays(rays, "known", given, **args)
        elif self.config.intrinsics_mode == "fixed" and memory is not None and "K" in memory:
            poses, K = solve_rays(rays, "known", memory["K"].to(rays.device), **args)
        else:
            poses, K = solve_rays(rays, self.config.intrinsics_mode, **args)
        estimating = given is None and not (memory is not None and "K" in memory)
        if self.config.matching == "shared":
            matches, _, transform = shared_matching(batch, NAME)
            calibrate = estimating and self.config.self_calibrate
            poses, K_input = matched_window_poses(
                matches, transform.invert_intrinsics(K.double()), poses, calibrate
            )
            if calibrate:
                K = transform.apply_to_intrinsics(K_input).float().to(rays.device)
            poses = poses.float().to(rays.device)
        if estimating and self.config.intrinsics_mode == "fixed":
            memory = {"K": K[:, 0].detach()}
        return {"rays": rays, "poses": poses, "intrinsics": K}, memory


# -- stitching -------------------------------------------------------------------------------------------


@dataclass
class PoseStitchState:
    """Running state of `PoseStitcher`: chained poses (B, T_so_far, 4, 4) float64, the overwrite state of
    rays / intrinsics, and per window the Sim(3) scale (B,) and whether the overlap fixed it (B,) bool."""

    poses: torch.Tensor | None = None
    rest: Any = None
    scales: list[torch.Tensor] = field(default_factory=list)
    success: list[torch.Tensor] = field(default_factory=list)


def chain_step(
    chained: torch.Tensor,
    window: torch.Tensor,
    start: int,
    overlap: int,
    method: str = "poses",
    scale: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Map one window's poses into the chained frame through its overlap (one streaming step).

    chained: (B, >= start + overlap, 4, 4) poses already chained (world = first camera of the video);
    window: (B, T_w, 4, 4) the new window's poses in its own frame; start: its first global frame (>= 1);
    overlap: frames it shares with the chained ones; kwargs: `chain_windows` options (points, valid,
    frame_step, threshold, ...; point maps cover the `overlap + 1` anchor frames / `overlap` window frames).
    scale: (B,) a given Sim(3) scale: the rotation is still fitted, and the translation is the least-
    squares one for that scale and rotation over the overlap's camera centres.
    Uses `geometry.chain_windows` on an anchor made of the chained frames [start - 1, start + overlap)
    and the window's overlap frames, so the cost is bounded by the overlap, not the video length.
    Returns (window poses in the chained frame (B, T_w, 4, 4) float64, s (B,), R (B, 3, 3), t (B, 3),
    success (B,) bool). overlap == 0 (nothing to fit) places the window's first camera at frame
    start - 1's pose at scale 1 and reports success False.
    """
    b = window.shape[0]
    win = window.double()
    dev = win.device
    if start < 1:
        raise InputError(f"chain_step needs a window after the first (start >= 1), got start={start}")
    overlap = max(0, min(overlap, win.shape[1], chained.shape[1] - start))
    if overlap == 0:
        anchor = chained[:, start - 1].double()
        s = torch.ones(b, dtype=torch.float64, device=dev)
        rot, t = anchor[:, :3, :3].clone(), anchor[:, :3, 3].clone()
        return transform_poses(win, s, rot, t), s, rot, t, torch.zeros(b, dtype=torch.bool, device=dev)
    anchor = chained[:, start - 1 : start + overlap].double()
    res = chain_windows([anchor, win[:, :overlap]], [0, 1], method=method, **kwargs)
    s, rot, t = (x[:, 1].double().clone() for x in (res.s, res.R, res.t))
    if scale is not None:
        s = scale.to(s)
        centres = torch.einsum("bij,btj->bti", rot, win[:, :overlap, :3, 3])
        t = (chained[:, start : start + overlap, :3, 3].double() - s[:, None, None] * centres).mean(1)
    return transform_poses(win, s, rot, t), s, rot, t, res.success[:, 1]


def _cross_fade(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Poses (B, n, 4, 4) going from `old` to `new` over the n overlap frames: weights k / (n + 1) of the
    new window for k = 1..n, centres blended linearly, rotations by normalised quaternion blend."""
    n = old.shape[1]
    w = torch.arange(1, n + 1, dtype=old.dtype, device=old.device) / (n + 1)
    q_old, q_new = matrix_to_quaternion(old[..., :3, :3]), matrix_to_quaternion(new[..., :3, :3])
    q_new = torch.where((q_old * q_new).sum(-1, keepdim=True) < 0, -q_new, q_new)
    q = (1 - w)[:, None] * q_old + w[:, None] * q_new
    out = new.clone()
    out[..., :3, :3] = quaternion_to_matrix(q / q.norm(dim=-1, keepdim=True))
    out[..., :3, 3] = (1 - w)[:, None] * old[..., :3, 3] + w[:, None] * new[..., :3, 3]
    return out


class PoseStitcher:
    """Chains windowed poses through the overlap; rays and intrinsics are overwritten by later windows.

    Each window's `poses` (relative to its own first camera, at its own scale) are mapped by the Sim(3)
    fitted between its overlap frames and the already-chained trajectory (`chain_step`, method "poses"
    or "centres"; with scale "same" the Sim(3) keeps the previous window's scale, see
    `PoseConfig.chain_scale`); over the overlap the trajectory cross-fades from the chained poses to
    the new window's (`_cross_fade`; the official driver let the later window overwrite, which left
    a jump at every seam: RPE-rot 0.34 instead of 0.16 deg on 240-frame 240x320 synth4d clips).
    `blend=False` (`PoseConfig.chain_blend`, set by the `official` profile) overwrites instead. The
    result is camera-to-world relative to the first camera of the video, at the first window's scale. Stitched
    `rays` keep, per frame, the last window's rays (relative to that window's first camera);
    `intrinsics` are overwritten too: in fixed mode the head already reports the first window's K for
    every window (see the module docstring), with given K they are the given K.
    """

    def __init__(
        self,
        method: Literal["poses", "centres"] = "poses",
        scale: Literal["fit", "same"] = "fit",
        blend: bool = True,
    ):
        self.method, self.scale, self.blend = method, scale, blend
        self.rest = OverwriteStitcher({"rays": 2, "intrinsics": 1})

    def merge(
        self, state: PoseStitchState | None, outputs: dict[str, torch.Tensor], start: int, overlap: int
    ) -> PoseStitchState:
        state = state or PoseStitchState()
        poses = outputs["poses"].detach().double()
        b, tw = poses.shape[:2]
        if state.poses is None:
            chained = relative_to_first(poses)
            state.scales.append(torch.ones(b, dtype=torch.float64, device=poses.device))
            state.success.append(torch.ones(b, dtype=torch.bool, device=poses.device))
            state.poses = chained
        else:
            same = state.scales[-1] if self.scale == "same" else None
            chained, s, _, _, ok = chain_step(state.poses, poses, start, overlap, self.method, scale=same)
            state.scales.append(s)
            state.success.append(ok)
            end = start + tw
            if state.poses.shape[1] < end:
                pad = state.poses.new_zeros(b, end - state.poses.shape[1], 4, 4)
                state.poses = torch.cat([state.poses, pad], 1)
            n = max(0, min(overlap, tw, state.poses.shape[1] - start)) if self.blend else 0
            if n:
                chained[:, :n] = _cross_fade(state.poses[:, start : start + n], chained[:, :n])
            state.poses[:, start:end] = chained
        rest = {k: v for k, v in outputs.items() if k != "poses"}
        state.rest = self.rest.merge(state.rest, rest, start, overlap) if rest else state.rest
        return state

    def finalize(self, state: PoseStitchState) -> dict[str, torch.Tensor]:
        out = dict(self.rest.finalize(state.rest)) if state.rest is not None else {}
        out["poses"] = state.poses.float()
        return out


# -- loss, metrics, visualisation, export ---------------------------------------------------------------


def _image_size(batch: dict[str, Any]) -> tuple[int, int]:
    for key in ("video", "depth"):
        x = batch.get(key)
        if isinstance(x, torch.Tensor) and x.ndim == 5:
            return int(x.shape[-2]), int(x.shape[-1])
    raise InputError(
        "the batch needs `video` (B, 3, T, H, W) or `depth` to know the image size the intrinsics refer to"
    )


def first_frame_depth_scale(batch: dict[str, Any]) -> torch.Tensor | None:
    """Median valid GT z-depth of the first frame per sequence, (B,) float64; None without `depth`.

    Valid: finite, > 0 and `depth_valid` when given. A sequence without valid pixels gets 1.
    """
    depth = batch.get("depth")
    if not isinstance(depth, torch.Tensor) or depth.ndim != 5:
        return None
    d0 = depth[:, 0, 0].double()
    valid = torch.isfinite(d0) & (d0 > 0)
    mask = batch.get("depth_valid")
    if isinstance(mask, torch.Tensor) and mask.shape == depth.shape:
        valid = valid & mask[:, 0, 0].bool()
    med = d0.masked_fill(~valid, float("nan")).flatten(1).nanmedian(dim=1).values
    return torch.where(torch.isfinite(med) & (med > 0), med, torch.ones_like(med))


def ray_targets(
    batch: dict[str, Any], grid: tuple[int, int], depth_normalized: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target rays of a window from its GT `intrinsics` (B, T, 3, 3) pixels and `poses` (B, T, 4, 4).

    Poses are re-referenced to the window's first camera; with `depth_normalized` and a `depth` in the
    batch, translations are divided by the median GT depth of the first frame (so moments are in units
    of that depth and a scene's scale does not matter). grid: (h, w) of the predicted ray map.
    Returns (rays (B, 6, T, h, w) float32 via `geometry.plucker_rays`, the translation unit (B,) float64).
    """
    for key, shape in (("intrinsics", "(B, T, 3, 3)"), ("poses", "(B, T, 4, 4)")):
        if not isinstance(batch.get(key), torch.Tensor) or batch[key].ndim != 4:
            raise InputError(f"the batch needs {key!r} {shape} (ground truth) to build the target rays")
    K, poses = batch["intrinsics"], batch["poses"]
    rel = relative_to_first(poses.double())
    unit = first_frame_depth_scale(batch) if depth_normalized else None
    if unit is None:
        unit = torch.ones(rel.shape[0], dtype=torch.float64, device=rel.device)
    rel = rel.clone()
    rel[..., :3, 3] = rel[..., :3, 3] / unit.to(rel.device)[:, None, None]
    return plucker_rays(K.double(), rel, grid, _image_size(batch)).float(), unit


def pose_loss(
    outputs: dict[str, torch.Tensor], batch: dict[str, Any], config: PoseConfig
) -> dict[str, torch.Tensor]:
    """L1 on Plücker rays: mean |d - d*| + moment_scale * mean |m - m*| (= L1 on the decoder's raw map).

    outputs["rays"]: (B, 6, T, h, w); targets from `ray_targets` (GT intrinsics and poses relative to the
    window's first camera; translations in units of the first frame's median GT depth when the batch has
    `depth` and `config.depth_normalized_loss`, else in GT scene units). Non-finite targets are skipped.
    Returns {"loss", "dir_l1", "moment_l1"} (terms detached).
    """
    pred = outputs.get("rays")
    if not isinstance(pred, torch.Tensor) or pred.ndim != 5 or pred.shape[1] != 6:
        raise InputError("outputs need 'rays' (B, 6, T, h, w); pass the pose head's own outputs")
    target, _ = ray_targets(batch, tuple(pred.shape[-2:]), config.depth_normalized_loss)
    if target.shape != pred.shape:
        raise InputError(
            f"target rays {tuple(target.shape)} do not match the predicted rays {tuple(pred.shape)}"
        )
    target = target.to(pred.device)
    ok = torch.isfinite(target).all(1, keepdim=True)
    err = (pred.float() - target.nan_to_num()).abs() * ok
    n = ok.sum().clamp_min(1) * 3
    dir_l1 = err[:, :3].sum() / n
    moment_l1 = err[:, 3:].sum() / n
    loss = dir_l1 + config.moment_scale * moment_l1
    return {"loss": loss, "dir_l1": dir_l1.detach(), "moment_l1": moment_l1.detach()}


def _focal_rel_err(K: torch.Tensor, K_gt: torch.Tensor) -> float:
    f = torch.stack([K[..., 0, 0], K[..., 1, 1]], -1).double()
    g = torch.stack([K_gt[..., 0, 0], K_gt[..., 1, 1]], -1).double()
    return float(((f - g).abs() / g.abs().clamp_min(1e-12)).mean())


def pose_head_metrics(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, float]:
    """Pose and intrinsics errors against GT `poses` and `intrinsics` (data-and-metrics.md §2).

    ate, rpe_trans_rmse / rpe_trans_mean (GT scene units), rpe_rot_rmse_deg / rpe_rot_mean_deg, and
    sim3_scale: after one Sim(3) Umeyama alignment of the predicted to the GT trajectory (NaN for T < 2).
    focal_rel_err: mean |f - f*| / f* over fx, fy and frames of the output intrinsics (0 when the head was
    given the GT K); focal_rel_err_rays: the same for K estimated per frame from the predicted rays alone
    (informative even when K was given). Means over the batch.
    """
    pred, gt = outputs["poses"].detach().cpu(), batch.get("poses")
    gt = gt.detach().cpu() if isinstance(gt, torch.Tensor) else gt
    out: dict[str, float] = {}
    if isinstance(gt, torch.Tensor) and gt.shape == pred.shape and pred.shape[1] >= 2:
        out.update({k: float(v) for k, v in pose_metrics(pred.double(), gt.double()).items()})
    else:
        nan = float("nan")
        out.update(
            dict.fromkeys(
                (
                    "ate",
                    "rpe_trans_rmse",
                    "rpe_trans_mean",
                    "rpe_rot_rmse_deg",
                    "rpe_rot_mean_deg",
                    "sim3_scale",
                ),
                nan,
            )
        )
    K_gt = batch.get("intrinsics")
    K = outputs.get("intrinsics")
    if isinstance(K_gt, torch.Tensor) and isinstance(K, torch.Tensor) and K.shape == K_gt.shape:
        out["focal_rel_err"] = _focal_rel_err(K.detach().cpu(), K_gt.detach().cpu())
        rays = outputs.get("rays")
        if isinstance(rays, torch.Tensor) and rays.shape[2] == K_gt.shape[1]:
            try:
                size = _image_size(batch)
            except InputError:
                size = None
            if size is not None:
                _, K_rays = solve_rays(rays, "per_frame", image_size=size)
                out["focal_rel_err_rays"] = _focal_rel_err(K_rays.cpu(), K_gt.detach().cpu())
    return out


def visualize_pose(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, np.ndarray]:
    """{"trajectory": (256, 512, 3) uint8}: camera centres of the first sequence from above and the side;
    with GT `poses` the prediction is Sim(3)-aligned to GT and both are drawn (GT blue, prediction red)."""
    pred = outputs["poses"][0].detach().double().cpu()
    gt = batch.get("poses")
    if isinstance(gt, torch.Tensor) and gt.ndim == 4 and gt.shape[1:] == pred.shape and pred.shape[0] >= 2:
        g = gt[0].detach().double().cpu()
        return {"trajectory": trajectory_plot(align_trajectory(pred, g), g)}
    return {"trajectory": trajectory_plot(pred)}


def save_pose_outputs(
    outputs: dict[str, torch.Tensor],
    directory: str | Path,
    image_size: tuple[int, int],
    *,
    index: int = 0,
    fps: float | None = None,
    stem: str = "camera",
) -> dict[str, Path]:
    """Write sequence `index` of the head's outputs: `<stem>_trajectory.txt` (TUM: `timestamp tx ty tz qx
    qy qz qw`, camera-to-world, timestamps = frame / fps or the frame index) and `<stem>_intrinsics.json`
    (pixel K per frame for an image of `image_size` = (H, W), +0.5 convention). Returns the two paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "trajectory": directory / f"{stem}_trajectory.txt",
        "intrinsics": directory / f"{stem}_intrinsics.json",
    }
    save_tum(paths["trajectory"], outputs["poses"][index].detach(), fps=fps)
    save_intrinsics_json(paths["intrinsics"], outputs["intrinsics"][index].detach(), image_size)
    return paths


official_key_map = official_key_map_for(NAME, official_to_dense_head)
"""Official L4P camera-ray head weights -> this head's state dict (`dpt.*`).

Accepts the whole official state dict (the `l4p_model.task_heads.camray.*` entries are taken, the
rest ignored) or the head's `task_head.dpt.*` entries with that prefix stripped
(`l4p_framework.official`). The `scratch.layer_rn.*` aliases are verified against their originals
and dropped (68 -> 64 keys)."""


def build_pose_head(info: EncoderInfo, config: PoseConfig) -> PoseHead:
    return PoseHead(info, config)


OUTPUTS = (
    OutputSpec(
        "rays",
        "(B, 6, T, h, w)",
        "Plücker rays per cell of the token grid (h, w): unit-ish direction d (0-2) and moment m = c x d "
        "(3-5), relative to the first camera of the frame's window (stitched: the last window's)",
    ),
    OutputSpec(
        "poses",
        "(B, T, 4, 4)",
        "camera-to-world; world = the first camera of the video (windows chained through the overlap), "
        "translation at the first window's (relative) scale",
    ),
    OutputSpec(
        "intrinsics",
        "(B, T, 3, 3)",
        "pixel K at the input resolution (+0.5 pixel-centre convention); the given K when intrinsics are passed",
        kind="intrinsics",
    ),
)


def pose_baseline(batch: dict) -> dict[str, torch.Tensor]:
    """Trivial baseline: a static camera (identity poses (B, T, 4, 4)) with the default intrinsics
    fx = fy = min(H, W), cx = W/2, cy = H/2 (B, T, 3, 3)."""
    b, _, t, h, w = batch["video"].shape
    f = float(min(h, w))
    K = torch.tensor([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])
    return {"poses": torch.eye(4).expand(b, t, 4, 4).clone(), "intrinsics": K.expand(b, t, 3, 3).clone()}


def pose_head_spec() -> HeadSpec:
    """The `pose` HeadSpec registered by this plugin."""
    return HeadSpec(
        name=NAME,
        version=__version__,
        config_model=PoseConfig,
        layers=lambda info, config: list(config.hook_layers(info)),
        build=build_pose_head,
        loss=pose_loss,
        metrics=pose_head_metrics,
        metric_protocols={
            "ate": "evo ape, sim3 umeyama",
            "rpe_trans_rmse": "evo rpe, sim3, delta 1",
            "rpe_trans_mean": "evo rpe, sim3, delta 1",
            "rpe_rot_rmse_deg": "evo rpe, sim3, delta 1",
            "rpe_rot_mean_deg": "evo rpe, sim3, delta 1",
            "sim3_scale": "umeyama scale pred -> gt",
        },
        targets=("intrinsics", "poses"),
        outputs=OUTPUTS,
        baseline=pose_baseline,
        stitcher=lambda config: PoseStitcher(config.chain_method, config.chain_scale, config.chain_blend),
        profiles={"official": {"chain_blend": False}},
        uses_matching=lambda config: config.matching == "shared",
        visualize=visualize_pose,
        inputs=("intrinsics",),
        official_key_map=official_key_map,
        description="Camera pose and intrinsics: Plücker rays from a 3D DPT head, solved per window and chained.",
    )


__all__ = [
    "NAME",
    "OFFICIAL_MODULE",
    "OUTPUTS",
    "PoseConfig",
    "PoseHead",
    "PoseStitchState",
    "PoseStitcher",
    "build_pose_head",
    "chain_step",
    "first_frame_depth_scale",
    "official_key_map",
    "pose_head_metrics",
    "pose_head_spec",
    "pose_loss",
    "ray_targets",
    "save_pose_outputs",
    "solve_rays",
    "visualize_pose",
]
