"""TUM trajectory, intrinsics JSON and PLY writers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from l4p_framework.errors import InputError
from l4p_framework.geometry import (
    load_intrinsics_json,
    load_tum,
    make_intrinsics,
    save_intrinsics_json,
    save_ply,
    save_tum,
)


def test_tum_round_trip(tmp_path, synth):
    poses = synth.smooth_poses(1, 9, seed=31, rot_amp=2.0)[0]
    path = tmp_path / "traj.txt"
    save_tum(path, poses, fps=10.0, precision=12)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#") and len(lines) == 10
    first = [float(v) for v in lines[1].split()]
    assert len(first) == 8 and first[0] == 0.0 and float(lines[2].split()[0]) == pytest.approx(0.1)
    assert first[1:4] == pytest.approx(poses[0, :3, 3].tolist(), abs=1e-12)
    stamps, back = load_tum(path)
    assert stamps.shape == (9,) and torch.allclose(stamps, torch.arange(9, dtype=torch.float64) / 10)
    assert (back - poses).abs().max() < 1e-10
    # Explicit timestamps, float32 poses.
    save_tum(path, poses.float(), timestamps=[1.5 + i for i in range(9)])
    stamps, back = load_tum(path)
    assert stamps[0].item() == 1.5 and (back - poses).abs().max() < 1e-6


def test_tum_bad_files(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("0 1 2 3 0 0 0\n")
    with pytest.raises(InputError):
        load_tum(bad)
    bad.write_text("# only a comment\n")
    with pytest.raises(InputError):
        load_tum(bad)
    with pytest.raises(InputError):
        save_tum(tmp_path / "x.txt", torch.eye(4).expand(3, 4, 4), timestamps=[0.0, 1.0])


def test_intrinsics_json_round_trip(tmp_path):
    K = make_intrinsics(torch.tensor([200.0, 201.0]), 210.0, 112.0, 111.5)
    path = tmp_path / "K.json"
    save_intrinsics_json(path, K, (224, 224))
    k2, size = load_intrinsics_json(path)
    assert size == (224, 224) and torch.allclose(k2, K.double())
    data = json.loads(path.read_text())
    assert data["fx"] == [200.0, 201.0] and data["cy"] == [111.5, 111.5] and "0.5" in data["convention"]


def test_ply_binary_and_ascii(tmp_path):
    h, w = 4, 5
    pts = torch.randn(h, w, 3)
    pts[0, 0, 0] = float("nan")  # dropped
    colors = torch.rand(h, w, 3)
    valid = torch.ones(h, w, dtype=torch.bool)
    valid[1] = False  # drop one row (5 points)
    path = tmp_path / "cloud.ply"
    n = save_ply(path, pts, colors, valid)
    assert n == h * w - 5 - 1
    data = path.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    lines = header.decode().splitlines()
    assert lines[:3] == ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    assert "property uchar red" in lines and "property float z" in lines
    assert len(body) == n * (3 * 4 + 3)  # float32 xyz + uint8 rgb
    rec = np.frombuffer(
        body,
        dtype=np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")]),
    )
    keep = valid.clone()
    keep[0, 0] = False
    assert np.allclose(rec["x"], pts[keep][:, 0].numpy())
    assert np.array_equal(rec["g"], (colors[keep][:, 1] * 255).round().to(torch.uint8).numpy())
    # ascii, no colours
    n2 = save_ply(tmp_path / "a.ply", pts, binary=False)
    text = (tmp_path / "a.ply").read_text().split("end_header\n", 1)
    assert n2 == h * w - 1 and "format ascii 1.0" in text[0] and len(text[1].splitlines()) == n2
    with pytest.raises(InputError):
        save_ply(path, pts, colors[:2])
