"""Similarity transforms: Umeyama fit, seeded batched RANSAC, and chaining windowed trajectories.

A Sim(3) (s, R, t) maps a point p to s R p + t. Applied to a camera-to-world pose [R_p | c] it gives
[R R_p | s R c + t] (the rotation block of T_sim @ pose divided by s), so the result stays a rigid
camera-to-world pose in the new world, at the new scale; depth maps of that camera scale by s.
All fits run in float64 torch (CPU or GPU) and are deterministic: RANSAC samples with a seeded CPU
torch.Generator, so a seed gives the same hypotheses on every device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange

from ..errors import InputError, check_tensor
from .camera import make_pose

__all__ = [
    "umeyama",
    "Sim3Fit",
    "ransac_sim3",
    "apply_sim3",
    "sim3_to_matrix",
    "transform_poses",
    "align_poses_sim3",
    "ChainResult",
    "chain_windows",
]


def _check_pair(src, dst) -> bool:
    """Validate (N, 3) / (B, N, 3) point pairs; True when batched."""
    check_tensor("src", src, "(B, N, 3) or (N, 3)")
    check_tensor("dst", dst, "(B, N, 3) or (N, 3)")
    if src.shape != dst.shape or src.ndim not in (2, 3) or src.shape[-1] != 3:
        raise InputError(
            f"src and dst must have the same shape (B, N, 3) or (N, 3), got {tuple(src.shape)} and "
            f"{tuple(dst.shape)}"
        )
    return src.ndim == 3


def umeyama(
    src: torch.Tensor,
    dst: torch.Tensor,
    weights: torch.Tensor | None = None,
    with_scale: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity (Umeyama 1991) mapping src to dst: minimises sum w |dst - (s R src + t)|^2.

    src, dst: (B, N, 3) (or (N, 3), then outputs lose B); weights: (B, N) non-negative, optional.
    Returns s (B,), R (B, 3, 3) with det +1, t (B, 3), in src's dtype (solved in float64).
    with_scale=False fixes s = 1 (rigid fit). Degenerate input (zero total weight) gives the identity;
    a src with no spread gives s = 1 and a translation-only fit. Collinear points leave the rotation
    about their line arbitrary (but deterministic).
    """
    batched = _check_pair(src, dst)
    out_dtype = src.dtype
    a = src.double() if batched else src.double().unsqueeze(0)
    b = dst.double() if batched else dst.double().unsqueeze(0)
    if weights is None:
        w = torch.ones(a.shape[:2], dtype=torch.float64, device=a.device)
    else:
        w = weights.double() if batched else weights.double().unsqueeze(0)
        if w.shape != a.shape[:2]:
            raise InputError(
                f"weights must have shape (B, N) = {tuple(a.shape[:2])}, got {tuple(weights.shape)}"
            )
    s, rot, t = _umeyama64(a, b, w, with_scale)
    if not batched:
        s, rot, t = s[0], rot[0], t[0]
    return s.to(out_dtype), rot.to(out_dtype), t.to(out_dtype)


def _umeyama64(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, with_scale: bool):
    """Batched float64 Umeyama over any leading dims: a, b (..., N, 3), w (..., N)."""
    total = w.sum(-1, keepdim=True)
    ok = total[..., 0] > 0
    wn = w / total.clamp_min(1e-300)
    mu_a = torch.einsum("...n,...ni->...i", wn, a)
    mu_b = torch.einsum("...n,...ni->...i", wn, b)
    ca, cb = a - mu_a.unsqueeze(-2), b - mu_b.unsqueeze(-2)
    cov = torch.einsum("...n,...ni,...nj->...ij", wn, cb, ca)
    var_a = torch.einsum("...n,...ni,...ni->...", wn, ca, ca)
    u, sv, vh = torch.linalg.svd(cov)
    fix = torch.ones_like(sv)
    fix[..., 2] = torch.where(torch.linalg.det(u) * torch.linalg.det(vh) < 0, -1.0, 1.0)
    rot = u @ (fix.unsqueeze(-1) * vh)
    if with_scale:
        spread = var_a > 1e-24 * (mu_a * mu_a).sum(-1).clamp_min(1.0)
        s = torch.where(spread, (sv * fix).sum(-1) / var_a.clamp_min(1e-300), torch.ones_like(var_a))
    else:
        s = torch.ones_like(var_a)
    t = mu_b - s.unsqueeze(-1) * torch.einsum("...ij,...j->...i", rot, mu_a)
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(rot)
    rot = torch.where(ok[..., None, None], rot, eye)
    s = torch.where(ok, s, torch.ones_like(s))
    t = torch.where(ok.unsqueeze(-1), t, torch.zeros_like(t))
    return s, rot, t


