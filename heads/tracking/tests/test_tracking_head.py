"""Head contract, shapes, windowed memory, chunking, bidirectional tracking and input errors."""

from __future__ import annotations

import pytest
import torch
from l4p_head_tracking import (
    VISIBILITY_FILL,
    TrackingConfig,
    track_bidirectional,
    tracking_spec,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from l4p_framework import InputError
from l4p_framework.testing import assert_head_contract, fresh_host, tiny_batch


def test_contract(encoder, clip8):
    out = assert_head_contract(tracking_spec(), encoder=encoder, batch=clip8)
    assert out["tracks"].shape == (1, 16, 8, 2)
    # queries sit at their frames: the -10 fill appears exactly before each query's frame
    q_t = clip8["queries"][0, :, 0]
    before = torch.arange(8)[None] < q_t[:, None]
    assert bool((out["visibility"][0][before] == VISIBILITY_FILL).all())
    assert bool((out["visibility"][0][~before] != VISIBILITY_FILL).all())


def test_entry_point_registers_the_head():
    host = fresh_host(entrypoints=True, strict=True)
    spec = host.get_head("tracking")
    assert spec.distribution == "l4p-head-tracking"
    assert [(o.name, o.shape, o.resolved_kind) for o in spec.outputs] == [
        ("tracks", "(B, N, T, 2)", "points"),
        ("visibility", "(B, N, T)", "other"),
        ("queries", "(B, N, 3)", "queries"),
        ("track_depth", "(B, N, T)", "other"),
    ]


def test_shapes_8_frame_clip_and_20_frame_video(model, run, clip8, clip20):
    out8 = run(model, clip8["video"], clip8["queries"])
    assert out8["tracks"].shape == (1, 16, 8, 2)
    assert out8["visibility"].shape == out8["track_depth"].shape == (1, 16, 8)
    out20 = run(model, clip20["video"], clip20["queries"])
    assert out20["tracks"].shape == (1, 24, 20, 2)
    assert out20["visibility"].shape == out20["track_depth"].shape == (1, 24, 20)
    for v in out20.values():
        assert torch.isfinite(v).all()
    # every point is tracked from its query frame to the end of the video
    q_t = clip20["queries"][0, :, 0]
    tracked = torch.arange(20)[None] >= q_t[:, None]
    assert bool((out20["visibility"][0][tracked] != VISIBILITY_FILL).all())
    assert bool((out20["track_depth"][0][tracked] > 0).all())
    # a 5-frame clip is ping-pong padded to one window and cropped back
    out5 = run(model, clip20["video"][:, :, :5], clip20["queries"][:, :3] * torch.tensor([0.0, 1, 1]))
    assert out5["tracks"].shape == (1, 3, 5, 2)


def test_memory_path_equals_single_window_path(model, run, clip8):
    windowed = run(model, clip8["video"], clip8["queries"])
    head = model.heads["tracking"]
    with torch.no_grad():
        single = head(model.encode(clip8["video"]), {"queries": clip8["queries"]})
    for key in ("tracks", "visibility", "track_depth"):
        torch.testing.assert_close(windowed[key], single[key], rtol=0, atol=1e-6)


def test_batch_of_two_equals_two_single_videos(model, run, clip20):
    other = tiny_batch(seed=11, frames=20, queries=24)
    video = torch.cat([clip20["video"], other["video"]])
    queries = torch.cat([clip20["queries"], other["queries"]])
    both = run(model, video, queries)
    for i, one in enumerate((clip20, other)):
        alone = run(model, one["video"], one["queries"])
        for key in ("tracks", "visibility", "track_depth"):
            torch.testing.assert_close(both[key][i : i + 1], alone[key], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride", [2, 4, 6])
def test_history_is_the_overlap_shifted_by_the_stride(make_model, clip20, stride):
    """Window 1's history = proj(window 0's processed video tokens) shifted by stride/tubelet slices."""
    model = make_model(stride=stride, max_queries=1000)
    head = model.heads["tracking"]
    calls = []
    original = head.decode_window

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((args, out))
        return out

    head.decode_window = spy
    try:
        with torch.no_grad():
            model(clip20["video"], queries=clip20["queries"])
    finally:
        del head.decode_window
    (_, first), (second_args, _) = calls[0], calls[1]
    kept = (8 - stride) // 2
    history = second_args[5]
    with torch.no_grad():
        expected = head.next_history(first.video_tokens, overlap=kept)
    assert history is not None and history.shape == expected.shape
    torch.testing.assert_close(history, expected, rtol=1e-5, atol=1e-6)
    # the carried track feature is the projected feature token, label 1 for points valid in window 0
    feats, feat_labels = second_args[3], second_args[4]
    valid0 = clip20["queries"][:, :, 0] <= 7
    torch.testing.assert_close(
        feats[valid0], head.next_prompt_features(first.io_tokens)[valid0], rtol=1e-5, atol=1e-6
    )
    assert torch.equal(feat_labels, valid0.long())
    assert bool((feats[~valid0] == 0).all())
    # window 1 is prompted with the anchors re-anchored in the overlap (label 2), in window time
    from l4p_head_tracking.memory import empty_outputs, reanchor, valid_frames

    with torch.no_grad():
        read = head.read_out(first)
    queries = clip20["queries"]
    valid = valid_frames(queries[..., 0], 0, 8)
    fill = empty_outputs(1, 24, 8, "cpu")
    prev = {k: torch.where(valid[..., None] if k == "tracks" else valid, read[k], fill[k]) for k in fill}
    anchors, original = reanchor(queries, torch.ones(1, 24, dtype=torch.bool), prev, 0, stride, 8 - stride)
    assert bool((~original).any()), "some points should be re-anchored"
    prompted = second_args[1]
    torch.testing.assert_close(prompted[..., 0], anchors[..., 0] - stride + 0.5)
    torch.testing.assert_close(prompted[..., 1:], anchors[..., 1:])
    assert second_args[2].tolist() == torch.where(original, 1, 2).tolist()


def test_stream_of_unknown_length_equals_forward(model, clip20):
    """Without num_frames/next_window the head stores every token slice; results must not change."""
    video, queries = clip20["video"], clip20["queries"]
    with torch.no_grad():
        forward = model(video, queries=queries)["tracking"]
        stream = model.stream((video[:, :, i] for i in range(20)), queries=queries)["tracking"]
    for key in ("tracks", "visibility", "track_depth"):
        torch.testing.assert_close(stream[key], forward[key], rtol=1e-5, atol=1e-5)


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any op produces (a peak-memory proxy)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_thousands_of_queries_run_in_bounded_memory(make_model, encoder):
    """2000 queries: no intermediate tensor is larger than with one chunk of 64 queries, every decoder
    call holds <= max_queries queries, and chunked outputs equal an unchunked run."""
    model = make_model(max_queries=64, out_dim_factor=16)  # a narrower upscaling path: faster
    head = model.heads["tracking"]
    video = tiny_batch(seed=5, frames=8)["video"]
    g = torch.Generator().manual_seed(0)
    queries = torch.cat([torch.zeros(1, 2000, 1), torch.rand(1, 2000, 2, generator=g) * 64], -1)
    with torch.no_grad():
        features = model.encode(video)
    sizes = []
    hook = head.mask_decoder.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    try:
        with torch.no_grad(), LargestTensor() as one_chunk:
            head(features, {"queries": queries[:, :64]})
        with torch.no_grad(), LargestTensor() as many:
            out = head(features, {"queries": queries})
    finally:
        hook.remove()
    assert sizes[0] == 64 and len(sizes) == 1 + 32 and max(sizes) <= 64 and sum(sizes[1:]) == 2000
    assert many.largest <= one_chunk.largest
    assert out["tracks"].shape == (1, 2000, 8, 2)
    # the check can fail: one unchunked call of 256 queries makes 4x larger intermediates
    head.config.max_queries = 256
    try:
        with torch.no_grad(), LargestTensor() as unchunked:
            ref = head(features, {"queries": queries[:, :256]})
    finally:
        head.config.max_queries = 64
    assert unchunked.largest >= 4 * one_chunk.largest
    for key in ("tracks", "visibility", "track_depth"):
        torch.testing.assert_close(out[key][:, :256], ref[key], rtol=1e-5, atol=1e-5)


def test_chunked_windowed_run_equals_unchunked(make_model, run, clip20):
    small = make_model(max_queries=5)
    big = make_model(max_queries=1000)
    sizes = []
    hook = small.heads["tracking"].mask_decoder.register_forward_hook(
        lambda m, args, out: sizes.append(args[0].shape[0])
    )
    try:
        a = run(small, clip20["video"], clip20["queries"])
    finally:
        hook.remove()
    b = run(big, clip20["video"], clip20["queries"])
    assert max(sizes) <= 5 and len(sizes) == 4 * 5  # 4 windows x ceil(24 / 5) chunks
    for key in ("tracks", "visibility", "track_depth"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)


def test_history_beyond_its_ram_budget_goes_to_files_with_equal_outputs(make_model, run, clip20):
    """With history_ram_mb=0 every chunk's history is written to a temporary file between windows
    and read back: the outputs equal the all-in-RAM run exactly, and the files are removed."""
    in_ram = make_model(max_queries=5)
    on_disk = make_model(max_queries=5, history_ram_mb=0.0)
    stores = []
    head = on_disk.heads["tracking"]
    original = head.forward_window

    def spy(features, batch, memory):
        out, memory = original(features, batch, memory)
        stores.append((memory.history.bytes_in_ram(), memory.history.bytes_on_disk(), memory.history))
        return out, memory

    head.forward_window = spy
    try:
        a = run(on_disk, clip20["video"], clip20["queries"])
    finally:
        del head.forward_window
    b = run(in_ram, clip20["video"], clip20["queries"])
    for key in ("tracks", "visibility", "track_depth"):
        assert torch.equal(a[key], b[key])
    assert all(ram == 0 for ram, _, _ in stores)
    assert all(disk > 0 for _, disk, _ in stores[:-1]) and stores[-1][1] == 0  # last window frees
    assert stores[-1][2]._folder is None


def test_query_in_the_middle_is_tracked_both_ways(model, run, clip20):
    queries = clip20["queries"][:, :4].clone()
    queries[0, :, 0] = torch.tensor([0.0, 9.0, 13.0, 19.0])
    forward = run(model, clip20["video"], queries)
    assert bool((forward["visibility"][0, 1, :9] == VISIBILITY_FILL).all())  # forward only
    with torch.no_grad():
        both = track_bidirectional(model, clip20["video"], queries)
    for i, t in enumerate((0, 9, 13, 19)):
        assert bool((both["visibility"][0, i] != VISIBILITY_FILL).all()), f"query at frame {t}"
        assert bool((both["track_depth"][0, i] > 0).all())
        # frames from the query on are the forward pass's
        torch.testing.assert_close(both["tracks"][0, i, t:], forward["tracks"][0, i, t:])
    # frames before come from the time-reversed pass
    with torch.no_grad():
        rev_q = queries[:, 1:2].clone()
        rev_q[..., 0] = 19 - rev_q[..., 0]
        backward = model(clip20["video"].flip(2), queries=rev_q)["tracking"]
    torch.testing.assert_close(both["tracks"][0, 1, :9], backward["tracks"][0, 0].flip(0)[:9])
    assert not torch.equal(both["tracks"][0, 1, :9], forward["tracks"][0, 1, :9])
    # the query frame itself is where the track starts (positions stay in the image)
    assert bool(((both["tracks"] >= 0) & (both["tracks"] <= 64)).all())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda q: q.index_fill_(-1, torch.tensor([0]), 25.0), "outside the video's time range"),
        (lambda q: q.index_fill_(-1, torch.tensor([0]), -1.0), "outside the video's time range"),
        (lambda q: q.index_fill_(-1, torch.tensor([1]), 64.5), "inside the frame"),
        (lambda q: q.index_fill_(-1, torch.tensor([2]), -0.1), "inside the frame"),
        (lambda q: q.index_fill_(-1, torch.tensor([1]), float("nan")), "NaN"),
        (lambda q: q[..., :2], r"\(B=1, N, 3\)"),
    ],
)
def test_bad_queries_raise_clear_errors(model, clip20, edit, message):
    queries = edit(clip20["queries"][:, :3].clone())
    with pytest.raises(InputError, match=message):
        model(clip20["video"], queries=queries)


