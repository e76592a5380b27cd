"""Golden test of the "add a task" promise: training the normals head changes no other head, bit for bit.

On a fixed synth4d clip, every installed first-party head (depth, flow, motion, tracking, pose:
whichever are installed) is composed from a registry on the tiny encoder with freshly saved weights and
its outputs recorded. Then `l4p-train-head --plugin normals` trains normals into the same registry (a
subprocess, a few steps). Afterwards every other head, reloaded from the registry (alone and beside the
new normals head), gives bitwise identical outputs, and its weights file and registry entry are untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from l4p_framework import L4P, build_head, get_plugin_host, load_encoder, load_registry, save_head
from l4p_framework.testing import tiny_batch

FIRST_PARTY = ("depth", "flow", "motion", "tracking", "pose")
SMALL = {"layer_dims": (8, 8, 16, 16), "feature_dim": 8, "last_dim": 8}
"""Narrow decoder widths for the normals run (the other heads keep their default configs)."""
TRAIN = [
    "steps=3",
    "batch_size=1",
    "warmup_steps=1",
    "checkpoint_every=0",
    "eval_batches=1",
    "log_every=1",
    "progress=false",
    "seed=5",
    "data.train_clips=3",
    "data.options.num_queries=4",
    *(f"params.normals.{k}=[{','.join(map(str, v))}]" if isinstance(v, tuple) else f"params.normals.{k}={v}"
      for k, v in SMALL.items()),
]  # fmt: skip


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def console_script(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def flat(outputs: dict[str, dict[str, torch.Tensor]], heads) -> dict[str, torch.Tensor]:
    """{"head/output": tensor} of the named heads."""
    return {f"{h}/{k}": v for h in heads for k, v in outputs[h].items() if isinstance(v, torch.Tensor)}


@pytest.fixture
def deterministic():
    previous, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    yield
    torch.use_deterministic_algorithms(previous)
    torch.set_num_threads(threads)


def build_registry(folder: Path, heads: list[str]) -> Path:
    """registry.yaml on the tiny encoder with freshly initialised, saved weights of `heads`."""
    host = get_plugin_host()
    encoder = load_encoder("tiny")
    (folder / "weights").mkdir(parents=True)
    entries = {}
    for name in heads:
        spec = host.get_head(name)
        config = spec.config_model()
        module = build_head(spec, encoder.info, config, seed=11)
        weights = folder / "weights" / f"{name}.safetensors"
        digest = save_head(
            weights, module, spec, config, encoder.info, training={"note": "golden test: untrained"}
        )
        entries[name] = {
            "plugin": spec.distribution,
            "version": spec.version,
            "params": config.model_dump(mode="json"),
            "weights": f"weights/{name}.safetensors",
            "sha256": digest,
            "encoder_fingerprint": encoder.fingerprint,
        }
    registry = folder / "registry.yaml"
    document = {"encoder": {"preset": "tiny", "fingerprint": encoder.fingerprint}, "heads": entries}
    registry.write_text(json.dumps(document, indent=2))  # JSON is YAML
    return registry


def test_training_normals_leaves_every_other_head_bitwise_identical(tmp_path, deterministic):
    host = get_plugin_host()
    installed = host.heads()
    if "normals" not in installed:
        pytest.skip("l4p-head-normals is not installed (pip install -e plugins/normals)")
    others = [h for h in FIRST_PARTY if h in installed]
    if not others:
        pytest.skip("no first-party head plugin is installed")
    registry = build_registry(tmp_path / "bundle", others)
    batch = tiny_batch(seed=123, frames=12)  # 12 frames: two overlapping windows of 8, stitched
    video, queries = batch["video"], batch["queries"]

    with torch.no_grad():
        before = flat(L4P.from_registry(registry).eval()(video, queries=queries), others)
    files = {h: tmp_path / "bundle" / "weights" / f"{h}.safetensors" for h in others}
    digests = {h: sha256(p) for h, p in files.items()}
    entries = {h: e.model_dump() for h, e in load_registry(registry).registry.heads.items()}

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [console_script("l4p-train-head"), "--plugin", "normals", "--registry", str(registry), *TRAIN],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr

    reg = load_registry(registry)
    assert set(reg.registry.heads) == {*others, "normals"}
    normals = reg.registry.heads["normals"]
    assert normals.plugin == "l4p-head-normals"
    assert normals.encoder_fingerprint == reg.registry.encoder.fingerprint
    assert normals.sha256 == sha256(reg.resolve(normals.weights))
    assert {"mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"} <= set(normals.metrics)
    # the other heads' files and registry entries are untouched
    assert {h: sha256(p) for h, p in files.items()} == digests
    assert {h: reg.registry.heads[h].model_dump() for h in others} == entries

    with torch.no_grad():
        alone = flat(L4P.from_registry(registry, heads=others).eval()(video, queries=queries), others)
        together = L4P.from_registry(registry).eval()(video, queries=queries)
    beside = flat(together, others)
    assert alone.keys() == before.keys() == beside.keys()
    for key in before:
        assert torch.equal(alone[key], before[key]), f"{key} changed after training normals"
        assert torch.equal(beside[key], before[key]), f"{key} changed when composed beside normals"
    n = together["normals"]["normals"]
    assert n.shape == (1, 3, *video.shape[2:]) and torch.isfinite(n).all()
