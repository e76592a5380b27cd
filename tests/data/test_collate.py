"""Tests of batch collation: stacking, query padding with a validity mask, and errors."""

from __future__ import annotations

import pytest
import torch

from l4p_framework import batch as B
from l4p_framework.data.collate import collate
from l4p_framework.data.synth4d import Synth4DConfig, generate_clip
from l4p_framework.errors import InputError


def _sample(n: int, t: int = 3, h: int = 4, w: int = 5, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        B.VIDEO: torch.rand(3, t, h, w, generator=g),
        B.DEPTH: torch.rand(1, t, h, w, generator=g) + 1,
        B.QUERIES: torch.rand(n, 3, generator=g) + 1,
        B.TRACKS: torch.rand(n, t, 2, generator=g) + 1,
        B.VISIBILITY: torch.ones(n, t, dtype=torch.bool),
        B.TRACK_DEPTH: torch.rand(n, t, generator=g) + 1,
        B.TRACKS_3D: torch.rand(n, t, 3, generator=g) + 1,
        "seed": seed,
        "name": f"clip{seed}",
    }


def test_stacks_and_pads_queries():
    samples = [_sample(2, seed=0), _sample(5, seed=1), _sample(0, seed=2)]
    batch = collate(samples)
    assert batch[B.VIDEO].shape == (3, 3, 3, 4, 5)
    assert torch.equal(batch[B.VIDEO][1], samples[1][B.VIDEO])
    assert batch[B.QUERIES].shape == (3, 5, 3)
    assert batch[B.TRACKS].shape == (3, 5, 3, 2)
    assert batch[B.VISIBILITY].shape == (3, 5, 3) and batch[B.VISIBILITY].dtype == torch.bool
    assert batch[B.TRACKS_3D].shape == (3, 5, 3, 3)
    expected_mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(batch[B.QUERY_VALID], expected_mask)
    # Real entries are copied, padding is zero / False.
    assert torch.equal(batch[B.QUERIES][0, :2], samples[0][B.QUERIES])
    assert (batch[B.QUERIES][0, 2:] == 0).all() and (batch[B.TRACKS][2] == 0).all()
    assert not batch[B.VISIBILITY][0, 2:].any() and batch[B.VISIBILITY][0, :2].all()
    assert batch["seed"] == [0, 1, 2] and batch["name"] == ["clip0", "clip1", "clip2"]


def test_equal_query_counts_give_all_true_mask():
    batch = collate([_sample(4, seed=0), _sample(4, seed=1)])
    assert batch[B.QUERY_VALID].shape == (2, 4) and batch[B.QUERY_VALID].all()


def test_own_query_valid_is_kept():
    a, b = _sample(2, seed=0), _sample(3, seed=1)
    a[B.QUERY_VALID] = torch.tensor([True, False])
    b[B.QUERY_VALID] = torch.tensor([True, True, True])
    batch = collate([a, b])
    assert torch.equal(batch[B.QUERY_VALID], torch.tensor([[True, False, False], [True, True, True]]))


def test_mismatched_video_shapes_raise_input_error():
    with pytest.raises(InputError, match=r"'video'.*\(3, 3, 4, 5\).*\(3, 3, 6, 5\)"):
        collate([_sample(2, h=4), _sample(2, h=6)])
    with pytest.raises(InputError, match="keys"):
        s = _sample(2)
        del s[B.DEPTH]
        collate([_sample(2), s])
    with pytest.raises(InputError, match="empty"):
        collate([])


def test_collates_synth4d_clips():
    cfg_a = Synth4DConfig(num_frames=2, height=16, width=16, num_queries=3)
    cfg_b = Synth4DConfig(num_frames=2, height=16, width=16, num_queries=6)
    batch = collate([generate_clip(0, cfg_a), generate_clip(1, cfg_b)])
    assert batch[B.VIDEO].shape == (2, 3, 2, 16, 16)
    assert batch[B.POSES].shape == (2, 2, 4, 4) and batch[B.INTRINSICS].shape == (2, 2, 3, 3)
    assert batch[B.TRACKS].shape == (2, 6, 2, 2)
    assert batch[B.QUERY_VALID].sum(1).tolist() == [3, 6]
    assert batch["seed"] == [0, 1]