def test_bad_query_error_names_the_query(model, clip20):
    queries = clip20["queries"][:, :3].clone()
    queries[0, 2, 0] = 20.0
    with pytest.raises(InputError, match=r"query 2 of video 0 is \(t=20.*\[0, 19\].*20 frames"):
        model(clip20["video"], queries=queries)


def test_padded_queries_are_not_checked(model, clip8):
    head = model.heads["tracking"]
    queries = clip8["queries"][:, :3].clone()
    queries[0, 2] = float("nan")
    with torch.no_grad():
        out = head(
            model.encode(clip8["video"]), {"queries": queries, "query_valid": torch.tensor([[1, 1, 0]])}
        )
    assert torch.isfinite(out["tracks"]).all()


def test_empty_query_set_gives_empty_outputs(model, run, clip20):
    out = run(model, clip20["video"], torch.zeros(1, 0, 3))
    assert out["tracks"].shape == (1, 0, 20, 2)
    assert out["visibility"].shape == out["track_depth"].shape == (1, 0, 20)
    assert out["queries"].shape == (1, 0, 3)


def test_default_grid_without_queries(make_model, run, clip8):
    out = run(make_model(default_grid=3), clip8["video"], None)
    assert out["tracks"].shape == (1, 9, 8, 2)
    torch.testing.assert_close(
        out["queries"][0, :3], torch.tensor([[0, 32 / 3, 32 / 3], [0, 32, 32 / 3], [0, 160 / 3, 32 / 3]])
    )
    with pytest.raises(InputError, match="needs query points"):
        run(make_model(default_grid=0), clip8["video"], None)


