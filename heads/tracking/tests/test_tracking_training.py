"""Loss (masks, decrease under AdamW), metric wiring and visualisation."""

from __future__ import annotations

import math

import numpy as np
import torch
from l4p_head_tracking import (
    VISIBILITY_FILL,
    TrackingConfig,
    tracking_loss,
    tracking_metrics,
    tracking_spec,
    visualize,
)

from l4p_framework.checkpoints import build_head
from l4p_framework.testing import tiny_batch


def _perfect(batch: dict) -> dict[str, torch.Tensor]:
    """Outputs equal to the ground truth (visibility as +-10 logits)."""
    return {
        "tracks": batch["tracks"].clone(),
        "visibility": torch.where(batch["visibility"], 10.0, -10.0),
        "track_depth": batch["track_depth"].clone(),
    }


def test_loss_is_zero_for_ground_truth_and_counts_only_frames_after_the_query():
    batch = tiny_batch(seed=3, frames=8, queries=12)
    config = TrackingConfig()
    out = _perfect(batch)
    losses = tracking_loss(out, batch, config)
    assert losses["position"] == 0 and losses["depth"] < 1e-10 and losses["visibility"] < 1e-3
    # garbage before each query's frame or in padded queries changes nothing
    before = torch.arange(8)[None, None] < batch["queries"][..., 0:1]
    assert before.any()
    bad = {k: v.clone() for k, v in out.items()}
    bad["tracks"][before] = 1e3
    bad["visibility"][before] = -50.0
    bad["track_depth"][before] = 1e-3
    batch["query_valid"] = torch.ones(1, 12, dtype=torch.bool)
    batch["query_valid"][0, -2:] = False
    bad["tracks"][0, -2:] = 500.0
    bad_losses = tracking_loss(bad, batch, config)
    for key in ("position", "visibility", "depth"):
        torch.testing.assert_close(bad_losses[key], losses[key])
    # ... while an error after the query frame counts; depth is scale-invariant
    worse = {k: v.clone() for k, v in out.items()}
    worse["tracks"][0, 0, -1] += 4.0
    assert tracking_loss(worse, batch, config)["position"] > 0
    scaled = {**out, "track_depth": out["track_depth"] * 3.7}
    assert tracking_loss(scaled, batch, config)["depth"] < 1e-10


def test_loss_decreases_over_adamw_steps(encoder):
    batch = tiny_batch(seed=7, frames=8, queries=16)
    spec, config = tracking_spec(), TrackingConfig()
    head = build_head(spec, encoder.info, config)
    with torch.no_grad():
        features = encoder(batch["video"], ["final"])
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    history, position = [], []
    for _ in range(20):
        losses = spec.loss(head(features, batch), batch, config)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append(float(losses["loss"].detach()))
        position.append(float(losses["position"]))
    assert all(math.isfinite(v) for v in history)
    assert history[-1] < 0.7 * history[0], history
    assert position[-1] < 0.9 * position[0], position  # the soft-argmax positions learn too


def test_metrics_are_perfect_for_ground_truth_and_worse_for_noise():
    batch = tiny_batch(seed=3, frames=8, queries=12)
    perfect = tracking_metrics(_perfect(batch), batch)
    assert set(perfect) == {"aj", "delta_avg", "oa", "aj3d", "apd3d", "oa3d"}
    for key in ("aj", "delta_avg", "oa", "aj3d", "apd3d", "oa3d"):
        assert perfect[key] == 1.0, (key, perfect[key])
    noisy = _perfect(batch)
    noisy["tracks"] = noisy["tracks"] + 3.0
    m = tracking_metrics(noisy, batch)
    assert m["oa"] == 1.0 and m["delta_avg"] < 0.9 and m["aj"] < 0.9 and m["apd3d"] < 1.0
    no_3d = {k: v for k, v in batch.items() if k != "tracks_3d"}
    assert set(tracking_metrics(_perfect(batch), no_3d)) == {"aj", "delta_avg", "oa"}


def test_visualize_draws_tracks_and_skips_frames_before_the_query():
    batch = tiny_batch(seed=3, frames=8, queries=12)
    out = _perfect(batch)
    out["visibility"] = torch.where(
        torch.arange(8)[None, None] < batch["queries"][..., 0:1], VISIBILITY_FILL, out["visibility"]
    )
    images = visualize(out, batch)["tracks"]
    assert len(images) == 8 and all(im.dtype == np.uint8 and im.shape == (64, 64, 3) for im in images)
    raw = (batch["video"][0].permute(1, 2, 3, 0) * 255).round().to(torch.uint8).numpy()
    assert all((im != fr).any() for im, fr in zip(images, raw))
    # a single query starting at the last frame: frames before it are left untouched
    late = {k: v[:, :1].clone() for k, v in out.items()}
    late["queries"] = torch.tensor([[[7.0, 32.0, 32.0]]])
    images = visualize(late, batch)["tracks"]
    assert all((im == fr).all() for im, fr in zip(images[:7], raw[:7]))
    assert (images[7] != raw[7]).any()
