"""Helpers and fixtures of the training tests: a toy head plugin (in memory and as an installed entry point),
a registry on the tiny encoder, and helpers to run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

CORE_TESTS = Path(__file__).resolve().parents[1] / "core"
sys.path.insert(0, str(CORE_TESTS))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # training_helpers

from toy_heads import ToyPlugin, toy_spec  # noqa: E402

from l4p_framework.testing import fresh_host  # noqa: E402

FAST = [
    "data.train_clips=8",
    "data.options.num_queries=4",
    "eval_batches=1",
    "warmup_steps=2",
    "log_every=1",
    "progress=false",
]
"""Overrides that keep a training run to a fraction of a second on the tiny encoder."""

PLUGIN_MODULE = """
from toy_heads import ToyPlugin, toy_spec

_plugin = ToyPlugin(toy_spec("toya"), toy_spec("toyc", layer=3))
l4p_heads = _plugin.l4p_heads
"""


@pytest.fixture(scope="session")
def toy_site(tmp_path_factory) -> Path:
    """A folder that, on PYTHONPATH, installs distribution `l4p-toy-heads` (entry point `toy`)."""
    site = tmp_path_factory.mktemp("site")
    (site / "l4p_toy_heads.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    info = site / "l4p_toy_heads-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: l4p-toy-heads\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[l4p]\ntoy = l4p_toy_heads\n")
    return site


@pytest.fixture
def cli_env(toy_site) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(toy_site), str(CORE_TESTS), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.pop("L4P_LOAD_PLUGINS", None)
    return env


def make_registry(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "registry.yaml"
    # float32 compute: runs are compared bit for bit (bf16 is the default where the CPU runs it fast)
    path.write_text("encoder:\n  preset: tiny\n  precision: fp32\n")
    return path


@pytest.fixture
def registry(tmp_path) -> Path:
    return make_registry(tmp_path / "bundle")


@pytest.fixture
def host():
    """An in-memory host with the toy heads plus the installed plugins (synth4d)."""
    return fresh_host(ToyPlugin(toy_spec("toya"), toy_spec("toyc", layer=3)), entrypoints=True)


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


def run_cli(args: list[str], env: dict, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "l4p_framework.cli.train", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
