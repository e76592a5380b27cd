"""Point-tracking metrics: TAP-Vid (2D) and TAPVid-3D (data-and-metrics.md §2).

Protocols: TAP-Vid (Doersch et al. 2022, tapnet ``evaluation_datasets.compute_tapvid_metrics``) and
TAPVid-3D (Koppula et al. 2024, tapnet ``tapvid3d/evaluation/metrics.py``). Both are per video: every
metric is computed for each video (batch element) by pooling its (point, frame) pairs, then the
per-video values are averaged over videos. A video whose value is undefined (0 / 0, e.g. no
GT-visible evaluated pair) is left out of that metric's average and reported as NaN with
``per_sequence=True``.

Thresholds 1, 2, 4, 8, 16 px are strict (distance < threshold). Jaccard per threshold is
TP / (TP + FP + FN) with TP = GT visible & predicted visible & within, FP = predicted visible &
(GT occluded or beyond), FN = GT visible & (predicted occluded or beyond). The pixel thresholds are
those of a 256-pixel frame: TAP-Vid rescales positions to 256 x 256; TAPVid-3D rescales the focal
lengths to a 256-pixel short side (`TAPVID3D_SHORT_SIDE`) whatever the evaluation resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from ..errors import InputError, check_tensor

PIXEL_THRESHOLDS: tuple[int, ...] = (1, 2, 4, 8, 16)
TAPVID3D_SHORT_SIDE = 256
"""TAPVid-3D's thresholds use fx, fy rescaled to a frame whose short side is 256 pixels."""


def _batch_first(name: str, x: torch.Tensor, ndim: int, shape: str, batched: bool, *, finite: bool):
    """Check `x` has `ndim` dims when batched (one fewer when not) and return it batched."""
    check_tensor(name, x, shape, finite=finite)
    want = ndim if batched else ndim - 1
    if x.ndim != want:
        raise InputError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    return x if batched else x.unsqueeze(0)


def _visibility(name: str, x: torch.Tensor, like: torch.Tensor, batched: bool) -> torch.Tensor:
    """A bool (B, N, T) visibility tensor matching the tracks' (B, N, T)."""
    x = _batch_first(name, x, 3, "(B, N, T) bool", batched, finite=False)
    if x.dtype != torch.bool:
        raise InputError(
            f"{name} must be a bool tensor (True = visible), got {x.dtype}; threshold logits "
            "with `logits > 0` (or probabilities with `probs > 0.5`) first"
        )
    if x.shape != like.shape[:3]:
        raise InputError(f"{name} must have shape {tuple(like.shape[:3])} (B, N, T), got {tuple(x.shape)}")
    return x


def _query_frames(q: torch.Tensor, b: int, n: int, t: int, batched: bool) -> torch.Tensor:
    """(B, N) long query frame indices; float times are rounded half to even."""
    q = _batch_first("query_frames", torch.as_tensor(q), 2, "(B, N) frame indices", batched, finite=True)
    if q.shape != (b, n):
        raise InputError(f"query_frames must have shape {(b, n)} (B, N), got {tuple(q.shape)}")
    q = torch.round(q).long() if q.is_floating_point() else q.long()
    if q.numel() and (int(q.min()) < 0 or int(q.max()) >= t):
        raise InputError(
            f"query_frames must be frame indices in [0, {t}), got range [{int(q.min())}, {int(q.max())}]"
        )
    return q


def _query_valid(qv: torch.Tensor | None, b: int, n: int, batched: bool) -> torch.Tensor:
    """(B, N) bool padding mask (all True when None)."""
    if qv is None:
        return torch.ones(b, n, dtype=torch.bool)
    qv = _batch_first("query_valid", qv, 2, "(B, N) bool", batched, finite=False)
    if qv.shape != (b, n):
        raise InputError(f"query_valid must have shape {(b, n)} (B, N), got {tuple(qv.shape)}")
    return qv if qv.dtype == torch.bool else qv != 0