def test_heatmap_resolution_modes_agree(make_model, clip8):
    """'map' (soft-argmax on the decoder map, rescaled) stays close to 'input' (upsampled)."""
    a, b = make_model(heatmap_resolution="input"), make_model(heatmap_resolution="map")
    with torch.no_grad():
        feats = a.encode(clip8["video"])
        oa = a.heads["tracking"](feats, {"queries": clip8["queries"]})
        ob = b.heads["tracking"](feats, {"queries": clip8["queries"]})
    assert (oa["tracks"] - ob["tracks"]).abs().max() < 1.0  # pixels, at 64 x 64
    torch.testing.assert_close(oa["visibility"], ob["visibility"], rtol=1e-2, atol=1e-2)


def test_spatial_mean_of_upsampled_maps_is_exact():
    import torch.nn.functional as F
    from l4p_head_tracking.head import upsampled_spatial_mean

    maps = torch.randn(2, 3, 5, 7, 9)
    up = F.interpolate(maps, size=(5, 28, 50), mode="trilinear", align_corners=False)
    torch.testing.assert_close(
        upsampled_spatial_mean(maps, (28, 50)), up.mean((-2, -1)), rtol=1e-5, atol=1e-6
    )


def test_config_is_strict():
    with pytest.raises(ValueError):
        TrackingConfig(max_querys=3)


