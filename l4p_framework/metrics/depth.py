"""Video-depth metrics: per-sequence least-squares alignment, AbsRel and delta1.

Definitions follow data-and-metrics.md §2. A *sequence* is one batch element: the alignment
(one scale, or one scale and shift) is solved once over all valid pixels of all its frames, the
metrics are computed over the same pixels, and the per-sequence values are averaged over the
batch. Depth is z-depth in scene units throughout.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from ..errors import InputError, check_tensor

AlignMode = Literal["none", "scale", "scale_shift", "scale_shift_disparity"]
ALIGN_MODES: tuple[str, ...] = ("none", "scale", "scale_shift", "scale_shift_disparity")


def _batched(name: str, x: torch.Tensor, *, finite: bool) -> torch.Tensor:
    """Return `x` as (B, 1, T, H, W); a single sequence (1, T, H, W) gets B = 1."""
    check_tensor(name, x, "(B, 1, T, H, W) or (1, T, H, W)", finite=finite)
    if x.ndim == 4:
        x = x.unsqueeze(0)
    if x.ndim != 5 or x.shape[1] != 1:
        raise InputError(f"{name} must have shape (B, 1, T, H, W) or (1, T, H, W), got {tuple(x.shape)}")
    return x


def _valid_mask(valid: torch.Tensor | None, gt: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, H, W) bool: the user's mask (if any) AND finite, positive ground truth."""
    usable = torch.isfinite(gt) & (gt > 0)
    if valid is None:
        return usable
    check_tensor("valid", valid, "(B, 1, T, H, W) or (1, T, H, W)", finite=False)
    if valid.ndim == 4:
        valid = valid.unsqueeze(0)
    if valid.shape != gt.shape:
        raise InputError(f"valid must have the depth's shape {tuple(gt.shape)}, got {tuple(valid.shape)}")
    return usable & (valid if valid.dtype == torch.bool else valid != 0)


class AffineFit(NamedTuple):
    """Per-row least-squares fit y ~ scale * x + shift; every field (B,) float64 / bool."""

    scale: torch.Tensor
    shift: torch.Tensor
    defined: torch.Tensor
    """True where the scale+shift fit is unique; elsewhere the fit is scale-only (shift 0)."""
    x_mean: torch.Tensor
    x_mean_rest: torch.Tensor
    """mean(x - x_mean): what rounding x_mean to float64 left over (the true mean is the sum)."""
    y_mean: torch.Tensor

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, P) minus its masked mean, without the rounding error of the mean."""
        return (x - self.x_mean[:, None]) - self.x_mean_rest[:, None]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """scale * x + shift for x (B, P), evaluated about the means (scale * centred x + y_mean)
        so that no precision is lost when scale * x and shift nearly cancel."""
        centred = self.scale[:, None] * self.centre(x) + self.y_mean[:, None]
        return torch.where(self.defined[:, None], centred, self.scale[:, None] * x)


def fit_affine(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> AffineFit:
    """Least-squares (scale, shift) minimising sum_mask (scale x + shift - y)^2 per row, in float64.

    x, y: (B, P); mask: (B, P) bool. The fit is solved on data centred at the masked means, so it
    stays exact for predictions that vary very little (coefficient of variation down to ~1e-12). It
    is *defined* when the row has at least 2 masked points and x is not constant over them (its
    spread exceeds 1e-12 of its magnitude); an undefined row falls back to the scale-only fit
    (shift 0; scale 1 when x is 0 everywhere), which `defined` reports.
    """
    x, y = x.double(), y.double()
    w = mask.double()
    n = w.sum(1)
    count = n.clamp_min(1)
    mx, my = (w * x).sum(1) / count, (w * y).sum(1) / count
    rest = (w * (x - mx[:, None])).sum(1) / count
    xc, yc = w * ((x - mx[:, None]) - rest[:, None]), w * (y - my[:, None])
    sxx, sxy = (xc * xc).sum(1), (xc * yc).sum(1)
    magnitude = (w * x.abs()).amax(1)
    defined = (n >= 2) & (sxx.sqrt() > 1e-12 * magnitude * count.sqrt())
    scale = sxy / torch.where(defined, sxx, torch.ones_like(sxx))
    x2, xy = (w * x * x).sum(1), (w * x * y).sum(1)
    scale_only = torch.where(x2 > 0, xy / x2.clamp_min(1e-300), torch.ones_like(x2))
    scale = torch.where(defined, scale, scale_only)
    shift = torch.where(defined, my - scale * (mx + rest), torch.zeros_like(my))
    return AffineFit(scale, shift, defined, mx, rest, my)


def align_depth(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    mode: AlignMode = "scale",
    depth_cap: float | None = None,
) -> torch.Tensor:
    """Align predicted depth to ground truth by least squares, one fit per sequence.

    pred, gt: (B, 1, T, H, W) or (1, T, H, W) z-depth. valid: same shape, bool (optional);
    pixels with non-finite or non-positive GT are never used. Modes:

    - ``"none"``: returned unchanged.
    - ``"scale"``: s = sum(p g) / sum(p p) over valid pixels; returns s p.
    - ``"scale_shift"``: (s, t) minimising sum (s p + t - g)^2 in depth; returns s p + t (which
      may be non-positive; delta1 then counts such pixels as failures).
    - ``"scale_shift_disparity"``: (s, t) minimising sum (s / p + t - 1 / g)^2 in disparity, then
      back to depth 1 / (s / p + t). Non-positive predicted depth is read as disparity 0 (infinitely
      far). The aligned disparity is clamped to at least 1 / depth_cap, so no depth is
      non-positive or beyond depth_cap; depth_cap defaults to the sequence's largest valid GT depth.

    Returns the aligned depth, shape and dtype of `pred` (computed in float64 internally). The
    fits are exact wherever they are defined (see `fit_affine`); `depth_metrics` reports sequences
    where they are not.
    """
    return _align(pred, gt, valid, mode, depth_cap)[0]


def _align(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None, mode: AlignMode, depth_cap: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`align_depth` plus (B,) bool: True where the requested fit is defined (else a fallback)."""
    if mode not in ALIGN_MODES:
        raise InputError(f"align mode must be one of {ALIGN_MODES}, got {mode!r}")
    single = pred.ndim == 4
    p = _batched("pred", pred, finite=True)
    g = _batched("gt", gt, finite=False)
    if p.shape != g.shape:
        raise InputError(f"pred {tuple(p.shape)} and gt {tuple(g.shape)} must have the same shape")
    if mode == "none":
        return pred, torch.ones(p.shape[0], dtype=torch.bool)
    m = _valid_mask(valid, g).flatten(1)
    pd, gd = (
        p.double().flatten(1),
        torch.where(m, g.double().flatten(1), torch.ones_like(m, dtype=torch.double)),
    )
    if mode == "scale":
        w = m.double()
        num, den = (w * pd * gd).sum(1), (w * pd * pd).sum(1)
        defined = den > 0
        s = torch.where(defined, num / den.clamp_min(1e-300), torch.ones_like(den))
        out = s[:, None] * pd
    elif mode == "scale_shift":
        fit = fit_affine(pd, gd, m)
        out, defined = fit.apply(pd), fit.defined
    else:
        pdisp = torch.where(pd > 0, 1.0 / pd.clamp_min(1e-300), torch.zeros_like(pd))
        fit = fit_affine(pdisp, 1.0 / gd, m)
        disp, defined = fit.apply(pdisp), fit.defined
        if depth_cap is None:
            cap = torch.where(m, gd, torch.zeros_like(gd)).amax(1)
            cap = torch.where(cap > 0, cap, torch.ones_like(cap))
        else:
            if not depth_cap > 0:
                raise InputError(f"depth_cap must be a positive depth, got {depth_cap}")
            cap = torch.full_like(fit.scale, float(depth_cap))
        out = 1.0 / torch.maximum(disp, 1.0 / cap[:, None])
    out = out.reshape(p.shape).to(pred.dtype)
    return (out[0] if single else out), defined


