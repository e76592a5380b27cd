"""Which way is better for each metric name, and how a model compares with its baseline.

`metric_goal(name)` is "higher" (accuracies, AJ, OA, IoU, J/F, delta1, within-threshold
fractions, fit_defined), "lower" (errors: abs_rel, rmse, epe, fl, ate, rpe, angle errors, focal
errors, losses) or "none" (diagnostics with no better direction, e.g. sim3_scale). Names are
matched case-insensitively against fixed names and a few suffix families (``delta1_ss``,
``pts_within_4``, ``within_11.25``, ``abs_rel_ss``); an unknown name raises `UnknownMetricError`
instead of being guessed. `baseline_sentence` turns a head's metrics and its baseline's into one
line for a report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..errors import InputError

Goal = Literal["higher", "lower", "none"]

_HIGHER_NAMES = {
    "aj",  # average Jaccard (TAP-Vid)
    "delta_avg",  # < delta^x_avg (TAP-Vid)
    "oa",  # occlusion accuracy
    "aj3d",
    "apd3d",
    "oa3d",
    "iou",
    "miou",
    "j",  # DAVIS region similarity
    "f",  # DAVIS contour accuracy
    "j&f",
    "jf",
    "fit_defined",  # fraction of sequences whose depth alignment is defined
    "accuracy",
    "precision",
    "recall",
    "f1",
    "psnr",
    "ssim",
}
_LOWER_NAMES = {
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "silog",
    "mae",
    "epe",
    "fl",  # KITTI outlier fraction
    "ate",
    "rpe_trans_rmse",
    "rpe_trans_mean",
    "rpe_rot_rmse_deg",
    "rpe_rot_mean_deg",
    "focal_rel_err",
    "focal_rel_err_rays",
    "mean_angle",
    "median_angle",
    "rmse_angle",
    "loss",
    "l1",
    "bce",
    "lpips",
}
_NO_DIRECTION = {
    "sim3_scale",  # scale of the Sim(3) alignment: relative, neither high nor low is better
    "log_scale",
}
# families: a base name and a suffix (threshold or protocol variant)
_HIGHER_PATTERNS = (
    r"delta[123](_[a-z0-9]+)*",  # delta1, delta1_ss (fraction within 1.25^k)
    r"a[123]",  # the same accuracy thresholds under their other common name
    r"(pts_within|jaccard|within)_\d+(\.\d+)?",  # tracking thresholds, normals within 11.25 deg
    r"epe<\d+(\.\d+)?",  # fraction of pixels with EPE below the threshold
)
_LOWER_PATTERNS = (
    r"(abs_rel|sq_rel|rmse|rmse_log|silog)_[a-z0-9]+",  # e.g. abs_rel_ss (scale+shift variant)
    r"(ate|rpe)_[a-z0-9_]+",
)


class UnknownMetricError(InputError):
    """A metric name whose better direction is not known here."""


def metric_goal(metric: str) -> Goal:
    """ "higher", "lower" or "none" (no better direction) for a metric name (case-insensitive).

    Raises UnknownMetricError for a name this module does not know, rather than guessing.
    """
    name = metric.strip().lower()
    if name in _HIGHER_NAMES or any(re.fullmatch(p, name) for p in _HIGHER_PATTERNS):
        return "higher"
    if name in _LOWER_NAMES or any(re.fullmatch(p, name) for p in _LOWER_PATTERNS):
        return "lower"
    if name in _NO_DIRECTION:
        return "none"
    raise UnknownMetricError(
        f"unknown metric {metric!r}: l4p_framework.metrics.goals does not know whether higher or lower is "
        "better; add it to _HIGHER_NAMES / _LOWER_NAMES / _NO_DIRECTION there"
    )


def higher_is_better(metric: str) -> bool:
    """True for accuracies (AJ, OA, IoU, delta1, ...), False for errors (abs_rel, epe, ate, ...).

    Raises UnknownMetricError for unknown names and InputError for metrics without a better
    direction (e.g. sim3_scale).
    """
    goal = metric_goal(metric)
    if goal == "none":
        raise InputError(
            f"metric {metric!r} has no better direction (it is a diagnostic); do not rank models by it"
        )
    return goal == "higher"


@dataclass
class BaselineComparison:
    """A model's metrics against its baseline's, over the metrics both report as finite numbers.

    below: (metric, model, baseline) where the model is worse; ahead / tied: metric names;
    unknown: metrics whose goal is unknown; no_direction: diagnostics (not compared).
    """

    below: list[tuple[str, float, float]] = field(default_factory=list)
    ahead: list[str] = field(default_factory=list)
    tied: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    no_direction: list[str] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return len(self.below) + len(self.ahead) + len(self.tied)


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def compare_to_baseline(model: Mapping[str, float], baseline: Mapping[str, float]) -> BaselineComparison:
    """Compare each metric in both dicts (finite values only) by its goal."""
    out = BaselineComparison()
    for metric, ours in model.items():
        base = baseline.get(metric)
        if not (_finite(ours) and _finite(base)):
            continue
        try:
            goal = metric_goal(metric)
        except UnknownMetricError:
            out.unknown.append(metric)
            continue
        if goal == "none":
            out.no_direction.append(metric)
        elif ours == base:
            out.tied.append(metric)
        elif (ours > base) == (goal == "higher"):
            out.ahead.append(metric)
        else:
            out.below.append((metric, float(ours), float(base)))
    return out


def baseline_sentence(head: str, model: Mapping[str, float], baseline: Mapping[str, float]) -> str:
    """One line: where `head` is below its baseline, or that it beats it on every metric.

    e.g. "tracking: below its baseline on: oa (0.7600 vs 0.8000, higher is better)." or
    "depth: the model beats its baseline on every metric (4 compared)."
    """
    c = compare_to_baseline(model, baseline)
    if c.below:
        items = ", ".join(
            f"{m} ({ours:.4f} vs {base:.4f}, {metric_goal(m)} is better)" for m, ours, base in c.below
        )
        text = f"{head}: below its baseline on: {items}"
    elif c.compared == 0:
        text = f"{head}: no metric to compare with a baseline"
    elif c.tied:
        text = f"{head}: the model matches or beats its baseline on every metric ({c.compared} compared)"
    else:
        text = f"{head}: the model beats its baseline on every metric ({c.compared} compared)"
    if c.unknown:
        text += f"; not compared (unknown whether higher is better): {', '.join(c.unknown)}"
    return text + "."
