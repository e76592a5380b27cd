"""`l4p convert-official`: an official-layout Lightning checkpoint -> l4p files + registry (issue 21).

The reduced checkpoints here carry every official key name (l4p-model.md §5) with small widths: the
`tiny` encoder (4 blocks, width 64) and heads of matching reduced sizes. The full-size layout is
checked on the meta device from the spec's tables (916 keys, no memory used).
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from l4p_framework.blocks import l4p_tracking_head_to_official
from l4p_framework.blocks.dense_head import dense_head_to_official
from l4p_framework.checkpoints import build_head
from l4p_framework.cli.main import main
from l4p_framework.compose import L4P
from l4p_framework.encoder import build_encoder
from l4p_framework.encoder.config import PRESETS
from l4p_framework.encoder.vit import VideoEncoder
from l4p_framework.errors import ConfigError, WeightsError
from l4p_framework.io import sha256_file
from l4p_framework.official import (
    CONVERTER_VERSION,
    ENCODER_PREFIX,
    OFFICIAL_HEADS,
    OFFICIAL_KEY_COUNT,
    convert_official,
    official_encoder_state,
    official_prefix,
    plan_conversion,
)
from l4p_framework.plugins import get_plugin_host

for _plugin in ("l4p_head_depth", "l4p_head_flow", "l4p_head_motion", "l4p_head_pose", "l4p_head_tracking"):
    pytest.importorskip(_plugin)

# -- the official key layout, from the spec's tables (l4p-model.md §5.1-5.3) ---------------------------------


def spec_encoder_shapes(width=1408, depth=40, mlp=6144, patch=14, tubelet=2) -> dict[str, tuple]:
    t: dict[str, tuple] = {
        "patch_embed.proj.weight": (width, 3, tubelet, patch, patch),
        "patch_embed.proj.bias": (width,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        for name in (
            "norm1.weight",
            "norm1.bias",
            "attn.q_bias",
            "attn.v_bias",
            "norm2.weight",
            "norm2.bias",
        ):
            t[b + name] = (width,)
        t[b + "attn.qkv.weight"] = (3 * width, width)
        t[b + "attn.proj.weight"], t[b + "attn.proj.bias"] = (width, width), (width,)
        t[b + "mlp.fc1.weight"], t[b + "mlp.fc1.bias"] = (mlp, width), (mlp,)
        t[b + "mlp.fc2.weight"], t[b + "mlp.fc2.bias"] = (width, mlp), (width,)
    t["norm.weight"], t["norm.bias"] = (width,), (width,)
    return {ENCODER_PREFIX + k: v for k, v in t.items()}


def spec_dense_shapes(
    module: str, width=1408, dims=(256, 512, 1024, 1024), feature=256, last=128
) -> dict[str, tuple]:
    rays = module == "camray"
    channels = {"depth": 1, "dyn_mask": 1, "flow_2d_backward": 2, "camray": 6}[module]
    up = ((2, 1, 1), (2, 1, 1)) if rays else ((2, 4, 4), (2, 2, 2))
    t: dict[str, tuple] = {}
    for i, d in enumerate(dims):
        t[f"act_postprocess.{i}.0.weight"], t[f"act_postprocess.{i}.0.bias"] = (d, width, 1, 1, 1), (d,)
    for i in (0, 1):
        t[f"act_postprocess.{i}.1.weight"] = (dims[i], dims[i], *up[i])
        t[f"act_postprocess.{i}.1.bias"] = (dims[i],)
    t["act_postprocess.3.1.weight"], t["act_postprocess.3.1.bias"] = (dims[3], dims[3], 3, 3, 3), (dims[3],)
    for k in range(1, 5):
        rn = (feature, dims[k - 1], 3, 3, 3)
        t[f"scratch.layer{k}_rn.weight"] = t[f"scratch.layer_rn.{k - 1}.weight"] = rn
        t[f"scratch.refinenet{k}.out_conv.weight"] = (feature, feature, 1, 1, 1)
        t[f"scratch.refinenet{k}.out_conv.bias"] = (feature,)
        for unit in (1, 2):
            for conv in (1, 2):
                name = f"scratch.refinenet{k}.resConfUnit{unit}.conv{conv}"
                t[f"{name}.weight"], t[f"{name}.bias"] = (feature, feature, 3, 3, 3), (feature,)
    t["head1.0.weight"], t["head1.0.bias"] = (last, feature, 3, 3, 3), (last,)
    t["head2.0.weight"], t["head2.0.bias"] = (last, last, 3, 3, 3), (last,)
    t["head2.2.weight"], t["head2.2.bias"] = (channels, last, 1, 1, 1), (channels,)
    return {official_prefix(module) + "task_head.dpt." + k: v for k, v in t.items()}


def spec_tracking_shapes(width=1408, mlp=2048, depth=2, rate=2, factor=8) -> dict[str, tuple]:
    inner, mid, up = width // rate, 2 * width // factor, width // factor
    t: dict[str, tuple] = {"prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (3, width // 2)}
    for name in (
        "point_embeddings.0",
        "point_embeddings.1",
        "prompt_feature_embeddings.0",
        "prompt_feature_embeddings.1",
        "not_a_point_embed",
        "no_mask_embed",
    ):
        t[f"prompt_encoder.{name}.weight"] = (1, width)

    def attention(prefix: str, dim: int) -> None:
        for p in ("q", "k", "v"):
            t[f"{prefix}.{p}_proj.weight"], t[f"{prefix}.{p}_proj.bias"] = (dim, width), (dim,)
        t[f"{prefix}.out_proj.weight"], t[f"{prefix}.out_proj.bias"] = (width, dim), (width,)

    tr = "mask_decoder.transformer."
    for i in range(depth):
        layer = f"{tr}layers.{i}."
        attention(layer + "self_attn", width)
        attention(layer + "cross_attn_token_to_image", inner)
        attention(layer + "cross_attn_image_to_token", inner)
        for n in range(1, 5):
            t[f"{layer}norm{n}.weight"], t[f"{layer}norm{n}.bias"] = (width,), (width,)
        t[layer + "mlp.lin1.weight"], t[layer + "mlp.lin1.bias"] = (mlp, width), (mlp,)
        t[layer + "mlp.lin2.weight"], t[layer + "mlp.lin2.bias"] = (width, mlp), (width,)
    attention(tr + "final_attn_token_to_image", inner)
    t[tr + "norm_final_attn.weight"], t[tr + "norm_final_attn.bias"] = (width,), (width,)
    t["mask_decoder.iou_token.weight"], t["mask_decoder.mask_tokens.weight"] = (1, width), (3, width)
    md = "mask_decoder.output_upscaling."
    t[md + "0.weight"], t[md + "0.bias"] = (width, mid, 2, 2, 2), (mid,)
    t[md + "1.weight"], t[md + "1.bias"] = (mid,), (mid,)
    t[md + "3.weight"], t[md + "3.bias"] = (mid, up, 1, 2, 2), (up,)
    for j in range(3):
        h = f"mask_decoder.output_hypernetworks_mlps.{j}.layers."
        for n in (0, 1):
            t[f"{h}{n}.weight"], t[f"{h}{n}.bias"] = (width, width), (width,)
        t[f"{h}2.weight"], t[f"{h}2.bias"] = (up, width), (up,)
    t["prompt_feature_linear_layer.weight"], t["prompt_feature_linear_layer.bias"] = (width, width), (width,)
    t["processed_video_mask_token.weight"] = (1, width)
    t["processed_video_features_proj.weight"] = (width, width)
    t["processed_video_features_proj.bias"] = (width,)
    return {official_prefix("track_2d") + k: v for k, v in t.items()}


def spec_official_shapes(**encoder) -> dict[str, tuple]:
    shapes = spec_encoder_shapes(**encoder)
    for module in ("flow_2d_backward", "depth", "dyn_mask", "camray"):
        shapes.update(spec_dense_shapes(module))
    shapes.update(spec_tracking_shapes())
    return shapes


def test_full_size_layout_on_meta_maps_every_key_and_fills_every_parameter():
    shapes = spec_official_shapes()
    assert len(shapes) == OFFICIAL_KEY_COUNT == 916
    originals = {k: torch.empty(v, device="meta") for k, v in shapes.items() if "scratch.layer_rn." not in k}

    def tensor(key: str) -> torch.Tensor:
        """An alias is the same tensor object as its original, as in the released file."""
        m = re.search(r"scratch\.layer_rn\.(\d)\.", key)
        return originals[key.replace(m[0], f"scratch.layer{int(m[1]) + 1}_rn.")] if m else originals[key]

    state = {k: tensor(k) for k in shapes}
    plan = plan_conversion(state)  # the l4p-vitg14 preset is inferred from the shapes
    assert plan.encoder_config.name == "l4p-vitg14"
    assert len(plan.encoder_state) == 524
    assert {n: len(h.state) for n, h in plan.heads.items()} == {
        "depth": 64,
        "flow": 64,
        "motion": 64,
        "pose": 64,
        "tracking": 120,
    }
    # spec §5: 1,419,580,330 unique parameters, plus the tracking head's persistent Fourier buffer (3 x 704)
    assert plan.parameter_count() == 1_419_580_330 + 3 * 704
    for name, head in plan.heads.items():  # the released sizes need no width overrides
        assert head.params["preset"] == "official"
        assert not {"layer_dims", "feature_dim", "last_dim", "mlp_dim"} & set(head.params), name
    assert plan.heads["tracking"].config.depth == 2 and plan.heads["tracking"].config.out_dim_factor == 8
    # every official tensor object ends up in the plan (aliases: their originals)
    used = {id(v) for v in plan.encoder_state.values()} | {
        id(v) for h in plan.heads.values() for v in h.state.values()
    }
    assert all(id(v) in used for v in state.values())


# -- a reduced-width checkpoint with every official key name ---------------------------------------------

ENCODER_PRESET = "tiny"  # 4 blocks, width 64, 8 frames of 64 x 64
DENSE = {"preset": "official", "layer_dims": (8, 16, 24, 24), "feature_dim": 16, "last_dim": 8}
HEAD_CONFIGS = {
    "depth": DENSE,
    "flow": DENSE,
    "motion": DENSE,
    "pose": {"preset": "official", "layer_dims": (8, 8, 16, 16), "feature_dim": 8, "last_dim": 8},
    "tracking": {"preset": "official", "mlp_dim": 32, "out_dim_factor": 4},
}


class HyperParametersOnlyInThisTest:
    """A class that exists only in this test: weights_only does not admit it."""

    def __init__(self) -> None:
        self.lr = 1e-4
        self.tasks = ["depth", "flow"]


class WritesAFile:
    """A payload that writes a file when unpickled by a plain pickle.load (it must never run)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