def depth_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    align: AlignMode = "scale",
    depth_cap: float | None = None,
    per_sequence: bool = False,
) -> dict[str, float] | dict[str, list[float]]:
    """AbsRel and delta1 of video depth after per-sequence alignment (see `align_depth`).

    Protocol: the affine-invariant video-depth evaluation (as in DepthCrafter / Video Depth
    Anything): one least-squares alignment per sequence over all its frames, every valid pixel of
    every frame scored, at the resolution of the given tensors.

    pred, gt: (B, 1, T, H, W) or (1, T, H, W) z-depth; valid: same shape, bool, optional (GT must
    also be finite and > 0). Per sequence: abs_rel = mean |d - d*| / d*, delta1 = fraction of pixels
    with max(d / d*, d* / d) < 1.25 (d <= 0 counts as outside), both over valid pixels.

    Returns {"abs_rel", "delta1", "fit_defined"}: the means over sequences that have at least one
    valid pixel (NaN if none has), or with per_sequence=True the lists of per-sequence values (NaN
    where a sequence has no valid pixel). fit_defined is 1 for a sequence whose alignment is
    defined and 0 where it fell back (scale+shift on a constant prediction -> scale only; see
    `fit_affine`): its mean is the fraction of sequences aligned as asked.
    """
    aligned, defined = _align(pred, gt, valid, align, depth_cap)
    p = _batched("pred", aligned, finite=False).double().flatten(1)
    g = _batched("gt", gt, finite=False)
    m = _valid_mask(valid, g).flatten(1)
    g = torch.where(m, g.double().flatten(1), torch.ones_like(p))
    w = m.double()
    n = w.sum(1)
    abs_rel = (w * (p - g).abs() / g).sum(1) / n
    p_pos = p.clamp_min(1e-300)
    ratio = torch.maximum(p_pos / g, g / p_pos)
    delta1 = (w * ((ratio < 1.25) & (p > 0)).double()).sum(1) / n
    values = {"abs_rel": abs_rel, "delta1": delta1, "fit_defined": defined.double()}
    return _reduce(values, n > 0, per_sequence)


def _reduce(values: dict[str, torch.Tensor], ok: torch.Tensor, per_sequence: bool):
    """Per-sequence tensors (B,) -> mean over sequences where `ok`, or lists with NaN elsewhere."""
    nan = torch.full_like(ok, float("nan"), dtype=torch.double)
    if per_sequence:
        return {k: torch.where(ok, v.double(), nan).tolist() for k, v in values.items()}
    if not bool(ok.any()):
        return {k: float("nan") for k in values}
    return {k: float(v.double()[ok].mean()) for k, v in values.items()}
