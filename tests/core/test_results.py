"""Results on disk: growing .npy files, head layouts -> file layouts, the loader and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from l4p_framework.errors import InputError, L4PError
from l4p_framework.results import (
    FORMAT,
    HEADER_BYTES,
    FrameReader,
    NpyAppender,
    ResultsWriter,
    file_layout,
    load_results,
    to_file_arrays,
)
from l4p_framework.specs import HeadSpec, OutputSpec


def test_a_growing_npy_file_is_a_standard_array_of_every_appended_frame(tmp_path):
    path = tmp_path / "x.npy"
    writer = NpyAppender(path, (3, 5), np.float16)
    chunks = [np.random.default_rng(i).random((n, 3, 5)) for i, n in enumerate((4, 1, 7))]
    for chunk in chunks:
        writer.append(chunk)
    writer.close()
    loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    assert loaded.shape == (12, 3, 5) and loaded.dtype == np.float16 and loaded.offset == HEADER_BYTES
    np.testing.assert_array_equal(loaded, np.concatenate(chunks).astype(np.float16))
    with pytest.raises(InputError, match=r"\(3, 4\) do not match the first ones \(3, 5\)"):
        NpyAppender(tmp_path / "y.npy", (3, 5), np.float32).append(np.zeros((1, 3, 4)))


@pytest.mark.parametrize(
    "shape, value_shape, layout, file_shape",
    [
        ("(B, 1, T, H, W)", (1, 1, 5, 3, 4), "T H W", (5, 3, 4)),
        ("(B, 2, T, H, W)", (1, 2, 5, 3, 4), "T H W C", (5, 3, 4, 2)),
        ("(B, N, T, 2)", (1, 7, 5, 2), "T N 2", (5, 7, 2)),
        ("(B, N, T)", (1, 7, 5), "T N", (5, 7)),
        ("(B, N, 3)", (1, 7, 3), "N 3", (7, 3)),
        ("(B, T, 4, 4)", (1, 5, 4, 4), "T 4 4", (5, 4, 4)),
    ],
)
def test_file_layouts_put_time_first_and_channels_last(shape, value_shape, layout, file_shape):
    value = torch.arange(float(np.prod(value_shape))).reshape(value_shape)
    spec = OutputSpec("x", shape, "")
    assert file_layout(spec, value)[1] == layout
    array, written_layout = to_file_arrays(spec, value)["x"]
    assert array.shape == file_shape and written_layout == layout
    if layout == "T H W C":  # frame 2, pixel (1, 3), channel 1
        assert array[2, 1, 3, 1] == value[0, 1, 2, 1, 3]
    if layout == "T N 2":  # frame 4, point 6
        assert array[4, 6, 1] == value[0, 6, 4, 1]


def test_logits_become_probabilities_dense_in_8_bits_and_sparse_with_the_raw_logit():
    logits = torch.tensor([-100.0, -1.0, 0.0, 2.0]).reshape(1, 1, 4, 1, 1)
    dense = to_file_arrays(OutputSpec("m", "(B, 1, T, H, W)", "", values="logit"), logits)
    assert dense["m"][0].dtype == np.uint8 and dense["m"][0].ravel().tolist() == [0, 69, 128, 225]
    sparse = to_file_arrays(OutputSpec("v", "(B, N, T)", "", values="logit"), logits.reshape(1, 1, 4))
    np.testing.assert_allclose(sparse["v"][0].ravel(), torch.sigmoid(logits).ravel().numpy(), atol=1e-7)
    np.testing.assert_array_equal(sparse["v_logit"][0].ravel(), logits.ravel().numpy())


def _spec(*outputs: OutputSpec) -> HeadSpec:
    return HeadSpec(
        name="h",
        version="0",
        config_model=None,
        layers=lambda info, config: ["final"],
        build=None,
        loss=None,
        metrics=None,
        targets=(),
        outputs=outputs,
        stitcher=None,
    )


def test_undefined_frames_are_nan_in_streamed_chunks_and_whole_outputs(tmp_path):
    spec = _spec(
        OutputSpec("flow", "(B, 2, T, H, W)", "", kind="flow", undefined="first frame"),
        OutputSpec("tracks", "(B, N, T, 2)", "", kind="points", undefined="before query"),
        OutputSpec("queries", "(B, N, 3)", "", kind="queries"),
    )
    writer = ResultsWriter(tmp_path, {"h": spec}, (2, 3), fps=None)
    writer.add("h", {"flow": torch.ones(1, 2, 3, 2, 3)}, first_frame=0)
    writer.add("h", {"flow": torch.ones(1, 2, 2, 2, 3)}, first_frame=3)  # frame 3: defined
    queries = torch.tensor([[[0.0, 1, 1], [2.0, 1, 1]]])
    writer.add("h", {"tracks": torch.ones(1, 2, 3, 2)}, first_frame=0)  # streamed, then the rest
    writer.add("h", {"tracks": torch.ones(1, 2, 2, 2)}, first_frame=3)
    writer.add("h", {"queries": queries})
    meta = writer.close()
    results = load_results(tmp_path)
    flow = np.asarray(results["h/flow"], dtype=np.float32)
    assert flow.shape == (5, 2, 3, 2) and np.isnan(flow[0]).all() and np.isfinite(flow[1:]).all()
    tracks = results["h/tracks"]
    assert (
        np.isfinite(tracks[:, 0]).all() and np.isnan(tracks[:2, 1]).all() and np.isfinite(tracks[2:, 1]).all()
    )
    assert meta["arrays"]["h/tracks"]["undefined"] == "before query" and results.size == (2, 3)
    assert json.loads((tmp_path / "meta.json").read_text())["arrays"]["h/flow"]["shape"] == [5, 2, 3, 2]


def test_the_loader_refuses_what_is_not_an_l4p_results_folder_and_never_unpickles(tmp_path):
    with pytest.raises(InputError, match="has no meta.json"):
        load_results(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "other/9", "arrays": {}}))
    with pytest.raises(InputError, match="'other/9' is not 'l4p-results/1'"):
        load_results(tmp_path)
    meta = {"format": FORMAT, "size": [2, 2], "arrays": {"h/x": {"file": "h/x.npy"}}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "h").mkdir()
    np.save(tmp_path / "h" / "x.npy", np.array([{"boom": 1}], dtype=object), allow_pickle=True)
    results = load_results(tmp_path)
    with pytest.raises(L4PError, match="cannot read .*x.npy"):
        results["h/x"]
    with pytest.raises(KeyError, match="'h/y' is not in"):
        results["h/y"]


def test_unbounded_maps_stay_float32_and_bounded_ones_may_be_float16():
    """Relative depth can exceed float16's 65504 (it would become inf); flow/normals opt in to float16."""
    value = torch.full((1, 1, 2, 2, 2), 1e6)
    depth, _ = to_file_arrays(OutputSpec("depth", "(B, 1, T, H, W)", ""), value)["depth"]
    assert depth.dtype == np.float32 and np.all(depth == 1e6)
    flow, _ = to_file_arrays(OutputSpec("flow", "(B, 1, T, H, W)", "", export_dtype="float16"), value / 1e4)[
        "flow"
    ]
    assert flow.dtype == np.float16 and np.all(flow == 100)


def test_frame_readers_read_what_memmaps_read_one_frame_at_a_time(tmp_path):
    array = np.random.default_rng(0).random((5, 4, 3, 2)).astype(np.float16)
    np.save(tmp_path / "x.npy", array)
    reader = FrameReader(tmp_path / "x.npy")
    assert (
        reader.shape == array.shape and reader.dtype == np.float16 and reader.ndim == 4 and len(reader) == 5
    )
    np.testing.assert_array_equal(reader[3], array[3])
    np.testing.assert_array_equal(reader[-1], array[-1])
    np.testing.assert_array_equal(reader[2, ::2, 1:], array[2, ::2, 1:])
    np.testing.assert_array_equal(np.asarray(reader), array)
    np.testing.assert_array_equal(reader[1:3], array[1:3])
    with pytest.raises(IndexError, match="frame 5 of x.npy"):
        reader[5]
