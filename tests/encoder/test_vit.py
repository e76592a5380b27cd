"""Encoder architecture, position table, frozen behaviour, the official l4p-vitg14 key table."""

import numpy as np
import pytest
import torch

from l4p_framework.encoder import PRESETS, VideoEncoder, build_encoder, load_encoder, sinusoid_table
from l4p_framework.errors import InputError


def test_position_table_formula_bit_exact():
    table = sinusoid_table(2048, 1408)
    assert table.shape == (1, 2048, 1408) and table.dtype == torch.float32
    p, j = 1234, 777  # odd channel -> cos, pair index floor(777/2) = 388
    expected = np.float32(np.cos(np.float64(p) / np.power(10000, 2 * 388 / 1408)))
    assert table[0, p, j].item() == expected
    expected_sin = np.float32(np.sin(np.float64(p) / np.power(10000, 2 * 388 / 1408)))
    assert table[0, p, 776].item() == expected_sin
    assert torch.equal(table[0, 0, 0::2], torch.zeros(704)) and torch.equal(
        table[0, 0, 1::2], torch.ones(704)
    )


def test_vitg14_matches_official_key_table():
    with torch.device("meta"):
        encoder = VideoEncoder(PRESETS["l4p-vitg14"])
    state = encoder.state_dict()
    assert len(state) == 524
    assert sum(v.numel() for v in state.values()) == 1_011_610_752
    expected = {
        "patch_embed.proj.weight": (1408, 3, 2, 14, 14),
        "patch_embed.proj.bias": (1408,),
        "blocks.39.attn.qkv.weight": (4224, 1408),
        "blocks.0.attn.q_bias": (1408,),
        "blocks.0.attn.v_bias": (1408,),
        "blocks.17.attn.proj.weight": (1408, 1408),
        "blocks.3.mlp.fc1.weight": (6144, 1408),
        "blocks.3.mlp.fc2.weight": (1408, 6144),
        "blocks.39.norm2.bias": (1408,),
        "norm.weight": (1408,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert "blocks.0.attn.qkv.bias" not in state and not any("pos_embed" in k or "head" in k for k in state)
    per_block = {k.split(".", 2)[2] for k in state if k.startswith("blocks.0.")}
    assert per_block == {
        "norm1.weight",
        "norm1.bias",
        "attn.q_bias",
        "attn.v_bias",
        "attn.qkv.weight",
        "attn.proj.weight",
        "attn.proj.bias",
        "norm2.weight",
        "norm2.bias",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    }


@pytest.mark.parametrize("bias", ["qv", "qkv", "none"])
def test_bias_modes_and_layers(bias):
    config = PRESETS["tiny"].model_copy(update={"qkv_bias": bias})
    encoder = build_encoder(config, seed=1).freeze()
    keys = encoder.state_dict().keys()
    assert ("blocks.0.attn.q_bias" in keys) == (bias == "qv")
    assert ("blocks.0.attn.qkv.bias" in keys) == (bias == "qkv")
    video = torch.rand(2, 3, 8, 64, 64)
    feats = encoder(video, [0, 2, "final"])
    assert list(feats.tokens) == [0, 2, "final"] and feats.grid_size == (4, 8, 8)
    assert feats[2].shape == (2, 256, 64) and feats.grid(2).shape == (2, 64, 4, 8, 8)
    # "final" is the LayerNorm of block 4's output, layer 2 is un-normalised block 2 output
    full = encoder(video, [4])
    ln = torch.nn.functional.layer_norm(full[4], (64,), encoder.norm.weight, encoder.norm.bias, 1e-6)
    torch.testing.assert_close(feats["final"], ln)
    assert feats[2].std(-1).mean() > 0 and not torch.allclose(feats[2], full[4])


def test_stops_after_deepest_requested_block():
    encoder = load_encoder("tiny")
    calls = []
    for i, block in enumerate(encoder.blocks):
        block.register_forward_hook(lambda *a, i=i: calls.append(i))
    encoder(torch.rand(1, 3, 8, 64, 64), [1, 2])
    assert calls == [0, 1]


def test_frozen_by_construction():
    encoder = load_encoder("tiny")
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training
    video = torch.rand(1, 3, 8, 64, 64, requires_grad=True)
    assert not encoder(video, ["final"])["final"].requires_grad
    fp = encoder.fingerprint
    assert (
        len(fp) == 64 and fp == load_encoder("tiny").fingerprint != load_encoder("tiny", seed=1).fingerprint
    )


@pytest.mark.parametrize(
    "shape, message",
    [
        ((3, 8, 64, 64), "5 dims"),
        ((1, 4, 8, 64, 64), "3 colour channels"),
        ((1, 3, 1, 64, 64), "tubelet"),
        ((1, 3, 7, 64, 64), "tubelet"),
        ((1, 3, 8, 60, 64), "patches"),
    ],
)
def test_bad_video_is_refused(shape, message):
    encoder = load_encoder("tiny")
    with pytest.raises(InputError, match=message):
        encoder(torch.rand(shape), ["final"])


def test_nan_video_and_bad_layer_refused():
    encoder = load_encoder("tiny")
    video = torch.rand(1, 3, 8, 64, 64)
    video[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        encoder(video)
    with pytest.raises(InputError, match="0..4"):
        encoder(torch.rand(1, 3, 8, 64, 64), [9])


def test_other_token_counts_use_same_formula():
    encoder = load_encoder("tiny")
    feats = encoder(torch.rand(1, 3, 4, 32, 48), [0])  # 2x4x6 tokens
    assert feats[0].shape == (1, 48, 64) and feats.grid_size == (2, 4, 6)


def test_bf16_inference_path_close_to_float32():
    reference = load_encoder("tiny", precision="fp32")
    fast = load_encoder("tiny", precision="bf16")
    assert fast.blocks[0].attn.qkv.weight.dtype == torch.bfloat16  # weights kept in bf16, not re-cast
    assert fast.fingerprint == reference.fingerprint  # the fingerprint is of the float32 weights
    video = torch.rand(1, 3, 8, 64, 64)
    ref, out = reference(video, ["final"])["final"], fast(video, ["final"])["final"]
    assert out.dtype == torch.float32
    rel = ((out - ref).norm() / ref.norm()).item()
    assert 0 < rel < 2e-2


def test_the_128_pixel_preset_keeps_the_small_presets_token_count_and_cost():
    """l4p-cpu-128 reads a 128x128 window in 16x16 patches: the 512 tokens and the transformer of
    l4p-cpu-small (only the patch embedding grows: 2x16x16x3 inputs per token instead of 2x8x8x3)."""
    small, wide = PRESETS["l4p-cpu-small"], PRESETS["l4p-cpu-128"]
    assert wide.image_size == (128, 128) and wide.token_grid == small.token_grid == (8, 8, 8)
    encoder = build_encoder("l4p-cpu-128")

    def block_params(e: VideoEncoder) -> int:
        return sum(p.numel() for n, p in e.named_parameters() if not n.startswith("patch"))

    assert block_params(encoder) == block_params(build_encoder("l4p-cpu-small"))
    features = encoder(torch.rand(1, 3, 16, 128, 128), [6])
    assert features.grid_size == (8, 8, 8) and features.patch == (2, 16, 16)
    assert features.tokens[6].shape == (1, 512, 192)
