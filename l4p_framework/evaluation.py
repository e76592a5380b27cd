"""Evaluation: run a composed model on dataset clips, average each head's metrics, compare baselines."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .compose import L4P
from .errors import InputError
from .matching import compute_matches


def run_on_batch(
    model: L4P,
    batch: dict[str, Any],
    heads: Sequence[str] | None = None,
    known_intrinsics: bool = False,
    on_window=None,
) -> dict[str, dict[str, torch.Tensor]]:
    """The model's windowed outputs for a collated batch (video, queries, optionally intrinsics)."""
    with torch.no_grad():
        return model(
            batch["video"],
            queries=batch.get("queries"),
            intrinsics=batch.get("intrinsics") if known_intrinsics else None,
            heads=heads,
            on_window=on_window,
        )


def head_metrics(
    model: L4P, name: str, outputs: dict, batch: dict
) -> tuple[dict[str, float], dict[str, float]]:
    """(model metrics, baseline metrics) of head `name` on one batch; baseline {} if undefined."""
    spec = model.specs[name]
    missing = [k for k in spec.targets if k not in batch]
    if missing:
        raise InputError(f"head {name!r} needs ground truth {missing}, which this dataset does not provide")
    ours = spec.metrics(outputs, batch)
    base = spec.metrics(spec.baseline(batch), batch) if spec.baseline is not None else {}
    return ours, base


def matching_metrics(model: L4P, name: str, batch: dict, matches) -> dict[str, float]:
    """Metrics of the shared matching alone for head `name` ({} unless it reads the matching)."""
    spec = model.specs[name]
    if spec.matching_baseline is None or not model.uses_matching(name):
        return {}
    return spec.metrics(spec.matching_baseline(batch, matches), batch)


def evaluate(
    model: L4P,
    dataset,
    heads: Sequence[str],
    num_clips: int,
    known_intrinsics: bool = False,
    on_batch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean metrics per head over `num_clips` samples.

    Returns {head: {"model": {metric: value}, "baseline": {...}, "protocol": {metric: note}}}, the
    notes from the head's `metric_protocols`, and for heads that read the shared frame matching
    "matching": the metrics of the matching alone on the whole clip (`HeadSpec.matching_baseline`).
    on_batch, if given, is called with each collated batch before the model runs (e.g. to record
    the clips' sizes).
    """
    from .data.collate import collate

    sums: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for i in range(min(num_clips, len(dataset))):
        batch = collate([dataset[i]])
        if on_batch is not None:
            on_batch(batch)
        outputs = run_on_batch(model, batch, heads, known_intrinsics)
        matches = (
            compute_matches(batch["video"], model.matching) if any(map(model.uses_matching, heads)) else None
        )
        for name in heads:
            ours, base = head_metrics(model, name, outputs[name], batch)
            groups = {"model": ours, "baseline": base}
            if matches is not None:
                groups["matching"] = matching_metrics(model, name, batch, matches)
            for kind, values in groups.items():
                for key, value in values.items():
                    sums[name][kind][key].append(value)
    results = {
        name: {kind: {k: _nanmean(v) for k, v in values.items()} for kind, values in groups.items()}
        for name, groups in sums.items()
    }
    for name in results:
        protocols = model.specs[name].metric_protocols
        results[name]["protocol"] = {k: protocols[k] for k in results[name]["model"] if k in protocols}
    return results


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """A plain-text table: head, metric (protocol), model, baseline and, when any head has it, the
    shared matching alone."""
    with_matching = any("matching" in groups for groups in results.values())
    rows = [
        ("head", "metric (protocol)", "model", "baseline") + (("matching alone",) if with_matching else ())
    ]
    for name, groups in results.items():
        for key, value in groups.get("model", {}).items():
            protocol = groups.get("protocol", {}).get(key)
            label = f"{key} ({protocol})" if protocol else key
            others = ("baseline", "matching") if with_matching else ("baseline",)
            cells = [groups.get(kind, {}).get(key) for kind in others]
            rows.append((name, label, f"{value:.4f}", *("" if c is None else f"{c:.4f}" for c in cells)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
