"""A full disk (OSError ENOSPC or safetensors' SafetensorError) while writing weights, checkpoints or cache
shards is one L4PError; the old file survives, no temp file stays, and stale temp files of killed writers go."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch
from safetensors import SafetensorError
from training_helpers import FAST

import l4p_framework.safetensors_io as st
from l4p_framework import L4PError
from l4p_framework.cli.train import train_head_main
from l4p_framework.plugins import set_plugin_host
from l4p_framework.safetensors_io import write_safetensors
from l4p_framework.training.state import load_state, save_state

FAILURES = {
    "safetensors": lambda: SafetensorError("Error while serializing: No space left on device (os error 28)"),
    "oserror": lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
}


def _full_disk(monkeypatch, kind: str, when=lambda path: True) -> None:
    """Make the low-level safetensors writer write a few bytes, then fail like a full disk."""
    real = st.save_file

    def save_file(tensors, path, metadata=None):
        if not when(str(path)):
            return real(tensors, path, metadata=metadata)
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise FAILURES[kind]()

    monkeypatch.setattr(st, "save_file", save_file)


@pytest.mark.parametrize("kind", sorted(FAILURES))
@pytest.mark.parametrize("what", ["checkpoint", "weights"])
def test_full_disk_is_one_error_and_keeps_the_old_file(tmp_path, monkeypatch, kind, what):
    target = tmp_path / f"{what}.safetensors"
    if what == "checkpoint":
        save_state(target, {"step": 1, "w": torch.ones(3)})
    else:
        write_safetensors(target, {"w": torch.ones(3)}, {"format": "test"})
    before = target.read_bytes()
    _full_disk(monkeypatch, kind)
    with pytest.raises(L4PError, match=rf"cannot write {target}: .*No space left on device.*free disk space"):
        if what == "checkpoint":
            save_state(target, {"step": 2, "w": torch.zeros(3)})
        else:
            write_safetensors(target, {"w": torch.zeros(3)}, {"format": "test"})
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == [target.name]  # no temp file left behind


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_write_removes_stale_temp_files_of_dead_writers_only(tmp_path):
    target = tmp_path / "checkpoint.safetensors"
    dead = tmp_path / f".checkpoint.safetensors.tmp-{_dead_pid()}-0badf00d"
    alive = tmp_path / f".checkpoint.safetensors.tmp-{os.getpid()}-0badf00d"
    other = tmp_path / f".other.safetensors.tmp-{_dead_pid()}-0badf00d"  # another target's: not ours
    for stale in (dead, alive, other):
        stale.write_bytes(b"")  # what a SIGKILL during a write leaves
    save_state(target, {"step": 3})
    assert load_state(target)["step"] == 3
    assert not dead.exists()
    assert alive.exists() and other.exists()


@pytest.fixture
def toy_host(host):
    previous = set_plugin_host(host)
    yield host
    set_plugin_host(previous)


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_train_head_cli_full_disk_at_final_weights_is_one_error_line(
    registry, toy_host, capsys, monkeypatch, kind
):
    before = registry.read_bytes()
    _full_disk(monkeypatch, kind, when=lambda path: "toya.safetensors" in path)  # the final weights only
    code = train_head_main(
        ["--plugin", "toya", "--registry", str(registry), "steps=2", "checkpoint_every=0", *FAST]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("l4p-train-head: error: could not write the trained weights")
    assert f"{registry.parent / 'weights' / 'toya.safetensors'}: " in lines[0]
    assert "No space left on device" in lines[0] and "free disk space" in lines[0]
    assert registry.read_bytes() == before
    weights = registry.parent / "weights"
    assert not weights.exists() or os.listdir(weights) == []  # neither weights nor temp/staged files