def apply_sim3(points: torch.Tensor, s: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """s R p + t for every point. points: (B, ..., 3); s (B,), R (B, 3, 3), t (B, 3). Returns (B, ..., 3).

    Unbatched s (), R (3, 3), t (3,) apply to points (..., 3).
    """
    if R.ndim == 2:
        return apply_sim3(points.unsqueeze(0), s.reshape(1), R.unsqueeze(0), t.unsqueeze(0))[0]
    b = R.shape[0]
    if points.shape[0] != b or points.shape[-1] != 3:
        raise InputError(f"points must have shape (B, ..., 3) with B = {b}, got {tuple(points.shape)}")
    flat = points.reshape(b, -1, 3)
    out = s.to(points.dtype)[:, None, None] * torch.einsum("bij,bnj->bni", R.to(points.dtype), flat)
    return (out + t.to(points.dtype)[:, None]).reshape(points.shape)


def sim3_to_matrix(s: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """4x4 matrix [[s R, t], [0, 1]]. s (...), R (..., 3, 3), t (..., 3). Returns (..., 4, 4)."""
    return make_pose(s[..., None, None] * R, t)


def transform_poses(poses: torch.Tensor, s: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Move camera-to-world poses by a Sim(3): [R_p | c] -> [R R_p | s R c + t].

    poses: (B, T, 4, 4) camera-to-world; s (B,), R (B, 3, 3), t (B, 3). Returns (B, T, 4, 4) rigid poses.
    """
    check_tensor("poses", poses, "(B, T, 4, 4)", ndim=4)
    R_, s_, t_ = R.to(poses.dtype), s.to(poses.dtype), t.to(poses.dtype)
    rot = torch.einsum("bij,btjk->btik", R_, poses[..., :3, :3])
    cen = s_[:, None, None] * torch.einsum("bij,btj->bti", R_, poses[..., :3, 3]) + t_[:, None]
    return make_pose(rot, cen)


def align_poses_sim3(
    pred: torch.Tensor, gt: torch.Tensor, with_scale: bool = True
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Align predicted camera-to-world poses to GT by Umeyama on camera centres.

    pred, gt: (B, T, 4, 4) camera-to-world. Returns (aligned pred (B, T, 4, 4), (s (B,), R, t)).
    """
    check_tensor("pred", pred, "(B, T, 4, 4)", ndim=4)
    check_tensor("gt", gt, "(B, T, 4, 4)", ndim=4)
    if pred.shape != gt.shape or pred.shape[-2:] != (4, 4):
        raise InputError(
            f"pred and gt must both be (B, T, 4, 4), got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    s, rot, t = umeyama(pred[..., :3, 3], gt[..., :3, 3], with_scale=with_scale)
    return transform_poses(pred, s, rot, t), (s, rot, t)


@dataclass
class Sim3Fit:
    """Result of `ransac_sim3`.

    s (B,), R (B, 3, 3), t (B, 3): the similarity mapping src to dst (s R src + t);
    inliers (B, N) bool: residual |dst - (s R src + t)| < threshold under the returned model;
    success (B,) bool: a hypothesis had enough inliers. When False the model is the fallback
    (scale-only: median ratio of norms about median centroids, R = I; or identity when that is
    degenerate). Unbatched input drops the B dim (success is then a 0-d bool tensor; use bool()).
    """

    s: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    inliers: torch.Tensor
    success: torch.Tensor

    @property
    def num_inliers(self) -> torch.Tensor:
        """Inlier count per batch element, (B,) int64."""
        return self.inliers.sum(-1)


def _residuals(a: torch.Tensor, b: torch.Tensor, s, rot, t) -> torch.Tensor:
    """|b - (s R a + t)| for hypotheses (..., ) over points a, b (..., N, 3)."""
    pred = s[..., None, None] * torch.einsum("...ij,...nj->...ni", rot, a) + t.unsqueeze(-2)
    return (b - pred).norm(dim=-1)


def _fallback(a: torch.Tensor, b: torch.Tensor):
    """Scale-only fit: s = median |b - med(b)| / |a - med(a)|, R = I, t = med(b) - s med(a); (B, N, 3)."""
    ca = a.median(dim=1).values
    cb = b.median(dim=1).values
    na = (a - ca.unsqueeze(1)).norm(dim=-1)
    nb = (b - cb.unsqueeze(1)).norm(dim=-1)
    ratio = torch.where(na > 1e-12, nb / na.clamp_min(1e-300), torch.full_like(na, float("nan")))
    s = ratio.nanmedian(dim=1).values
    s = torch.where(torch.isfinite(s) & (s > 0), s, torch.ones_like(s))
    rot = torch.eye(3, dtype=a.dtype, device=a.device).expand(a.shape[0], 3, 3).clone()
    t = cb - s.unsqueeze(-1) * ca
    return s, rot, t


def ransac_sim3(
    src: torch.Tensor,
    dst: torch.Tensor,
    threshold: float | torch.Tensor,
    min_samples: int = 4,
    max_trials: int = 100,
    seed: int = 0,
    max_points: int | None = 20000,
    min_inlier_fraction: float = 0.1,
    with_scale: bool = True,
    refine_iters: int = 2,
) -> Sim3Fit:
    """Robust Sim(3) mapping src to dst: seeded batched RANSAC + Umeyama, never raises on bad data.

    src, dst: (B, N, 3) or (N, 3) corresponding points; threshold: inlier distance in dst units
    (float or (B,) tensor). All `max_trials` minimal samples of `min_samples` distinct points are drawn
    at once from a CPU torch.Generator seeded with `seed`, fitted by batched Umeyama, and scored by
    MSAC (sum of min(residual^2, threshold^2)); samples with collinear src points are skipped. The best
    hypothesis is refit on its inliers `refine_iters` times (kept when the MSAC cost does not grow).
    At most `max_points` points (a seeded random subset) are used for fitting and scoring; inliers
    are reported for all N. Success needs at least max(min_samples, min_inlier_fraction * n) inliers;
    otherwise the fallback of `Sim3Fit` is returned with success False (outliers, random points, too
    few points or none never raise; non-finite input is an InputError). The official aligner uses
    min_samples=10 (scikit-image); 4 needs far fewer trials at high outlier rates.
    """
    batched = _check_pair(src, dst)
    if min_samples < 3:
        raise InputError(f"min_samples must be >= 3 for a Sim(3) fit, got {min_samples}")
    if max_trials < 1:
        raise InputError(f"max_trials must be >= 1, got {max_trials}")
    out_dtype = src.dtype
    a = src.double() if batched else src.double().unsqueeze(0)
    b = dst.double() if batched else dst.double().unsqueeze(0)
    nb, n = a.shape[:2]
    dev = a.device
    thr = torch.as_tensor(threshold, dtype=torch.float64, device=dev).reshape(-1).expand(nb)
    if bool((thr <= 0).any()) or not bool(torch.isfinite(thr).all()):
        raise InputError(f"threshold must be positive and finite, got {threshold!r}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    if n < min_samples:
        s, rot, t = _fallback(a, b) if n > 0 else _identity(nb, dev)
        success = torch.zeros(nb, dtype=torch.bool, device=dev)
    else:
        if max_points is not None and n > max_points:
            sub = torch.rand(nb, n, generator=gen).topk(max_points, dim=1).indices.to(dev)
            a_s = torch.gather(a, 1, sub.unsqueeze(-1).expand(-1, -1, 3))
            b_s = torch.gather(b, 1, sub.unsqueeze(-1).expand(-1, -1, 3))
        else:
            a_s, b_s = a, b
        ns = a_s.shape[1]
        idx = torch.rand(nb, max_trials, ns, generator=gen).topk(min_samples, dim=2).indices.to(dev)
        flat = rearrange(idx, "b k m -> b (k m)").unsqueeze(-1).expand(-1, -1, 3)
        ha = rearrange(torch.gather(a_s, 1, flat), "b (k m) c -> b k m c", m=min_samples)
        hb = rearrange(torch.gather(b_s, 1, flat), "b (k m) c -> b k m c", m=min_samples)
        w = torch.ones(ha.shape[:3], dtype=torch.float64, device=dev)
        hs, hr, ht = _umeyama64(ha, hb, w, with_scale)
        sv = torch.linalg.svdvals(ha - ha.mean(2, keepdim=True))  # (B, K, 3)
        valid = (sv[..., 1] > 1e-6 * sv[..., 0]) & torch.isfinite(hs) & (hs > 0)
        thr2 = (thr * thr)[:, None]
        res = _residuals(a_s.unsqueeze(1), b_s.unsqueeze(1), hs, hr, ht)  # (B, K, ns)
        cost = torch.minimum(res * res, thr2[..., None]).sum(-1)
        cost = torch.where(valid, cost, torch.full_like(cost, float("inf")))
        best = cost.argmin(dim=1)
        pick = torch.arange(nb, device=dev)
        s, rot, t = hs[pick, best], hr[pick, best], ht[pick, best]
        best_cost = cost[pick, best]
        for _ in range(refine_iters):
            inl = (_residuals(a_s, b_s, s, rot, t) < thr[:, None]).double()
            s2, r2, t2 = _umeyama64(a_s, b_s, inl, with_scale)
            res2 = _residuals(a_s, b_s, s2, r2, t2)
            cost2 = torch.minimum(res2 * res2, thr2).sum(-1)
            better = (cost2 <= best_cost) & (inl.sum(-1) >= min_samples) & (s2 > 0)
            s = torch.where(better, s2, s)
            rot = torch.where(better[:, None, None], r2, rot)
            t = torch.where(better[:, None], t2, t)
            best_cost = torch.where(better, cost2, best_cost)
        count = (_residuals(a_s, b_s, s, rot, t) < thr[:, None]).sum(-1)
        need = max(min_samples, math.ceil(min_inlier_fraction * ns))
        success = torch.isfinite(best_cost) & (count >= need)
        fs, fr, ft = _fallback(a, b)
        s = torch.where(success, s, fs)
        rot = torch.where(success[:, None, None], rot, fr)
        t = torch.where(success[:, None], t, ft)
    inliers = _residuals(a, b, s, rot, t) < thr[:, None]
    fit = Sim3Fit(s.to(out_dtype), rot.to(out_dtype), t.to(out_dtype), inliers, success)
    if not batched:
        fit = Sim3Fit(fit.s[0], fit.R[0], fit.t[0], fit.inliers[0], fit.success[0])
    return fit


def _identity(nb: int, dev):
    eye = torch.eye(3, dtype=torch.float64, device=dev).expand(nb, 3, 3).clone()
    return (
        torch.ones(nb, dtype=torch.float64, device=dev),
        eye,
        torch.zeros(nb, 3, dtype=torch.float64, device=dev),
    )


@dataclass
class ChainResult:
    """Result of `chain_windows`.

    poses: (B, T, 4, 4) camera-to-world poses of all T frames in window 0's frame (window 0's first
    camera is the world) and at window 0's scale;
    s (B, W), R (B, W, 3, 3), t (B, W, 3): the Sim(3) that maps window w's own frame into that world
    (identity for w = 0); scale window w's depth by s[:, w] to match;
    success (B, W) bool: the fit of each window used its preferred method (False: points RANSAC fell
    back to the pose fit, or the overlap could not fix the scale; window 0 is always True).
    """

    poses: torch.Tensor
    s: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    success: torch.Tensor


def _fit_from_poses(src_poses: torch.Tensor, dst_poses: torch.Tensor, method: str):
    """Sim(3) mapping src poses onto dst poses (B, F, 4, 4); float64. Returns s, R, t, scale_ok."""
    ca, cb = src_poses[..., :3, 3], dst_poses[..., :3, 3]
    if method == "centres":
        s, rot, t = _umeyama64(ca, cb, torch.ones(ca.shape[:2], dtype=ca.dtype, device=ca.device), True)
        spread = (ca - ca.mean(1, keepdim=True)).norm(dim=-1).amax(1)
        return s, rot, t, spread > 1e-9
    # Rotation from the camera orientations (chordal mean of R_dst R_src^T: exact for noise-free input,
    # and well posed even for one frame or collinear centres); scale and translation from the centres.
    m = torch.einsum("bfij,bfkj->bik", dst_poses[..., :3, :3], src_poses[..., :3, :3])
    u, _, vh = torch.linalg.svd(m)
    fix = torch.ones(u.shape[0], 3, dtype=u.dtype, device=u.device)
    fix[:, 2] = torch.where(torch.linalg.det(u @ vh) < 0, -1.0, 1.0)
    rot = u @ (fix.unsqueeze(-1) * vh)
    mu_a, mu_b = ca.mean(1), cb.mean(1)
    ra = torch.einsum("bij,bfj->bfi", rot, ca - mu_a[:, None])
    den = (ra * ra).sum((1, 2))
    scale_ok = den > 1e-18 * (mu_a * mu_a).sum(-1).clamp_min(1.0)
    s = torch.where(
        scale_ok, (ra * (cb - mu_b[:, None])).sum((1, 2)) / den.clamp_min(1e-300), torch.ones_like(den)
    )
    t = mu_b - s[:, None] * torch.einsum("bij,bj->bi", rot, mu_a)
    return s, rot, t, scale_ok


def chain_windows(
    window_poses: Sequence[torch.Tensor],
    starts: Sequence[int],
    *,
    points: Sequence[torch.Tensor] | None = None,
    valid: Sequence[torch.Tensor] | None = None,
    method: Literal["poses", "centres"] = "poses",
    keep: Literal["later", "earlier"] = "later",
    frame_step: int = 1,
    threshold: float | None = None,
    max_points: int | None = 20000,
    seed: int = 0,
    **ransac_kwargs,
) -> ChainResult:
    """Express windowed camera trajectories (each in its own first camera and scale) in window 0's frame.

    window_poses: W tensors (B, T_w, 4, 4), camera-to-world in the window's own frame (its first camera
    is usually the identity); starts: W ints, the first global frame of each window, increasing, and
    each window must overlap the frames covered so far (>= 2 frames to fix the scale).
    Window w is mapped by the Sim(3) between its overlap frames and the already-chained trajectory:
    - without `points`: `method="poses"` (default) takes the rotation from the camera orientations and
      scale + translation from the camera centres given it; `method="centres"` is Umeyama on centres;
    - with `points` (W tensors (B, T_w, H, W, 3), point maps in the window's own frame, e.g.
      `to_world(unproject_depth(depth, K), poses)`) and optional `valid` (W bool (B, T_w, H, W)):
      seeded `ransac_sim3` on the points of every `frame_step`-th overlap frame (official: 3), with
      `threshold` (default 0.01 x the 98th percentile of the chained overlap z-depth, i.e. in the
      units of the residuals; the official code uses the new window's depth), at most
      `max_points` points per fit; a failed RANSAC falls back to the pose fit (success False).
    Overlap rule: keep="later" (default, as the official driver) lets each new window overwrite the
    overlap frames; keep="earlier" keeps the already-chained values and only appends new frames.
    Returns a `ChainResult`; the total length is max(start + T_w).
    """
    n_win = len(window_poses)
    if n_win == 0 or len(starts) != n_win:
        raise InputError(
            f"chain_windows needs >= 1 window and one start per window; got {n_win} and {len(starts)}"
        )
    if keep not in ("later", "earlier"):
        raise InputError(f"keep must be 'later' or 'earlier', got {keep!r}")
    if method not in ("poses", "centres"):
        raise InputError(f"method must be 'poses' or 'centres', got {method!r}")
    if frame_step < 1:
        raise InputError(f"frame_step must be >= 1, got {frame_step}")
    for i, p in enumerate(window_poses):
        check_tensor(f"window_poses[{i}]", p, "(B, T_w, 4, 4)", ndim=4)
        if p.shape[-2:] != (4, 4) or p.shape[0] != window_poses[0].shape[0]:
            raise InputError(
                f"window_poses[{i}] must be (B, T_w, 4, 4) with a common B, got {tuple(p.shape)}"
            )
    if points is not None and len(points) != n_win:
        raise InputError(f"points must hold one point map per window ({n_win}), got {len(points)}")
    if valid is not None and (points is None or len(valid) != n_win):
        raise InputError("valid needs points and one mask per window")
    starts = [int(s) for s in starts]
    if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise InputError(f"starts must begin at 0 and increase strictly, got {starts}")

    b = window_poses[0].shape[0]
    dtype, dev = window_poses[0].dtype, window_poses[0].device
    total = max(s + p.shape[1] for s, p in zip(starts, window_poses))
    poses = torch.zeros(b, total, 4, 4, dtype=torch.float64, device=dev)
    covered = torch.zeros(total, dtype=torch.bool)
    pts_buf = valid_buf = None
    if points is not None:
        spatial = points[0].shape[2:4]
        for i, p in enumerate(points):
            check_tensor(f"points[{i}]", p, "(B, T_w, H, W, 3)", ndim=5)
            if p.shape != (*window_poses[i].shape[:2], *spatial, 3):
                raise InputError(
                    f"points[{i}] must be (B, T_w, H, W, 3) = {(*window_poses[i].shape[:2], *spatial, 3)}, "
                    f"got {tuple(p.shape)}"
                )
        pts_buf = torch.zeros(b, total, *spatial, 3, dtype=torch.float64, device=dev)
        valid_buf = torch.zeros(b, total, *spatial, dtype=torch.bool, device=dev)

    ss, rs, ts, oks = [], [], [], []
    for w, (start, wp) in enumerate(zip(starts, window_poses)):
        wp = wp.double()
        tw = wp.shape[1]
        frames = torch.arange(start, start + tw)
        if w == 0:
            s, rot, t = _identity(b, dev)
            ok = torch.ones(b, dtype=torch.bool, device=dev)
        else:
            ov = frames[covered[start : start + tw]]
            if ov.numel() == 0:
                raise InputError(f"window {w} (start {start}) does not overlap the frames of earlier windows")
            loc = ov - start
            ov, loc = ov.to(dev), loc.to(dev)
            s, rot, t, ok = _fit_from_poses(wp[:, loc], poses[:, ov], method)
            if points is not None:
                sel = torch.arange(0, ov.numel(), frame_step, device=dev)  # every frame_step-th overlap frame
                f_ov, f_loc = ov[sel], loc[sel]
                src = points[w].to(dev).double()[:, f_loc]  # (B, F, H, W, 3)
                vmask = valid_buf[:, f_ov] & torch.isfinite(src).all(-1)
                if valid is not None:
                    vmask = vmask & valid[w].to(dev).bool()[:, f_loc]
                fit = _fit_points(
                    src,
                    pts_buf[:, f_ov],
                    vmask,
                    poses[:, f_ov],
                    threshold,
                    max_points,
                    seed + w,
                    ransac_kwargs,
                )
                s, rot, t, ok = _merge_fits(fit, (s, rot, t, ok))
        ss.append(s), rs.append(rot), ts.append(t), oks.append(ok)
        new = transform_poses(wp, s, rot, t)
        write = torch.ones(tw, dtype=torch.bool) if keep == "later" else ~covered[start : start + tw]
        dst_idx, src_idx = frames[write].to(dev), write.nonzero().squeeze(1).to(dev)
        poses[:, dst_idx] = new[:, src_idx]
        if points is not None:
            pw = apply_sim3(points[w].to(dev).double(), s, rot, t)
            vw = torch.isfinite(pw).all(-1)
            if valid is not None:
                vw = vw & valid[w].to(dev).bool()
            pts_buf[:, dst_idx] = pw[:, src_idx]
            valid_buf[:, dst_idx] = vw[:, src_idx]
        covered[start : start + tw] = True
    return ChainResult(
        poses.to(dtype),
        torch.stack(ss, 1).to(dtype),
        torch.stack(rs, 1).to(dtype),
        torch.stack(ts, 1).to(dtype),
        torch.stack(oks, 1),
    )


def _fit_points(src, dst, vmask, dst_poses, threshold, max_points, seed, kwargs) -> list:
    """RANSAC Sim(3) per batch element on overlap point maps: src, dst (B, F, H, W, 3), vmask (B, F, H, W),
    dst_poses (B, F, 4, 4) (for the default threshold: 0.01 x the 98th percentile of the target z-depth,
    in dst units like the residuals). Returns one `Sim3Fit` (or None: < 3 valid points) per element."""
    cam = torch.einsum("bfji,bfhwj->bfhwi", dst_poses[..., :3, :3], dst - dst_poses[:, :, None, None, :3, 3])
    fits = []
    for i in range(src.shape[0]):
        m = vmask[i]
        if int(m.sum()) < 3:
            fits.append(None)
            continue
        thr = threshold
        if thr is None:
            z = cam[i][..., 2][m].abs()
            if z.numel() > 100000:
                z = z[torch.linspace(0, z.numel() - 1, 100000, device=z.device).long()]
            thr = 0.01 * float(torch.quantile(z, 0.98))
            thr = thr if thr > 0 else 1e-6
        fits.append(ransac_sim3(src[i][m], dst[i][m], thr, seed=seed, max_points=max_points, **kwargs))
    return fits


def _merge_fits(fits: list, pose_fit):
    """Use each element's RANSAC model where it succeeded, else keep the pose fit and flag failure."""
    s, rot, t, ok = (x.clone() for x in pose_fit)
    for i, fit in enumerate(fits):
        if fit is not None and bool(fit.success):
            s[i], rot[i], t[i] = fit.s, fit.R, fit.t
        else:
            ok[i] = False
    return s, rot, t, ok