class RunsAShell:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return module


@pytest.fixture(scope="module")
def reduced():
    """(official state dict, l4p modules it was made from, head configs)."""
    host = get_plugin_host()
    encoder = build_encoder(ENCODER_PRESET, seed=3)
    info = VideoEncoder(PRESETS[ENCODER_PRESET]).info
    state: OrderedDict[str, torch.Tensor] = OrderedDict(
        (ENCODER_PREFIX + k, v) for k, v in encoder.state_dict().items()
    )
    configs = {}
    for module, name in OFFICIAL_HEADS.items():
        spec = host.get_head(name)
        config = spec.config_model.model_validate(HEAD_CONFIGS[name])
        head = _randomize(build_head(spec, info, config, seed=1), seed=len(name))
        sd = head.state_dict()
        official = l4p_tracking_head_to_official(sd) if name == "tracking" else dense_head_to_official(sd)
        state.update((official_prefix(module) + k, v) for k, v in official.items())
        configs[name] = config
    return state, configs


def _names(shapes: dict) -> set[str]:
    return set(shapes)


def test_reduced_checkpoint_has_exactly_the_official_key_names(reduced):
    state, _ = reduced
    c = PRESETS[ENCODER_PRESET]
    expected = _names(spec_encoder_shapes(c.width, c.depth, c.mlp_dim, c.patch_size, c.tubelet))
    for module in ("flow_2d_backward", "depth", "dyn_mask", "camray"):
        expected |= _names(spec_dense_shapes(module))
    expected |= _names(spec_tracking_shapes())
    assert set(state) == expected
    assert len(state) == OFFICIAL_KEY_COUNT - 13 * (40 - c.depth)  # 13 keys per encoder block


