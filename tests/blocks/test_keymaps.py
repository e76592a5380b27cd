"""Official checkpoint key maps for the dense and tracking heads."""

from __future__ import annotations

import pytest
import torch

from l4p_framework.blocks import (
    DPT3D,
    TrackingDecoder,
    dpt3d_small,
    l4p_dense_head_to_official,
    l4p_tracking_head_to_official,
    official_dense_head_to_l4p,
    official_tracking_head_to_l4p,
    strip_prefix,
)
from l4p_framework.errors import WeightsError


def small_dense() -> DPT3D:
    return DPT3D(dpt3d_small(out_channels=2), encoder_width=16, token_grid=(2, 2, 2), patch=(2, 4, 4))


def test_dense_round_trip_and_strict_load():
    torch.manual_seed(0)
    head = small_dense()
    full = {
        f"l4p_model.task_heads.flow_2d_backward.{k}": v
        for k, v in l4p_dense_head_to_official(head.state_dict()).items()
    }
    full["l4p_model.task_heads.depth.task_head.dpt.head1.0.bias"] = torch.zeros(1)  # another head: ignored
    official = strip_prefix(full, "l4p_model.task_heads.flow_2d_backward.")
    assert len(official) == 68
    for k in range(1, 5):
        a = official[f"task_head.dpt.scratch.layer_rn.{k - 1}.weight"]
        assert a is official[f"task_head.dpt.scratch.layer{k}_rn.weight"]
    converted = official_dense_head_to_l4p(official)
    assert converted.keys() == head.state_dict().keys()
    fresh = small_dense()
    fresh.load_state_dict(converted, strict=True)
    for k, v in head.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_dense_alias_checks():
    official = l4p_dense_head_to_official(small_dense().state_dict())
    bad = dict(official)
    bad["task_head.dpt.scratch.layer_rn.2.weight"] = bad["task_head.dpt.scratch.layer_rn.2.weight"] + 1
    with pytest.raises(WeightsError, match="layer3_rn.*alias differ"):
        official_dense_head_to_l4p(bad)
    missing = {k: v for k, v in official.items() if k != "task_head.dpt.scratch.layer1_rn.weight"}
    with pytest.raises(WeightsError, match="incomplete"):
        official_dense_head_to_l4p(missing)
    with pytest.raises(WeightsError, match="does not start with"):
        official_dense_head_to_l4p({"dpt.head1.0.bias": torch.zeros(1)})
    # a copy (not the same object) with equal values is accepted
    copied = {k: v.clone() for k, v in official.items()}
    assert len(official_dense_head_to_l4p(copied)) == 64


def test_tracking_maps_are_checked_identities():
    tr = TrackingDecoder(32, token_grid=(2, 2, 2), patch=(2, 4, 4), heads=2, mlp_dim=16)
    sd = tr.state_dict()
    official = l4p_tracking_head_to_official(sd)
    assert official.keys() == sd.keys() and len(official) == 120
    back = official_tracking_head_to_l4p({**official, "grid_xy": torch.zeros(2)})
    assert back.keys() == sd.keys()
    fresh = TrackingDecoder(32, token_grid=(2, 2, 2), patch=(2, 4, 4), heads=2, mlp_dim=16, seed=9)
    fresh.load_state_dict(back, strict=True)
    g = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    assert torch.equal(fresh.state_dict()[g], sd[g])
    with pytest.raises(WeightsError, match="never regenerated"):
        official_tracking_head_to_l4p({k: v for k, v in official.items() if k != g})
    with pytest.raises(WeightsError, match="unexpected"):
        official_tracking_head_to_l4p({**official, "task_head.foo": torch.zeros(1)})
