"""Unit checks of the memory rules (§3.6): validity, labels, re-anchoring, carried outputs, history."""

from __future__ import annotations

import torch
from l4p_head_tracking.memory import (
    VISIBILITY_FILL,
    carry_outputs,
    empty_outputs,
    expand_history,
    kept_slices,
    point_labels,
    reanchor,
    store_history,
    valid_frames,
)

from l4p_framework.blocks import TrackingDecoder


def test_valid_frames_start_at_the_query_time():
    t = torch.tensor([[0.0, 5.0, 5.5, 12.0]])
    valid = valid_frames(t, start=4, size=8)  # global frames 4..11
    assert valid[0, 0].all()
    assert valid[0, 1].tolist() == [False, True] + [True] * 6
    assert valid[0, 2].tolist() == [False, False] + [True] * 6
    assert not valid[0, 3].any()


def test_point_labels_follow_the_official_order():
    valid = torch.tensor([[True, False, True, False]])
    original = torch.tensor([[True, True, False, False]])
    assert point_labels(valid, original).tolist() == [[1, 1, 2, 0]]


def _previous(vis: torch.Tensor) -> dict[str, torch.Tensor]:
    b, n, t = vis.shape
    xy = torch.stack([torch.arange(t).float().expand(b, n, t) * 10, torch.ones(b, n, t)], -1)
    return {"tracks": xy, "visibility": vis, "track_depth": torch.ones(b, n, t)}


def test_reanchor_takes_the_most_visible_overlap_frame_only_if_later():
    # previous window started at 0 (8 frames); next starts at 4 -> overlap frames 4..7
    vis = torch.full((1, 3, 8), -1.0)
    vis[0, 0, 6] = 3.0  # point 0: best at frame 6, query at 0 -> re-anchored to (6, 60, 1)
    vis[0, 1, 4] = 3.0  # point 1: best at frame 4, query at 5 -> not later: kept
    vis[0, 2] = VISIBILITY_FILL  # point 2: ties everywhere -> frame 4, query at 2 -> re-anchored
    queries = torch.tensor([[[0.0, 1.0, 2.0], [5.0, 3.0, 4.0], [2.0, 5.0, 6.0]]], requires_grad=True)
    original = torch.ones(1, 3, dtype=torch.bool)
    new, orig = reanchor(queries, original, _previous(vis), 0, 4, 4)
    assert new.tolist() == [[[6.0, 60.0, 1.0], [5.0, 3.0, 4.0], [4.0, 40.0, 1.0]]]
    assert orig.tolist() == [[False, True, False]]
    assert not new.requires_grad
    same, _ = reanchor(queries, original, _previous(vis), 0, 8, 0)  # no overlap: unchanged
    assert torch.equal(same, queries.detach())


def test_carry_outputs_keeps_the_overlap_and_fills_the_rest():
    prev = _previous(torch.arange(8.0).expand(1, 2, 8))
    out = carry_outputs(prev, 0, 6, 8)
    assert out["visibility"][0, 0].tolist() == [6.0, 7.0] + [VISIBILITY_FILL] * 6
    assert out["tracks"][0, 0, :2, 0].tolist() == [60.0, 70.0] and (out["tracks"][0, 0, 2:] == 0).all()
    assert (out["track_depth"][0, 0, 2:] == 0).all()
    fresh = carry_outputs(prev, 0, 8, 8)
    for key, value in empty_outputs(1, 2, 8, "cpu").items():
        assert torch.equal(fresh[key], value)


def test_history_store_and_expand_equal_next_history_for_any_kept_count():
    torch.manual_seed(0)
    dec = TrackingDecoder(32, token_grid=(4, 2, 2), patch=(2, 8, 8), heads=2, mlp_dim=32)
    tokens = torch.randn(2, 3, 16, 32)  # (B, n, L, C)
    grid = dec.token_grid
    mask = dec.processed_video_mask_token.weight
    with torch.no_grad():
        for keep in range(1, 5):
            stored = store_history(dec.processed_video_features_proj, tokens, grid, keep)
            assert stored.shape == (2, 3, keep * 4, 32)
            expected = dec.next_history(tokens, overlap=keep)
            torch.testing.assert_close(expand_history(stored, mask, grid, keep), expected)
            # a longer store (unknown stride) gives the same history
            full = store_history(dec.processed_video_features_proj, tokens, grid, 4)
            torch.testing.assert_close(expand_history(full, mask, grid, keep), expected)
    assert store_history(dec.processed_video_features_proj, tokens, grid, 0) is None
    assert expand_history(None, mask, grid, 2) is None


def test_kept_slices():
    assert kept_slices(4, 2, 4) == 2  # stride 4 of 8 frames, tubelet 2
    assert kept_slices(6, 2, 4) == 3  # stride 2
    assert kept_slices(7, 2, 4) == 3  # end-aligned window: only slices fully inside the overlap
    assert kept_slices(0, 2, 4) == 0 and kept_slices(99, 2, 4) == 4
