"""load_encoder: HF transformers parity, l4p files, VideoMAEv2 state dicts, strict errors."""

import json

import pytest
import torch

from l4p_framework.encoder import build_encoder, load_encoder, save_encoder
from l4p_framework.errors import WeightsError

transformers = pytest.importorskip("transformers")


def _hf_model(tmp_path, qkv_bias=True, mean_pooling=False):
    config = transformers.VideoMAEConfig(
        image_size=32,
        patch_size=8,
        num_frames=4,
        tubelet_size=2,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        use_mean_pooling=mean_pooling,
        qv_bias=qkv_bias,
        layer_norm_eps=1e-6,
    )
    torch.manual_seed(0)
    model = transformers.VideoMAEModel(config).eval()
    with torch.no_grad():  # non-trivial biases and norms so every mapping is exercised
        for name, p in model.named_parameters():
            if "bias" in name or "layernorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3})
    )
    return model


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_parity_with_transformers(tmp_path, qkv_bias):
    model = _hf_model(tmp_path, qkv_bias)
    encoder = load_encoder(tmp_path, precision="fp32")
    assert encoder.config.mean == (0.5, 0.5, 0.5) and encoder.config.std == (0.25, 0.25, 0.25)
    video = torch.rand(2, 3, 4, 32, 32)
    with torch.no_grad():
        ref = model(pixel_values=((video - 0.5) / 0.25).transpose(1, 2), output_hidden_states=True)
    feats = encoder(video, [0, 1, 2, 3, "final"])
    for layer in range(4):
        err = (feats[layer] - ref.hidden_states[layer]).abs().max().item()
        assert err < 1e-5, (layer, err)
    assert (feats["final"] - ref.last_hidden_state).abs().max().item() < 1e-5


def test_for_pretraining_and_classification_prefixes(tmp_path):
    config = transformers.VideoMAEConfig(
        image_size=32,
        patch_size=8,
        num_frames=4,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        num_labels=3,
    )
    for cls in (transformers.VideoMAEForPreTraining, transformers.VideoMAEForVideoClassification):
        folder = tmp_path / cls.__name__
        model = cls(config).eval()
        model.save_pretrained(folder)
        encoder = load_encoder(folder, precision="fp32")
        video = torch.rand(1, 3, 4, 32, 32)
        pix = (
            (video - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1))
            / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)
        ).transpose(1, 2)
        with torch.no_grad():
            ref = model.videomae(pixel_values=pix, output_hidden_states=True)
        assert (encoder(video, [2])[2] - ref.hidden_states[2]).abs().max() < 1e-5


def test_l4p_file_round_trip_and_fingerprint(tmp_path):
    encoder = build_encoder("tiny", seed=3).freeze()
    path = save_encoder(encoder, tmp_path / "enc.safetensors")
    loaded = load_encoder(path, precision="fp32")  # bf16 where supported by default: compare exactly
    assert loaded.fingerprint == encoder.fingerprint
    video = torch.rand(1, 3, 8, 64, 64)
    assert torch.equal(loaded(video, ["final"])["final"], encoder(video, ["final"])["final"])


def test_corrupt_and_truncated_files(tmp_path):
    path = save_encoder(build_encoder("tiny").freeze(), tmp_path / "enc.safetensors")
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="trunc.safetensors.*corrupt or truncated"):
        load_encoder(tmp_path / "trunc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="junk.safetensors"):
        load_encoder(tmp_path / "junk.safetensors")
    with pytest.raises(WeightsError, match="does not exist"):
        load_encoder(tmp_path / "missing.safetensors")


def test_videomaev2_state_dict_wrappers_and_strictness(tmp_path):
    encoder = build_encoder("tiny", seed=5).freeze()
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state["decoder.blocks.0.norm1.weight"] = torch.ones(3)
    torch.save({"model": state}, tmp_path / "v2.pth")
    loaded = load_encoder(tmp_path / "v2.pth", preset="tiny")
    assert loaded.fingerprint == encoder.fingerprint

    bad = dict(encoder.state_dict())
    bad.pop("blocks.1.attn.q_bias")
    bad["blocks.0.attn.foreign"] = torch.zeros(2)
    bad["blocks.0.mlp.fc1.weight"] = torch.zeros(5, 64)
    torch.save({"module": bad}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as info:
        load_encoder(tmp_path / "bad.pth", preset="tiny")
    msg = str(info.value)
    assert "bad.pth" in msg and "blocks.1.attn.q_bias" in msg and "blocks.0.attn.foreign" in msg
    assert "blocks.0.mlp.fc1.weight" in msg and "(5, 64)" in msg


def test_unknown_preset_suggests():
    from l4p_framework.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'videomae-base'"):
        load_encoder("videomae-bse")
