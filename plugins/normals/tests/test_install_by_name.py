"""Installing the plugin by name: scripts/install_by_name.py builds wheels of l4p-framework and
l4p-head-normals, installs `l4p-head-normals` from that wheelhouse into a fresh virtual environment, and
trains it there with `l4p-train-head`. About a minute (half of it installing torch), hence slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "install_by_name.py"


def test_script_help_runs_without_side_effects():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--work" in proc.stdout and "--steps" in proc.stdout


@pytest.mark.slow
def test_install_by_name_into_a_fresh_venv_then_train(tmp_path):
    work = tmp_path / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--work", str(work), "--steps", "2"],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((work / "report.json").read_text())
    venv = Path(report["venv"])

    # the wheelhouse holds both l4p wheels and the third-party dependencies (not torch)
    wheels = report["wheels"]
    assert any(w.startswith("l4p_framework-") for w in wheels)
    assert any(w.startswith("l4p_head_normals-") for w in wheels)
    assert {"pluggy", "pydantic", "omegaconf", "safetensors", "einops", "numpy", "pillow", "av"} <= {
        w.split("-")[0].lower() for w in wheels
    }
    assert not any(w.startswith("torch-") for w in wheels)

    # l4p and the plugin come from the fresh environment's site-packages, not from the checkout
    assert all(Path(p).is_relative_to(venv) for p in report["imported_from"]), report["imported_from"]

    # `l4p plugins --json` there (run again here): normals active; no head of the dev environment leaked in
    clean = {
        k: v for k, v in env.items() if k not in ("PYTHONPATH", "L4P_LOAD_PLUGINS", "L4P_DISABLE_PLUGINS")
    }
    out = subprocess.run(
        [str(venv / "bin" / "l4p"), "plugins", "--json"], capture_output=True, text=True, timeout=120, env=clean, cwd=work
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    plugins = {p["plugin"]: p for p in json.loads(out.stdout)}
    assert (
        plugins["normals"]["status"] == "active" and plugins["normals"]["distribution"] == "l4p-head-normals"
    )
    assert plugins["normals"]["provides"] == {"heads": ["normals"]}
    assert set(plugins) == {"synth4d", "normals"}, sorted(plugins)

    # trained and registered: weights present and compatible with the registry's encoder
    row = next(h for h in report["heads"] if h["head"] == "normals")
    assert row["registered"] and row["weights_present"] and row["encoder_compatible"]
    registry = Path(report["registry"]).read_text()
    assert "plugin: l4p-head-normals" in registry and "mean_angle:" in registry
    assert (Path(report["registry"]).parent / "weights" / "normals.safetensors").is_file()

    # the installed framework ships the scaffold templates: `l4p new-head` works there too
    made = subprocess.run(
        [str(venv / "bin" / "l4p"), "new-head", "probe_task", "--dest", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=clean, cwd=work,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "probe_task" / "src" / "l4p_head_probe_task" / "head.py").is_file()
