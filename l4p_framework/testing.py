"""Fixtures and checks for plugin authors: test a head the way the core tests its own.

Use in a plugin's tests::

    from l4p_framework.testing import assert_head_contract, fresh_host, tiny_encoder
    def test_contract():
        assert_head_contract(my_head_spec())

or the pytest fixtures `l4p_host` and `l4p_tiny_encoder` (import them into your conftest.py).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

import pytest
import torch
from pydantic import BaseModel

from .checkpoints import build_head
from .compose import L4P, time_dim
from .encoder import VideoEncoder, load_encoder
from .plugins import PluginHost
from .specs import HeadSpec


def fresh_host(*plugins: object, entrypoints: bool = False, strict: bool = False) -> PluginHost:
    """A new plugin host with `plugins` registered in memory (and installed ones if asked)."""
    host = PluginHost(strict=strict)
    if entrypoints:
        host.load_entrypoints()
    for i, plugin in enumerate(plugins):
        host.register(plugin, name=getattr(plugin, "__name__", f"plugin{i}"))
    return host


def tiny_encoder(seed: int = 0) -> VideoEncoder:
    """The frozen `tiny` test encoder (4 blocks, 64 wide, 8 frames at 64x64)."""
    return load_encoder("tiny", seed=seed, precision="fp32")


@lru_cache(maxsize=4)
def _clip(seed: int, frames: int, size: int, queries: int) -> dict:
    from .data.collate import collate
    from .data.synth4d import Synth4DConfig, generate_clip

    config = Synth4DConfig(num_frames=frames, height=size, width=size, num_queries=queries)
    return collate([generate_clip(seed, config)])


def tiny_batch(seed: int = 7, frames: int = 8, size: int = 64, queries: int = 16) -> dict[str, Any]:
    """A collated synth4d batch (B=1) with every ground-truth key, sized for the tiny encoder."""
    return {
        k: v.clone() if isinstance(v, torch.Tensor) else v
        for k, v in _clip(seed, frames, size, queries).items()
    }


def _resolve(shape: str, sizes: dict[str, int]) -> tuple:
    axes = [a.strip() for a in re.sub(r"[()]", "", shape).split(",") if a.strip()]
    return tuple(int(a) if a.isdigit() else sizes.get(a, a) for a in axes)


def assert_head_contract(
    spec: HeadSpec,
    encoder: VideoEncoder | None = None,
    batch: dict | None = None,
    config: BaseModel | None = None,
) -> dict[str, torch.Tensor]:
    """Check that `spec` honours the HeadSpec contract on the tiny encoder; returns the outputs.

    Checks: typed config with extra="forbid"; layers exist; outputs match the declared shapes;
    loss is finite and its gradient reaches the head; metrics are floats; the stitcher merges
    two windows into the full length; visualize returns uint8 images.
    """
    assert isinstance(spec, HeadSpec), f"expected a HeadSpec, got {type(spec).__name__}"
    assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.name), f"head name {spec.name!r} must be lower_snake_case"
    assert spec.config_model.model_config.get("extra") == "forbid", "config_model needs extra='forbid'"
    encoder = encoder or tiny_encoder()
    batch = batch or tiny_batch(frames=encoder.config.num_frames, size=encoder.config.image_size[0])
    config = config or spec.config_model()
    model = L4P(encoder)
    head = model.add_head(spec, config)
    features = model.encode(batch["video"])
    out = model.run_heads(features, batch)[spec.name]
    b, _, t, h, w = batch["video"].shape
    sizes = {"B": b, "T": t, "H": h, "W": w}
    if "queries" in batch:
        sizes["N"] = batch["queries"].shape[1]
    declared = {o.name for o in spec.outputs}
    assert declared <= set(out), f"outputs {sorted(declared - set(out))} declared but not returned"
    for o in spec.outputs:
        want = _resolve(o.shape, sizes)
        got = tuple(out[o.name].shape)
        assert len(got) == len(want) and all(isinstance(w_, str) or w_ == g for w_, g in zip(want, got)), (
            f"output {o.name!r}: shape {got} does not match declared {o.shape} -> {want}"
        )
        assert torch.isfinite(out[o.name]).all(), f"output {o.name!r} has non-finite values"
    missing = [k for k in spec.targets if k not in batch]
    assert not missing, f"targets {missing} are not in the test batch"
    losses = spec.loss(out, batch, config)
    assert "loss" in losses and losses["loss"].ndim == 0 and torch.isfinite(losses["loss"]), (
        "loss must be a finite scalar"
    )
    losses["loss"].backward()
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), (
        "the loss does not reach the head's parameters"
    )
    assert all(p.grad is None for p in encoder.parameters()), "the loss reached the frozen encoder"
    with torch.no_grad():
        out = model.run_heads(features, batch)[spec.name]
    metrics = spec.metrics(out, batch)
    assert metrics and all(isinstance(v, float) for v in metrics.values()), (
        f"metrics must be floats: {metrics}"
    )
    assert not all(math.isnan(v) for v in metrics.values()), "all metrics are NaN"
    stitcher = spec.stitcher(config)
    state = stitcher.merge(None, out, 0, 0)
    state = stitcher.merge(state, out, t // 2, t - t // 2)
    full = stitcher.finalize(state)
    for o in spec.outputs:
        d = time_dim(o.shape)
        if d is not None and o.name in full:
            assert full[o.name].shape[d] == t + t // 2, f"stitched {o.name!r} should have {t + t // 2} frames"
    if spec.visualize is not None:
        images = spec.visualize(out, batch)
        for name, image in images.items():
            first = image[0] if isinstance(image, list) else image
            assert first.dtype.name == "uint8" and first.ndim == 3, (
                f"visualize()[{name!r}] must be uint8 (H, W, 3)"
            )
    assert isinstance(build_head(spec, encoder.info, config), torch.nn.Module)
    return out


def fit_fixed_batch(model: L4P, name: str, batch: dict, steps: int = 20, lr: float = 2e-3) -> list[float]:
    """Train head `name` of `model` with AdamW on one fixed batch; returns the loss of every step.

    Plugin tests assert that the last loss is clearly below the first (the head can learn).
    """
    spec, config, head = model.specs[name], model.configs[name], model.heads[name]
    batch = model.window_batch(batch, [name])
    features = model.encode(batch["video"])
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = spec.loss(model.run_heads(features, batch, [name])[name], batch, config)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def l4p_host() -> PluginHost:
    """A fresh, empty plugin host (register plugins in memory with host.register)."""
    return fresh_host()


@pytest.fixture
def l4p_tiny_encoder() -> VideoEncoder:
    return tiny_encoder()