def lightning_checkpoint(state: dict, hyper_parameters: object = None) -> dict:
    """A checkpoint dict with every top-level entry a Lightning checkpoint has."""
    return {
        "epoch": 7,
        "global_step": 12345,
        "pytorch-lightning_version": "2.1.3",
        "state_dict": OrderedDict(state),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 8, "completed": 7}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": torch.tensor(0.25)}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}],
        "lr_schedulers": [{"last_epoch": 7, "base_lrs": [1e-4]}],
        "hparams_name": "kwargs",
        "hyper_parameters": {"config": HyperParametersOnlyInThisTest(), "extra": hyper_parameters},
    }


def _reference_model(state: dict, configs: dict, stride: int, profile: str = "l4p") -> L4P:
    """The l4p model loaded straight from the official state dict through the key maps."""
    host = get_plugin_host()
    encoder = VideoEncoder(PRESETS[ENCODER_PRESET])
    encoder.load_state_dict(official_encoder_state(state), strict=True)
    model = L4P(encoder, window_stride=stride, profile=profile)
    for name, config in configs.items():
        spec = host.get_head(name)
        head = build_head(spec, model.encoder.info, config, seed=99)
        head.load_state_dict(spec.official_key_map(state), strict=True)
        model.add_head(spec, config, module=head)
    return model.eval()