def test_anchored_tracks_pass_through_their_queries(make_model, run, clip20):
    """anchor_to_query: the absolute read-out shifted per point so that the query frame is exact."""
    queries = clip20["queries"].clone()
    queries[0, :4, 0] = torch.tensor([0.0, 5.0, 9.0, 14.0])  # windows of 8 every 4: later windows too
    absolute = run(make_model(), clip20["video"], queries)
    anchored = run(make_model(anchor_to_query=True), clip20["video"], queries)
    frame = queries[0, :, 0].round().long()
    at_query = anchored["tracks"][0, torch.arange(queries.shape[1]), frame]
    torch.testing.assert_close(at_query, queries[0, :, 1:], atol=1e-4, rtol=0)
    assert not torch.allclose(absolute["tracks"][0, torch.arange(queries.shape[1]), frame], queries[0, :, 1:])
    # one window (an 8-frame clip): the anchored track is the absolute one shifted by one offset
    with torch.no_grad():
        short = clip20["video"][:, :, :8]
        q8 = queries[:, :2].clone()  # query frames 0 and 5
        one = make_model()(short, queries=q8)["tracking"]
        one_anchored = make_model(anchor_to_query=True)(short, queries=q8)["tracking"]
    a, b = one["tracks"][0], one_anchored["tracks"][0]
    for i, f in enumerate((0, 5)):  # the same shift at every tracked frame of a point
        shift = b[i, f:] - a[i, f:]
        torch.testing.assert_close(shift, shift[:1].expand_as(shift), atol=1e-4, rtol=0)
        assert float(shift.abs().max()) > 1e-3
    for name in ("visibility", "track_depth"):  # in one window only positions change
        torch.testing.assert_close(one_anchored[name], one[name])