def _per_video(
    within: torch.Tensor, pred_vis: torch.Tensor, gt_vis: torch.Tensor, evaluated: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-video fraction within and Jaccard for one threshold; all inputs (B, N, T) bool -> (B,), (B,)."""

    def count(x: torch.Tensor) -> torch.Tensor:
        return (x & evaluated).flatten(1).sum(1).double()

    gt_pos = count(gt_vis)  # TP + FN
    frac = count(within & gt_vis) / gt_pos
    tp = count(within & gt_vis & pred_vis)
    fp = count(pred_vis & (~gt_vis | ~within))
    jac = tp / (gt_pos + fp)
    return frac, jac


def _summarise(
    frac: list[torch.Tensor],
    jac: list[torch.Tensor],
    oa: torch.Tensor,
    names: tuple[str, str, str],
    per_sequence: bool,
) -> dict[str, float] | dict[str, list[float]]:
    """Per-video tensors -> the output dict (NaN-skipping mean over videos unless per_sequence)."""
    values: dict[str, torch.Tensor] = {
        names[0]: torch.stack(jac).mean(0),
        names[1]: torch.stack(frac).mean(0),
        names[2]: oa,
    }
    for thr, f, j in zip(PIXEL_THRESHOLDS, frac, jac):
        values[f"pts_within_{thr}"] = f
        values[f"jaccard_{thr}"] = j
    if per_sequence:
        return {k: v.tolist() for k, v in values.items()}
    out = {}
    for k, v in values.items():
        ok = ~torch.isnan(v)
        out[k] = float(v[ok].mean()) if bool(ok.any()) else math.nan
    return out


def tapvid_metrics(
    pred_tracks: torch.Tensor,
    pred_visible: torch.Tensor,
    gt_tracks: torch.Tensor,
    gt_visible: torch.Tensor,
    query_frames: torch.Tensor,
    image_size: tuple[int, int],
    query_mode: Literal["first", "strided"] = "first",
    query_valid: torch.Tensor | None = None,
    per_sequence: bool = False,
) -> dict[str, float] | dict[str, list[float]]:
    """TAP-Vid 2D metrics: AJ, <delta_avg and OA, plus each threshold's values.

    Protocol: TAP-Vid (tapnet ``compute_tapvid_metrics``): query mode "first" or "strided"
    (below), positions compared at 256 x 256, no alignment.

    pred_tracks, gt_tracks: (B, N, T, 2) (x, y) pixels at the original resolution (H, W) =
    image_size; they are rescaled to 256 x 256 (x * 256 / W, y * 256 / H) before thresholding.
    pred_visible, gt_visible: (B, N, T) bool. query_frames: (B, N) frame index of each query
    (float times are rounded half to even). query_valid: (B, N) bool, False for padded queries.
    Unbatched inputs ((N, T, 2), (N, T), (N,)) are accepted too. A non-finite position (pred or
    GT) is never within any threshold.

    Evaluated pairs: query_mode "first" = the frames after the query frame; "strided" = every
    frame except the query frame. Per video and over evaluated pairs only: ``oa`` = fraction with
    predicted visibility equal to GT; ``pts_within_{d}`` = fraction of GT-visible pairs with
    distance < d px (at 256 x 256); ``jaccard_{d}`` = TP / (TP + FP + FN); ``delta_avg`` and
    ``aj`` average them over d in 1, 2, 4, 8, 16. Returns the means over videos (videos where a
    value is undefined are skipped), or with per_sequence=True per-video lists (NaN if undefined).
    Values are fractions in [0, 1] (papers print them x 100).
    """
    if query_mode not in ("first", "strided"):
        raise InputError(f"query_mode must be 'first' or 'strided', got {query_mode!r}")
    batched = pred_tracks.ndim == 4
    # non-finite predicted positions are allowed: their distance is NaN, never within a threshold
    pt = _batch_first("pred_tracks", pred_tracks, 4, "(B, N, T, 2)", batched, finite=False)
    gt = _batch_first("gt_tracks", gt_tracks, 4, "(B, N, T, 2)", batched, finite=False)
    if pt.shape != gt.shape or pt.shape[-1] != 2:
        raise InputError(
            f"pred_tracks {tuple(pt.shape)} and gt_tracks {tuple(gt.shape)} must both be (B, N, T, 2)"
        )
    b, n, t, _ = pt.shape
    pv = _visibility("pred_visible", pred_visible, pt, batched)
    gv = _visibility("gt_visible", gt_visible, pt, batched)
    q = _query_frames(query_frames, b, n, t, batched)
    qv = _query_valid(query_valid, b, n, batched)
    if len(image_size) != 2 or min(image_size) <= 0:
        raise InputError(f"image_size must be (H, W) in pixels, got {image_size}")
    h, w = image_size

    frames = torch.arange(t)
    if query_mode == "first":
        evaluated = frames[None, None, :] > q[..., None]
    else:
        evaluated = frames[None, None, :] != q[..., None]
    evaluated = evaluated & qv[..., None]

    to256 = torch.tensor([256.0 / w, 256.0 / h], dtype=torch.double)
    dist2 = ((pt.double() - gt.double()) * to256).square().sum(-1)
    oa = ((pv == gv) & evaluated).flatten(1).sum(1).double() / evaluated.flatten(1).sum(1).double()
    frac, jac = [], []
    for thr in PIXEL_THRESHOLDS:
        f, j = _per_video(dist2 < thr * thr, pv, gv, evaluated)
        frac.append(f)
        jac.append(j)
    return _summarise(frac, jac, oa, ("aj", "delta_avg", "oa"), per_sequence)


def _focal_lengths(intrinsics, b: int, t: int, batched: bool) -> torch.Tensor:
    """(B, T) float64 sqrt(fx * fy) from (B, 2) [fx, fy], (B, 4) [fx, fy, cx, cy], (B, 3, 3) K or
    (B, T, 3, 3) per-frame K (unbatched: the same without B)."""
    k = torch.as_tensor(intrinsics).double()
    if not batched:
        k = k.unsqueeze(0)
    if not bool(torch.isfinite(k).all()):
        raise InputError("intrinsics contain NaN or infinite values")
    if k.ndim == 2 and k.shape[1] in (2, 4) and k.shape[0] == b:
        fx, fy = k[:, 0:1].expand(b, t), k[:, 1:2].expand(b, t)
    elif k.ndim == 3 and k.shape == (b, 3, 3):
        fx, fy = k[:, 0, 0:1].expand(b, t), k[:, 1, 1:2].expand(b, t)
    elif k.ndim == 4 and k.shape == (b, t, 3, 3):
        fx, fy = k[:, :, 0, 0], k[:, :, 1, 1]
    else:
        raise InputError(
            "intrinsics must be (B, 2) [fx, fy], (B, 4) [fx, fy, cx, cy], (B, 3, 3) or (B, T, 3, 3) "
            f"pixel-unit K (without B for unbatched tracks), got {tuple(torch.as_tensor(intrinsics).shape)}"
        )
    if bool((fx <= 0).any()) or bool((fy <= 0).any()):
        raise InputError("intrinsics must have positive focal lengths fx, fy (pixels)")
    return (fx * fy).sqrt()


def _median(x: torch.Tensor) -> torch.Tensor:
    """Median of the finite values of a 1D tensor (midpoint of the two middle values for an even
    count, as numpy's nanmedian); NaN if none is finite."""
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        return torch.tensor(math.nan, dtype=torch.double)
    s = x.sort().values
    k = s.numel()
    return 0.5 * (s[(k - 1) // 2] + s[k // 2])


def tapvid3d_metrics(
    pred_xyz: torch.Tensor,
    pred_visible: torch.Tensor,
    gt_xyz: torch.Tensor,
    gt_visible: torch.Tensor,
    intrinsics: torch.Tensor | Sequence[float],
    query_frames: torch.Tensor | None = None,
    scale: Literal["median", "mean", "per_trajectory", "none"] = "median",
    query_valid: torch.Tensor | None = None,
    per_sequence: bool = False,
    *,
    image_size: tuple[int, int],
) -> dict[str, float] | dict[str, list[float]]:
    """TAPVid-3D metrics: APD3D, 3D-AJ and OA, plus each threshold's values.

    Protocol: TAPVid-3D (tapnet ``tapvid3d/evaluation/metrics.py``): every frame is scored, the
    query frame included (no query mode); median scaling; depth-adaptive thresholds with the focal
    lengths of a 256-pixel short side.

    pred_xyz, gt_xyz: (B, N, T, 3) points in the camera frame of each frame (scene units; NaN
    allowed: a non-finite point is never within a threshold and never enters a scale).
    pred_visible, gt_visible: (B, N, T) bool. intrinsics: (B, 2) [fx, fy], (B, 4) [fx, fy, cx, cy],
    (B, 3, 3) K or (B, T, 3, 3) per-frame K, in pixels of a frame of `image_size` (H, W), the
    resolution the intrinsics belong to. query_frames: (B, N), only needed for
    scale="per_trajectory". query_valid: (B, N) bool, False for padded queries. Unbatched inputs
    (no B) are accepted too.

    The prediction is first multiplied by a scale factor:

    - ``"median"`` (default, TAPVid-3D's protocol): one factor per video, median |gt| / median
      |pred|, the medians of the Euclidean norms of the 3D points over the (point, frame) pairs
      visible in both prediction and GT, each median skipping non-finite norms (numpy's
      ``nanmedian``). A video with no such pair gets no valid scale: every point counts as beyond
      every threshold.
    - ``"mean"``: the same with means of the finite norms; ``"none"``: factor 1;
    - ``"per_trajectory"``: per track, GT depth z over predicted depth z at its query frame.

    The threshold of a pair is d * z_gt / sqrt(fx' * fy') for d in 1, 2, 4, 8, 16, strict, where
    z_gt is the pair's GT depth and fx' = fx * 256 / min(H, W), fy' likewise: the intrinsics
    rescaled to a 256-pixel short side, whatever the evaluation resolution. Per video:
    ``pts_within_{d}`` = fraction of GT-visible pairs within; ``jaccard_{d}`` as in TAP-Vid;
    ``apd3d`` and ``aj3d`` average them over d; ``oa`` = fraction of pairs with predicted
    visibility equal to GT. Returns means over videos (undefined values skipped) or, with
    per_sequence=True, per-video lists.
    """
    if scale not in ("median", "mean", "per_trajectory", "none"):
        raise InputError(f"scale must be 'median', 'mean', 'per_trajectory' or 'none', got {scale!r}")
    batched = pred_xyz.ndim == 4
    pt = _batch_first("pred_xyz", pred_xyz, 4, "(B, N, T, 3)", batched, finite=False).double()
    gt = _batch_first("gt_xyz", gt_xyz, 4, "(B, N, T, 3)", batched, finite=False).double()
    if pt.shape != gt.shape or pt.shape[-1] != 3:
        raise InputError(f"pred_xyz {tuple(pt.shape)} and gt_xyz {tuple(gt.shape)} must both be (B, N, T, 3)")
    b, n, t, _ = pt.shape
    pv = _visibility("pred_visible", pred_visible, pt, batched)
    gv = _visibility("gt_visible", gt_visible, pt, batched)
    qv = _query_valid(query_valid, b, n, batched)
    if len(image_size) != 2 or min(image_size) <= 0:
        raise InputError(f"image_size must be (H, W) in pixels of the intrinsics' frame, got {image_size}")
    focal = _focal_lengths(intrinsics, b, t, batched) * (TAPVID3D_SHORT_SIDE / min(image_size))
    evaluated = qv[..., None].expand(b, n, t)

    if scale in ("median", "mean"):
        both = pv & gv & evaluated
        pn = pt.norm(dim=-1).clamp_min(1e-6)
        gn = gt.norm(dim=-1).clamp_min(1e-6)
        reduce = _median if scale == "median" else _finite_mean
        factors = torch.stack([reduce(gn[i][both[i]]) / reduce(pn[i][both[i]]) for i in range(b)])
        factor = factors.double().view(b, 1, 1, 1)
    elif scale == "per_trajectory":
        if query_frames is None:
            raise InputError("scale='per_trajectory' needs query_frames (B, N)")
        q = _query_frames(query_frames, b, n, t, batched)
        idx = q[..., None, None].expand(b, n, 1, 3)
        zq_gt = gt.gather(2, idx)[..., 2:3].clamp_min(1e-12)
        zq_pred = pt.gather(2, idx)[..., 2:3].clamp_min(1e-12)
        factor = zq_gt / zq_pred
    else:
        factor = torch.ones(1, 1, 1, 1, dtype=torch.double)
    ps = pt * factor

    dist2 = (ps - gt).square().sum(-1)  # NaN where a point or the scale is undefined -> never within
    multiplier = gt[..., 2] / focal[:, None, :]
    oa = ((pv == gv) & evaluated).flatten(1).sum(1).double() / evaluated.flatten(1).sum(1).double()
    frac, jac = [], []
    for thr in PIXEL_THRESHOLDS:
        f, j = _per_video(dist2 < (thr * multiplier).square(), pv, gv, evaluated)
        frac.append(f)
        jac.append(j)
    return _summarise(frac, jac, oa, ("aj3d", "apd3d", "oa"), per_sequence)


def _finite_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of the finite values of a 1D tensor; NaN if none is finite."""
    x = x[torch.isfinite(x)]
    return x.mean() if x.numel() else torch.tensor(math.nan, dtype=torch.double)