def test_convert_with_the_cli_and_run_all_five_heads(reduced, tmp_path, capsys):
    state, configs = reduced
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "l4p_official.ckpt"
    torch.save(lightning_checkpoint(state, hyper_parameters=WritesAFile(marker)), ckpt)
    out = tmp_path / "converted"
    code = main(["convert-official", str(ckpt), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert not marker.exists()  # the payload in hyper_parameters stayed inert
    assert sorted(p.name for p in out.iterdir()) == [
        "depth.safetensors",
        "encoder.safetensors",
        "flow.safetensors",
        "motion.safetensors",
        "pose.safetensors",
        "registry.yaml",
        "tracking.safetensors",
    ]
    digest = sha256_file(ckpt)
    for name in ("encoder", *configs):
        with safe_open(str(out / f"{name}.safetensors"), framework="pt") as f:
            meta = f.metadata()
        assert meta["source"] == ckpt.name and meta["source_sha256"] == digest
        assert meta["converter_version"] == CONVERTER_VERSION and meta["dtype"] == "float32"

    converted = L4P.from_registry(out / "registry.yaml", overrides=["encoder.precision=fp32"]).eval()
    assert converted.window_stride == 4
    assert converted.profile == "official"  # the converted registry says `profile: official`
    reference = _reference_model(state, configs, converted.window_stride, profile="official")
    for name in configs:  # the registry reproduces the heads' configs (with the profile's overrides)
        assert converted.configs[name] == reference.configs[name], name
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(1, 3, 24, 64, 64, generator=gen)
    queries = torch.tensor([[[0.0, 10.0, 12.0], [5.0, 40.0, 30.0], [11.0, 33.0, 50.0]]])
    with torch.no_grad():
        got = converted(video, queries=queries)
        want = reference(video, queries=queries)
    assert set(got) == set(want) == set(configs)
    for name in configs:
        assert set(got[name]) == set(want[name]), name
        for key, value in want[name].items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(got[name][key], value, equal_nan=True, msg=f"{name}/{key}")
    assert got["depth"]["depth"].shape == (1, 1, 24, 64, 64)
    assert got["tracking"]["tracks"].shape == (1, 3, 24, 2)

    assert main(["registry", "validate", "--deep", "--registry", str(out / "registry.yaml")]) == 0


def test_bfloat16_files_load_with_their_fingerprint(reduced, tmp_path):
    state, configs = reduced
    ckpt = tmp_path / "l4p.ckpt"
    torch.save(lightning_checkpoint(state), ckpt)
    registry = convert_official(ckpt, tmp_path / "bf16", dtype="bfloat16")
    with safe_open(str(tmp_path / "bf16" / "depth.safetensors"), framework="pt") as f:
        assert f.get_tensor("dpt.head1.0.weight").dtype == torch.bfloat16
        assert f.metadata()["dtype"] == "bfloat16"
        assert json.loads(f.metadata()["config"])["layer_dims"] == [8, 16, 24, 24]
    model = L4P.from_registry(registry, heads=["depth"], overrides=["encoder.precision=fp32"])
    assert set(model.heads) == {"depth"}
    # refuses to overwrite a non-empty folder unless asked
    with pytest.raises(ConfigError, match="--force"):
        convert_official(ckpt, tmp_path / "bf16")
    convert_official(ckpt, tmp_path / "bf16", overwrite=True)


# -- refusals ---------------------------------------------------------------------------------------


def _refused(state: dict, tmp_path: Path, match: str) -> str:
    ckpt = tmp_path / "bad.ckpt"
    torch.save(lightning_checkpoint(state), ckpt)
    with pytest.raises(WeightsError, match=match) as info:
        convert_official(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    return str(info.value)


def test_refuses_a_missing_key(reduced, tmp_path):
    state, _ = reduced
    key = official_prefix("depth") + "task_head.dpt.head1.0.bias"
    message = _refused({k: v for k, v in state.items() if k != key}, tmp_path, "not filled")
    assert "dpt.head1.0.bias" in message and "'depth'" in message


def test_refuses_extra_keys(reduced, tmp_path):
    state, _ = reduced
    extra = official_prefix("dyn_mask") + "task_head.dpt.head3.0.weight"
    stray = "l4p_model.loss.weight"
    message = _refused({**state, extra: torch.zeros(2), stray: torch.zeros(1)}, tmp_path, "not consumed")
    assert extra in message and stray in message


def test_refuses_a_wrong_shape(reduced, tmp_path):
    state, _ = reduced
    key = official_prefix("track_2d") + "mask_decoder.mask_tokens.weight"
    message = _refused({**state, key: torch.zeros(4, 64)}, tmp_path, "wrong shapes")
    assert key in message and "(4, 64)" in message and "(3, 64)" in message
    key = ENCODER_PREFIX + "blocks.2.mlp.fc1.weight"
    message = _refused({**state, key: torch.zeros(100, 64)}, tmp_path, "wrong shapes")
    assert key in message


def test_refuses_a_differing_alias_pair(reduced, tmp_path):
    state, _ = reduced
    alias = official_prefix("camray") + "task_head.dpt.scratch.layer_rn.2.weight"
    message = _refused({**state, alias: state[alias] + 1}, tmp_path, "alias differ")
    assert "scratch.layer3_rn.weight" in message and "'pose'" in message


@pytest.mark.parametrize("payload", [WritesAFile, RunsAShell])
def test_a_pickle_that_needs_code_execution_is_refused_and_never_runs(payload, tmp_path, capsys):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save(payload(marker), ckpt)
    with pytest.raises(WeightsError, match="state dict|run code"):
        convert_official(ckpt, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()
    assert main(["convert-official", str(ckpt), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("l4p: error:") and "Traceback" not in err
    assert not marker.exists()


def test_a_truncated_file_is_refused(reduced, tmp_path):
    state, _ = reduced
    ckpt = tmp_path / "full.ckpt"
    torch.save(lightning_checkpoint(state), ckpt)
    data = ckpt.read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="corrupt, truncated"):
        convert_official(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_l4p_run_uses_the_converted_registry(reduced, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    state, _ = reduced
    ckpt = tmp_path / "l4p.ckpt"
    torch.save(lightning_checkpoint(state), ckpt)
    registry = convert_official(ckpt, tmp_path / "model")
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(frames / f"{i:03d}.png")
    out = tmp_path / "run"
    code = main(["run", str(frames), "--registry", str(registry), "--out", str(out), "--no-ply"])
    assert code == 0, capsys.readouterr().err
    written = {p.name for p in (out / "frames").iterdir()}
    assert {"depth", "flow", "motion", "pose", "tracking"} <= written


def test_the_encoder_loader_reads_the_lightning_checkpoint_directly(reduced, tmp_path):
    """`load_encoder` on the .ckpt: `state_dict` taken despite ten top-level entries, the test-only class
    in hyper_parameters left inert, the `l4p_model.video_encoder.` keys loaded strictly."""
    from l4p_framework.encoder import load_encoder
    from l4p_framework.encoder.loading import InertObject, load_torch_file, unwrap_state_dict

    state, _ = reduced
    ckpt = tmp_path / "l4p.ckpt"
    torch.save(lightning_checkpoint(state), ckpt)
    raw = load_torch_file(ckpt)
    assert len(raw) == 10 and isinstance(raw["hyper_parameters"]["config"], InertObject)
    assert "HyperParametersOnlyInThisTest" in repr(raw["hyper_parameters"]["config"])
    assert unwrap_state_dict(raw, ckpt).keys() == official_encoder_state(state).keys()
    encoder = load_encoder(ckpt, precision="fp32")
    assert encoder.config.name == ENCODER_PRESET
    for key, value in official_encoder_state(state).items():
        assert torch.equal(encoder.state_dict()[key], value)
