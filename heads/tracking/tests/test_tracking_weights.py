"""Official layout on the meta device, the key map, and the Fourier matrix being loaded (never redrawn)."""

from __future__ import annotations

import pytest
import torch
from l4p_head_tracking import TrackingConfig, official_key_map, tracking_spec
from l4p_head_tracking.plugin import OFFICIAL_PREFIX

from l4p_framework import WeightsError
from l4p_framework.checkpoints import build_head, load_head, save_head
from l4p_framework.encoder import get_preset
from l4p_framework.specs import EncoderInfo

PE_KEY = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"


def vitg14_info() -> EncoderInfo:
    c = get_preset("l4p-vitg14")
    return EncoderInfo(
        c.name, c.width, c.depth, c.num_heads, c.patch_size, c.tubelet, c.num_frames, c.image_size
    )


def test_official_preset_on_meta_has_the_official_keys_and_parameter_count():
    spec = tracking_spec()
    with torch.device("meta"):
        head = spec.build(vitg14_info(), TrackingConfig(preset="official"))
    sd = head.state_dict()
    official = {OFFICIAL_PREFIX + k: v for k, v in sd.items()}
    official["l4p_model.video_encoder.patch_embed.proj.bias"] = torch.empty(1408, device="meta")
    official[OFFICIAL_PREFIX + "grid_xy"] = torch.empty(2, 224, 224, device="meta")  # non-persistent
    mapped = spec.official_key_map(official)
    assert len(mapped) == 120 and set(mapped) == set(sd)
    assert all(tuple(mapped[k].shape) == tuple(v.shape) for k, v in sd.items())
    assert sum(p.numel() for p in head.parameters()) == 68_124_192
    assert mapped[PE_KEY].shape == (3, 704)
    head.load_state_dict(mapped, strict=True, assign=True)
    assert head.map_size == (16, 64, 64) and head.input_size == (16, 224, 224)
    assert head.prompt_encoder.input_size == (16, 224, 224)
    layer = head.mask_decoder.transformer.layers[0]
    assert layer.cross_attn_token_to_image.q_proj.weight.shape == (704, 1408)
    assert layer.mlp.lin1.weight.shape == (2048, 1408) and layer.self_attn.heads == 8


def test_gaussian_matrix_is_loaded_from_the_state_dict(encoder, tmp_path, clip8):
    spec, config = tracking_spec(), TrackingConfig()
    source = build_head(spec, encoder.info, config)
    sd = {OFFICIAL_PREFIX + k: v.clone() for k, v in source.state_dict().items()}
    modified = torch.randn(sd[OFFICIAL_PREFIX + PE_KEY].shape, generator=torch.Generator().manual_seed(9))
    sd[OFFICIAL_PREFIX + PE_KEY] = modified
    target = build_head(spec, encoder.info, config, seed=1)
    fresh_pe = target.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.clone()
    assert not torch.equal(fresh_pe, modified)
    with torch.no_grad():
        features = encoder(clip8["video"], ["final"])
        before = source(features, clip8)
    target.load_state_dict(spec.official_key_map(sd), strict=True)
    assert torch.equal(target.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix, modified)
    # ... it is what the decoder uses: same weights + same matrix = same outputs, another matrix differs
    with torch.no_grad():
        out = target(features, clip8)
        source.load_state_dict(spec.official_key_map(sd), strict=True)
        same = source(features, clip8)
    torch.testing.assert_close(out["tracks"], same["tracks"])
    assert not torch.allclose(out["tracks"], before["tracks"], atol=1e-3)
    # ... and it survives a head file round trip
    path = tmp_path / "tracking.safetensors"
    save_head(path, target, spec, config, encoder.info)
    loaded, _, _ = load_head(path, spec, encoder.info)
    assert torch.equal(loaded.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix, modified)


def test_key_map_refuses_a_checkpoint_without_the_gaussian_matrix(encoder):
    spec = tracking_spec()
    sd = build_head(spec, encoder.info, TrackingConfig()).state_dict()
    del sd[PE_KEY]
    with pytest.raises(WeightsError, match="never regenerated"):
        spec.official_key_map(sd)
    with pytest.raises(WeightsError, match="unexpected tracking-head key"):
        official_key_map({**sd, "bogus.weight": torch.zeros(1)})
