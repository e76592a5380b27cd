"""Shared fixtures: the tiny encoder, a composed tiny model (8-frame window, stride 4), synth4d clips."""

from __future__ import annotations

import pytest
import torch
from l4p_head_tracking import TrackingConfig, tracking_spec

from l4p_framework import L4P
from l4p_framework.testing import tiny_batch, tiny_encoder


@pytest.fixture(scope="session")
def encoder():
    return tiny_encoder()


def _make_model(encoder, stride: int = 4, **config) -> L4P:
    model = L4P(encoder, window_stride=stride)
    model.add_head(tracking_spec(), TrackingConfig(**config))
    return model.eval()


@pytest.fixture(scope="session")
def make_model(encoder):
    """make_model(stride=4, **config): the tiny encoder + a fresh (seeded) tracking head, windows of
    8 frames every `stride`."""
    return lambda stride=4, **config: _make_model(encoder, stride, **config)


@pytest.fixture(scope="session")
def model(encoder):
    return _make_model(encoder)


@pytest.fixture(scope="session")
def clip20():
    """A 20-frame synth4d clip at 64 x 64 with 24 queries (some start mid-video)."""
    return tiny_batch(seed=3, frames=20, queries=24)


@pytest.fixture(scope="session")
def clip8():
    return tiny_batch(seed=7, frames=8, queries=16)


def _run(model: L4P, video: torch.Tensor, queries: torch.Tensor | None = None, **kw) -> dict:
    with torch.no_grad():
        return model(video, queries=queries, **kw)["tracking"]


@pytest.fixture(scope="session")
def run():
    """run(model, video, queries, **kw): the tracking outputs of L4P.forward without gradients."""
    return _run
