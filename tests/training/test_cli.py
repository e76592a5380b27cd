"""l4p-train-head / l4p-train from the command line: train, load through the registry, resume, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import FAST, make_registry, run_cli, state_equal

from l4p_framework import L4P, ConfigError, L4PError, load_registry
from l4p_framework.cli.train import train_head_main
from l4p_framework.plugins import set_plugin_host
from l4p_framework.testing import fresh_host, tiny_batch
from l4p_framework.training import load_train_config, train


def _fresh_installed_host():
    """The process-wide host rediscovered, so the toy entry point on sys.path is found."""
    set_plugin_host(None)
    return fresh_host(entrypoints=True)


def test_train_head_cli_then_load_from_registry(registry, cli_env, toy_site, monkeypatch):
    proc = run_cli(
        ["--plugin", "toya", "--registry", str(registry), "steps=4", "checkpoint_every=2", *FAST],
        cli_env,
        registry.parent,
    )
    assert proc.returncode == 0, proc.stderr
    reg = load_registry(registry)
    entry = reg.registry.heads["toya"]
    assert entry.plugin == "l4p-toy-heads" and entry.version == "0.0.1"
    assert entry.weights == "weights/toya.safetensors" and len(entry.sha256) == 64
    assert entry.encoder_fingerprint == reg.registry.encoder.fingerprint
    assert set(entry.metrics) == {"l1", "loss"}
    log = [json.loads(line) for line in (registry.parent / "runs/toya/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert log[-1]["final"] and "toya" in log[-1]["eval"]

    monkeypatch.syspath_prepend(str(toy_site))
    host = _fresh_installed_host()
    try:
        model = L4P.from_registry(registry, host=host)
        trained = load_file(registry.parent / entry.weights)
        assert state_equal(model.heads["toya"].state_dict(), trained)
        batch = tiny_batch()
        out = model(batch["video"])
        assert out["toya"]["value"].shape == (1, 1, 8, 64, 64)
    finally:
        set_plugin_host(None)


@pytest.fixture
def toy_host(host):
    """Make the in-memory toy host the process-wide one (for in-process CLI calls)."""
    previous = set_plugin_host(host)
    yield host
    set_plugin_host(previous)


def test_print_config_and_param_overrides(registry, toy_host, capsys):
    code = train_head_main(
        [
            "--plugin",
            "toya",
            "--registry",
            str(registry),
            "--print-config",
            "params.toya.hidden=32",
            "lr=1e-3",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "hidden: 32" in out and "lr: 0.001" in out and "plugin: toya" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--plugin", "toyaa"], "did you mean 'toya'"),
        (["--plugin", "toya", "stpes=3"], "did you mean 'steps'"),
        (["--plugin", "toya", "params.toya.hiden=3"], "did you mean 'hidden'"),
        (["--plugin", "toya", "precision=fp16"], "precision"),
        (["--plugin", "toya", "data.name=nope"], "no dataset named 'nope'"),
        (["--plugin", "toya", "data.train_split=trian"], "did you mean 'train'"),
        (["--plugin", "toya", "+params.toyc.hidden=3"], "not trained in this run"),
    ],
)
def test_cli_errors_are_one_message_exit_2(registry, toy_host, capsys, args, expected):
    code = train_head_main([*args, "--registry", str(registry), "steps=1", *FAST])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err
    assert err.startswith("l4p-train-head: error: ") and "Traceback" not in err


def _train_in_process(host, registry, args):
    """Run the same configuration in this process, single-threaded like the CLI subprocesses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = load_train_config(None, args, registry=str(registry), host=host)
        return train(config, host=host)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)


