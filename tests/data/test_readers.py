"""Registry of the public-format readers and their shared helpers (clips, queries, resizing)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from l4p_framework import batch as K
from l4p_framework.data.readers import _common, reader_specs
from l4p_framework.errors import DataError, InputError
from l4p_framework.specs import DatasetSpec

NAMES = [
    "tapvid",
    "tapvid3d",
    "sintel",
    "kitti-depth",
    "kitti-flow",
    "pointodyssey",
    "davis",
    "tum",
    "kubric",
]
CANONICAL = {v for k, v in vars(K).items() if k.isupper() and isinstance(v, str)}


def test_reader_specs_registered():
    specs = reader_specs()
    assert [s.name for s in specs] == NAMES
    for s in specs:
        assert isinstance(s, DatasetSpec) and s.splits and s.description
        assert K.VIDEO in s.provides and set(s.provides) <= CANONICAL, s.name


@pytest.mark.parametrize("spec", reader_specs(), ids=lambda s: s.name)
def test_build_argument_errors(spec, tmp_path):
    with pytest.raises(InputError, match="root"):
        spec.build(spec.splits[0])
    with pytest.raises(InputError, match="no split"):
        spec.build("nonsense", root=tmp_path)
    with pytest.raises(InputError, match="does not exist|not an existing folder"):
        spec.build(spec.splits[0], root=tmp_path / "missing")
    with pytest.raises(DataError) as e:  # an empty folder is not the documented layout
        spec.build(spec.splits[0], root=tmp_path)
    assert str(tmp_path) in str(e.value)


def test_build_through_spec(tmp_path):
    T, H, W = 4, 6, 8
    ex = {
        "video": np.zeros((T, H, W, 3), np.uint8),
        "points": np.full((2, T, 2), 0.5, np.float32),
        "occluded": np.zeros((2, T), bool),
    }
    (tmp_path / "tapvid_davis.pkl").write_bytes(pickle.dumps({"a": ex}))
    spec = next(s for s in reader_specs() if s.name == "tapvid")
    ds = spec.build("test", root=tmp_path / "tapvid_davis.pkl", size=(12, 12))
    s = ds[0]
    assert set(spec.provides) <= set(s) and s["tracks"][0, 0].tolist() == [6.0, 6.0]
    loader = torch.utils.data.DataLoader(ds, batch_size=1)
    assert next(iter(loader))["video"].shape == (1, 3, T, 12, 12)


def test_clip_windows_and_frame_indices():
    idx = _common.frame_indices(10, start=1, frame_stride=3)
    assert idx.tolist() == [1, 4, 7]
    assert _common.frame_indices(10, frame_stride=3, max_frames=2).tolist() == [0, 3]
    w = _common.clip_windows(np.arange(7), 3, None)
    assert [x.tolist() for x in w] == [[0, 1, 2], [3, 4, 5]]
    assert len(_common.clip_windows(np.arange(7), 3, 1)) == 5
    assert _common.clip_windows(np.arange(2), 3, None) == []
    with pytest.raises(InputError):
        _common.frame_indices(5, frame_stride=0)


def test_query_sampling():
    tracks = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
    vis = np.array([[True, True, False, True], [False, False, True, True], [False] * 4])
    q, keep = _common.queries_first(tracks, vis)
    assert keep.tolist() == [0, 1] and q.tolist() == [[0, 0, 1], [2, 12, 13]]
    q, idx = _common.queries_strided(tracks, vis, 2)
    assert q[:, 0].tolist() == [0, 2] and idx.tolist() == [0, 1]
    out = _common.track_sample(tracks, vis, "strided", query_stride=1)
    assert out["tracks"].shape == (5, 4, 2) and out["queries"].shape == (5, 3)
    with pytest.raises(InputError, match="query_mode"):
        _common.track_sample(tracks, vis, "random")


def test_invert_rigid_and_quaternions():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, 4))
    R = _common.quat_to_matrix(q, "xyzw")
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.tile(np.eye(3), (5, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0)
    np.testing.assert_allclose(_common.quat_to_matrix(q[:, [3, 0, 1, 2]], "wxyz"), R)
    T = np.tile(np.eye(4), (5, 1, 1))
    T[:, :3, :3], T[:, :3, 3] = R, rng.normal(size=(5, 3))
    np.testing.assert_allclose(_common.invert_rigid(T), np.linalg.inv(T), atol=1e-12)


def test_resize_sample_crop_updates_visibility():
    s = {
        K.VIDEO: torch.rand(3, 2, 10, 20),
        K.TRACKS: torch.tensor([[[10.0, 5.0], [1.0, 5.0]], [[2.0, 2.0], [3.0, 3.0]]]),
        K.VISIBILITY: torch.tensor([[True, True], [True, True]]),
        K.QUERIES: torch.tensor([[0.0, 10.0, 5.0], [0.0, 2.0, 2.0]]),  # the second is cropped away
        K.INTRINSICS: torch.eye(3).expand(2, 3, 3),
        K.DEPTH: torch.rand(1, 2, 10, 20),
        K.FLOW: torch.ones(2, 2, 10, 20),
    }
    out = _common.resize_sample(s, (10, 10), "crop")  # keeps x in [5, 15)
    assert out[K.VIDEO].shape == (3, 2, 10, 10) and out[K.DEPTH].shape == (1, 2, 10, 10)
    assert out[K.TRACKS][0, 0].tolist() == [5.0, 5.0] and out[K.VISIBILITY].tolist() == [[True, False]]
    assert out[K.QUERIES].tolist() == [[0.0, 5.0, 5.0]]
    assert out[K.INTRINSICS][0, 0, 2] == -5.0
    assert torch.equal(out[K.FLOW], torch.ones(2, 2, 10, 10))
