"""Small CLI gaps (issue 20, item 6): `l4p eval` on a reader without a size option, dataset options
a reader refuses, `l4p encoder info` without building the encoder, and a light CLI import."""

from __future__ import annotations

import json
import struct
import time

import numpy as np
import pytest
from PIL import Image

from l4p_framework.cli.main import main
from l4p_framework.data.readers.sintel import SintelDataset
from l4p_framework.encoder import build_encoder, load_encoder
from l4p_framework.errors import InputError

pytest.importorskip("l4p_head_depth")

TAG = 202021.25


def _sintel_root(root, frames=3, height=6, width=8):
    """A one-scene Sintel training tree (clean frames, depth, cameras, forward flow) of HxW frames."""
    rng = np.random.default_rng(0)
    scene = "alley_1"
    dirs = {k: root / "training" / k / scene for k in ("clean", "depth", "camdata_left", "flow")}
    for d in dirs.values():
        d.mkdir(parents=True)
    K = np.array([[50.0, 0, (width - 1) / 2], [0, 50.0, (height - 1) / 2], [0, 0, 1]])
    w2c = np.hstack([np.eye(3), np.zeros((3, 1))])
    for t in range(frames):
        name = f"frame_{t + 1:04d}"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            dirs["clean"] / f"{name}.png"
        )
        depth = rng.uniform(1, 9, (height, width)).astype("<f4")
        (dirs["depth"] / f"{name}.dpt").write_bytes(struct.pack("<fii", TAG, width, height) + depth.tobytes())
        (dirs["camdata_left"] / f"{name}.cam").write_bytes(
            struct.pack("<f", TAG) + K.astype("<f8").tobytes() + w2c.astype("<f8").tobytes()
        )
        if t < frames - 1:
            flow = rng.normal(size=(height, width, 2)).astype("<f4")
            (dirs["flow"] / f"{name}.flo").write_bytes(
                struct.pack("<fii", TAG, width, height) + flow.tobytes()
            )
    return root


EVAL = ["eval", "--heads", "depth", "--registry", "none", "--num-clips", "1"]


# -- 1. l4p eval --data sintel needs no size option ---------------------------------------------
def test_eval_on_sintel_scores_at_the_native_size_without_a_size_option(tmp_path, capsys):
    root = _sintel_root(tmp_path)
    assert main([*EVAL, "--data", "sintel", "--split", "train", f"root={root}"]) == 0
    out = capsys.readouterr().out
    assert "sintel/train: 1 clips at 6x8 (native size)" in out and "abs_rel" in out
    assert main([*EVAL, "--data", "sintel", "--split", "train", "--size", "16x24", f"root={root}"]) == 0
    assert "1 clips at 16x24, encoder" in capsys.readouterr().out


def test_eval_help_documents_the_dataset_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "dataset options",
        "root=PATH",
        "clip_len=",
        "size=[H,W]",
        "resize_mode=",
        "reverse_time=true",
    ):
        assert text in out, text
    assert "root=/data/sintel num_frames=24" not in out  # the old example no reader accepts


# -- 2. an option a dataset does not take: one line naming it and the accepted ones -----------
def test_a_refused_dataset_option_is_one_line_naming_the_accepted_ones(tmp_path, capsys):
    root = _sintel_root(tmp_path)
    assert main([*EVAL, "--data", "sintel", "--split", "train", f"root={root}", "num_frames=24"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("l4p: error: ") and "\n" not in err and "Traceback" not in err, err
    assert "'sintel'" in err and "['num_frames']" in err and "clip_len" in err and "render_pass" in err
    with pytest.raises(InputError, match="does not take the options"):
        SintelDataset("train", root=root, num_frames=24)  # was a bare TypeError


def test_the_help_examples_options_work(tmp_path, capsys):
    """The epilog's examples with a cheap model: synth4d num_frames=24, Sintel clip_len."""
    assert main([*EVAL, "num_frames=24"]) == 0
    assert "synth4d/test: 1 clips at 64x64" in capsys.readouterr().out
    root = _sintel_root(tmp_path, frames=4)
    assert main([*EVAL, "--data", "sintel", "--split", "train", f"root={root}", "clip_len=2"]) == 0
    assert "1 clips at 6x8" in capsys.readouterr().out


# -- 3. l4p encoder info without building the encoder -------------------------------------------
def _info(capsys, *argv: str) -> dict:
    assert main(["encoder", "info", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _vit_parameters(width, depth, mlp, patch, tubelet, qv_bias=True, final_norm=True) -> int:
    """Parameters of a VideoMAE ViT, counted by hand from its layers."""
    embed = 3 * tubelet * patch * patch * width + width
    attention = 3 * width * width + (2 * width if qv_bias else 0) + width * width + width
    block = 2 * width + attention + 2 * width + (width * mlp + mlp) + (mlp * width + width)
    return embed + depth * block + (2 * width if final_norm else 0)


@pytest.mark.parametrize("preset", ["tiny", "l4p-cpu-small"])
def test_encoder_info_counts_the_parameters_of_the_real_encoder(preset, capsys):
    info = _info(capsys, preset)
    encoder = build_encoder(preset)
    c = encoder.config
    real = sum(p.numel() for p in encoder.parameters())
    assert info["parameters"] == real == _vit_parameters(c.width, c.depth, c.mlp_dim, c.patch_size, c.tubelet)
    assert info["token_grid"] == list(c.token_grid) and info["fingerprint"] is None
    assert _info(capsys, preset, "--fingerprint")["fingerprint"] == load_encoder(preset).fingerprint


def test_encoder_info_vitg14_is_instant(capsys):
    start = time.perf_counter()
    info = _info(capsys, "l4p-vitg14")
    assert time.perf_counter() - start < 10  # building it for real took ~3 minutes
    assert info["parameters"] == _vit_parameters(1408, 40, 6144, 14, 2) == 1_011_610_752
    assert info["token_grid"] == [8, 16, 16] and info["tokens"] == 2048
    assert main(["encoder", "info", "l4p-vitg14"]) == 0
    assert "--fingerprint builds them" in capsys.readouterr().out