def test_kill_after_checkpoint_then_resume_is_bitwise_identical(tmp_path, cli_env, host):
    """A run SIGKILLed after step 3 (last checkpoint: step 2) and resumed equals the uninterrupted run."""
    common = ["steps=6", "checkpoint_every=2", "deterministic=true", "seed=3", *FAST]
    cut = make_registry(tmp_path / "cut")
    proc = run_cli(
        ["--plugin", "toya", *common, "--registry", str(cut), "debug_kill_after_step=3"], cli_env, cut.parent
    )
    assert proc.returncode == -9, proc.stderr  # SIGKILL: no weights, no registry entry
    assert (cut.parent / "runs/toya/checkpoint.safetensors").is_file()
    assert not (cut.parent / "weights/toya.safetensors").exists()
    assert "toya" not in load_registry(cut).registry.heads

    resumed = _train_in_process(host, cut, ["plugin=toya", *common, "resume=true"])
    full = make_registry(tmp_path / "full")
    uninterrupted = _train_in_process(host, full, ["plugin=toya", *common])
    a = load_file(uninterrupted.heads["toya"].weights)
    b = load_file(resumed.heads["toya"].weights)
    assert state_equal(a, b)
    assert load_registry(cut).registry.heads["toya"].sha256 == resumed.heads["toya"].sha256
    records = [json.loads(x) for x in (cut.parent / "runs/toya/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]  # killed step 3 dropped, redone
    assert [r["event"] for r in records if "event" in r] == ["start", "resume"]


def test_resume_refuses_a_changed_config(tmp_path, host):
    reg = make_registry(tmp_path / "r")
    common = ["plugin=toya", "steps=2", "checkpoint_every=2", *FAST]
    _train_in_process(host, reg, common)
    with pytest.raises(ConfigError, match=r"lr: 0.0003 -> 0.1"):
        _train_in_process(host, reg, [*common, "resume=true", "lr=0.1"])
    with pytest.raises(L4PError, match="no checkpoint"):
        _train_in_process(host, reg, [*common, "resume=true", "out_dir=" + str(tmp_path / "elsewhere")])


def test_torchrun_two_ranks_equal_single_process(tmp_path, cli_env, host):
    """2 gloo ranks x 1 clip == 1 process x 2 clips (same global batch), within 1e-5 relative."""
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    common = ["steps=4", "checkpoint_every=0", "batch_size=2", "grad_accum=2", *FAST]
    ddp = make_registry(tmp_path / "ddp")
    proc = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "l4p_framework.cli.train",
            "--plugin",
            "toya",
            *common,
            "--registry",
            str(ddp),
        ],
        env=cli_env,
        cwd=ddp.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    single = _train_in_process(host, make_registry(tmp_path / "single"), ["plugin=toya", *common])
    a = load_file(single.heads["toya"].weights)
    b = load_file(ddp.parent / "weights/toya.safetensors")
    for key in a:
        rel = (a[key] - b[key]).norm() / a[key].norm().clamp_min(1e-12)
        assert rel < 1e-5, (key, float(rel))
    log = [json.loads(x) for x in (ddp.parent / "runs/toya/log.jsonl").read_text().splitlines()]
    assert log[0]["world_size"] == 2
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]  # rank 0 alone writes the log
    assert load_registry(ddp).registry.heads["toya"].sha256  # rank 0 registered the head


@pytest.mark.slow
def test_real_depth_plugin_trains_from_the_console_script(registry, cli_env):
    """The installed depth head plugin, end to end through the `l4p-train-head` console script."""
    pytest.importorskip("l4p_head_depth")
    script = shutil.which("l4p-train-head") or os.path.join(os.path.dirname(sys.executable), "l4p-train-head")
    proc = subprocess.run(
        [script, "--plugin", "depth", "--registry", str(registry), "steps=2", "batch_size=1", *FAST],
        env=cli_env,
        cwd=registry.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    set_plugin_host(None)
    try:
        model = L4P.from_registry(registry, heads=["depth"])
        out = model(tiny_batch()["video"])
    finally:
        set_plugin_host(None)
    assert out["depth"]["depth"].shape == (1, 1, 8, 64, 64)
    assert set(load_registry(registry).registry.heads["depth"].metrics) >= {"abs_rel", "delta1"}


def test_yaml_config_file_is_merged_and_validated(registry, toy_host, capsys, tmp_path):
    good = tmp_path / "run.yaml"
    good.write_text("steps: 7\ndata:\n  options:\n    num_queries: 3\nparams:\n  toya:\n    hidden: 4\n")
    assert (
        train_head_main(
            [
                "--plugin",
                "toya",
                "--registry",
                str(registry),
                "--config",
                str(good),
                "--print-config",
                "steps=9",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "steps: 9" in out and "num_queries: 3" in out and "hidden: 4" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("stpes: 7\n")
    assert train_head_main(["--plugin", "toya", "--registry", str(registry), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "stpes: unknown key (did you mean 'steps'?)" in err
