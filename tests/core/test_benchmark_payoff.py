"""benchmarks/payoff.py's full-size path (issue 22) on a tiny encoder, so the script never rots."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "payoff.py"


def _payoff():
    spec = importlib.util.spec_from_file_location("payoff_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_full_size_model_has_the_five_tasks_and_single_task_parts_share_it():
    payoff = _payoff()
    model = payoff.full_size_model("tiny")
    assert list(model.heads) == ["depth", "flow", "tracking", "motion", "pose"]
    assert model.profile == "official"
    assert all(model.configs[name].preset == "official" for name in model.heads)
    part = payoff.sub_model(model, ["pose"])
    assert list(part.heads) == ["pose"] and part.heads["pose"] is model.heads["pose"]
    assert part.encoder is model.encoder
    video = torch.rand(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        alone = part(video)["pose"]
        together = model(video)["pose"]
    for key, value in alone.items():
        torch.testing.assert_close(value, together[key])
    with torch.no_grad():
        flops = payoff.flop_counts(model, video)
    assert set(flops) == {"encoder", *model.heads}
    assert all(count > 0 for count in flops.values()), flops  # heads run through forward_window count too
    assert flops["depth"] > 100 * flops["encoder"]  # full-resolution DPT heads on a tiny encoder


@pytest.mark.slow
def test_full_size_script_prints_the_ratio():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--full-size", "--encoder", "tiny", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    ratio = float(result.stdout.split("all at once / sum of single-task runs:")[1].split()[0])
    assert 0 < ratio < 1.2
    for name in ("depth", "flow", "tracking", "motion", "pose"):
        assert f"{name} alone (own encoder)" in result.stdout