def test_shared_matching_chains_flow_from_each_query(make_model, run, clip20):
    """matching="shared": positions are the shared matching's flow chained from the query (exact at
    the query frame, also through the windowed memory); depth is the decoder's, and so is visibility
    except where the chain fails the round trip (then occluded)."""
    from l4p_framework.blocks.matching import chain_tracks
    from l4p_framework.matching import compute_matches

    queries = clip20["queries"].clone()
    queries[0, :4, 0] = torch.tensor([0.0, 5.0, 9.0, 14.0])
    model = make_model(matching="shared")
    long = run(model, clip20["video"], queries)
    frame = queries[0, :, 0].round().long()
    at_query = long["tracks"][0, torch.arange(queries.shape[1]), frame]
    torch.testing.assert_close(at_query, queries[0, :, 1:], atol=1e-4, rtol=0)

    short, q8 = clip20["video"][:, :, :8], queries[:, :2].clone()  # one window, query frames 0 and 5
    matched = run(model, short, q8)
    plain = run(make_model(), short, q8)
    m = compute_matches(short, model.matching)
    expected, occluded = chain_tracks(
        m.forward, m.backward, q8[..., 1:], q8[..., 0].round(), m.forward_occluded, m.backward_occluded
    )
    for i, f in enumerate((0, 5)):  # tracked frames (before the query: the fill values)
        torch.testing.assert_close(matched["tracks"][0, i, f:], expected[0, i, f:], atol=1e-4, rtol=0)
        hidden = occluded[0, i, f:]
        assert bool((matched["visibility"][0, i, f:][hidden] <= -4).all())
        torch.testing.assert_close(
            matched["visibility"][0, i, f:][~hidden], plain["visibility"][0, i, f:][~hidden]
        )
    assert float((matched["tracks"] - plain["tracks"]).abs().max()) > 0.1
    torch.testing.assert_close(matched["track_depth"], plain["track_depth"])


def test_shared_matching_without_it_in_the_batch_says_what_it_needs(make_model, clip8):
    model = make_model(matching="shared")
    features = model.encode(clip8["video"])
    with pytest.raises(InputError, match=r"tracking head reads the shared frame matching"):
        model.heads["tracking"](features, {"queries": clip8["queries"]})
