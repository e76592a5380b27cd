"""The core's key property: heads are independent, bit for bit.

Adding, removing or training another head never changes a head's weights or outputs. Checked on
the tiny encoder with toy heads under torch.use_deterministic_algorithms(True).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy_heads import ToyPlugin, toy_spec  # noqa: E402

from l4p_framework import L4P, compose  # noqa: E402
from l4p_framework.testing import fresh_host, tiny_batch, tiny_encoder  # noqa: E402
from l4p_framework.training import load_train_config, train  # noqa: E402

A, B, C = toy_spec("head_a", layer=2), toy_spec("head_b", layer=3), toy_spec("head_c", layer=4)
FAST = [
    "steps=4",
    "batch_size=2",
    "warmup_steps=1",
    "checkpoint_every=0",
    "eval_batches=1",
    "progress=false",
    "data.train_clips=6",
    "data.options.num_queries=4",
]


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


@pytest.fixture(scope="module")
def host():
    return fresh_host(ToyPlugin(A, B, C), entrypoints=True)  # entry points: the synth4d dataset


def _equal(x: dict, y: dict) -> bool:
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_adding_or_removing_heads_never_changes_another_heads_outputs(deterministic, host):
    video = tiny_batch()["video"]
    model = L4P(tiny_encoder())
    model.add_head(A)
    alone = model(video)["head_a"]
    model.add_head(B)
    with_b = model(video)
    model.add_head(C)  # C reads a deeper layer: the encoder now runs more blocks
    with_bc = model(video)
    model.remove_head("head_b")
    without_b = model(video)
    assert (
        _equal(alone, with_b["head_a"])
        and _equal(alone, with_bc["head_a"])
        and _equal(alone, without_b["head_a"])
    )
    assert _equal(with_b["head_b"], with_bc["head_b"])
    # composing in another order / with other heads builds the same initial weights
    other = compose(heads=["head_c", "head_a"], host=host, encoder=tiny_encoder())
    assert _equal(other.heads["head_a"].state_dict(), model.heads["head_a"].state_dict())
    assert _equal(other(video)["head_a"], alone)


def _registry(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "registry.yaml").write_text("encoder:\n  preset: tiny\n")
    return folder / "registry.yaml"


def test_training_a_head_beside_another_leaves_it_bitwise_identical(tmp_path, deterministic, host):
    alone_reg = _registry(tmp_path / "alone")
    joint_reg = _registry(tmp_path / "joint")
    alone = train(
        load_train_config(None, FAST, plugin="head_a", registry=str(alone_reg), host=host), host=host
    )
    joint = train(
        load_train_config(
            None,
            [*FAST, "loss_weights.head_c=3.0"],
            heads=["head_a", "head_c"],
            registry=str(joint_reg),
            host=host,
        ),
        host=host,
    )
    from safetensors.torch import load_file

    a_alone = load_file(alone.heads["head_a"].weights)
    a_joint = load_file(joint.heads["head_a"].weights)
    assert _equal(a_alone, a_joint)
    assert alone.heads["head_a"].metrics == joint.heads["head_a"].metrics
    fresh = compose(heads=["head_a"], host=host).heads["head_a"].state_dict()
    assert not _equal(a_alone, fresh)  # it did train

    # and through the registry, next to other heads, A's outputs on a fixed clip are the same
    video = tiny_batch(seed=11)["video"]
    m1 = L4P.from_registry(alone_reg, host=host)
    m2 = L4P.from_registry(joint_reg, host=host)
    m1.add_head(B)
    assert _equal(m1(video)["head_a"], m2(video)["head_a"])
    assert set(m2(video)) == {"head_a", "head_c"}
