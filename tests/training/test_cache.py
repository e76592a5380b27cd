"""Feature cache: exact features, training from cache == live, fingerprint refusal, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import FAST, state_equal

from l4p_framework.cli.cache import parse_data_spec
from l4p_framework.cli.main import main as l4p_main
from l4p_framework.data.collate import collate
from l4p_framework.plugins import set_plugin_host
from l4p_framework.testing import tiny_encoder
from l4p_framework.training import (
    DTYPE_TOLERANCE,
    CacheError,
    FeatureCache,
    build_cache,
    collate_cached,
    list_caches,
    load_train_config,
    train,
)

OPTIONS = {"num_frames": 8, "height": 64, "width": 64, "num_queries": 4}


@pytest.fixture(scope="module")
def clips():
    from l4p_framework.data.synth4d import Synth4D

    return Synth4D("train", length=4, **OPTIONS)


def _build(tmp_path, clips, dtype="float32", encoder=None, batch_size=2):
    encoder = encoder or tiny_encoder()
    return encoder, build_cache(
        encoder,
        clips,
        [2, 4, "final"],
        tmp_path / "cache",
        "train",
        3,
        dtype,
        data="synth4d",
        options=OPTIONS,
        batch_size=batch_size,
        shard_size=2,
    )


def test_cached_features_equal_live_features_exactly(tmp_path, clips):
    encoder, cache = _build(tmp_path, clips)
    assert len(cache) == 3 and cache.layers == [2, 4, "final"] and cache.fingerprint == encoder.fingerprint
    assert len(cache.index["shards"]) == 2  # 3 clips in shards of 2
    dataset = cache.dataset([2, "final"])
    for i in range(3):
        features, sample = dataset[i]
        live = encoder(clips[i]["video"][None], [2, "final"])  # one clip alone, not the build's batch of 2
        for layer in (2, "final"):
            assert torch.equal(features[layer], live[layer][0])
        for key, value in clips[i].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(sample[key], value), key
            else:
                assert sample[key] == value
    feats, batch = collate_cached(cache)([dataset[0], dataset[1]])
    live = encoder(collate([clips[0], clips[1]])["video"], [2, "final"])
    assert feats.grid_size == live.grid_size and feats.fingerprint == live.fingerprint
    assert torch.equal(feats[2], live[2]) and batch["video"].shape == (2, 3, 8, 64, 64)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_cache_is_within_declared_tolerance(tmp_path, clips, dtype):
    encoder, cache = _build(tmp_path, clips, dtype)
    features, _ = cache.dataset()[1]
    live = encoder(clips[1]["video"][None], [2, 4, "final"])
    for layer in (2, 4, "final"):
        err = (features[layer] - live[layer][0]).abs() / live[layer][0].abs().clamp_min(1e-3)
        assert features[layer].dtype == torch.float32
        assert 0 < err.max() <= DTYPE_TOLERANCE[dtype]


def test_cache_of_another_encoder_is_refused_naming_both(tmp_path, clips):
    _, cache = _build(tmp_path, clips)
    other = tiny_encoder(seed=1)
    with pytest.raises(CacheError) as info:
        FeatureCache.open(cache.path, fingerprint=other.fingerprint)
    assert cache.fingerprint[:16] in str(info.value) and other.fingerprint[:16] in str(info.value)


def test_interrupted_build_is_not_a_cache(tmp_path, clips, monkeypatch):
    import l4p_framework.training.cache as cache_module

    calls = {"n": 0}
    real = cache_module.write_safetensors

    def failing(path, tensors, meta):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(path, tensors, meta)

    monkeypatch.setattr(cache_module, "write_safetensors", failing)
    with pytest.raises(OSError):
        _build(tmp_path, clips)
    assert list_caches(tmp_path / "cache") == []


def _run(host, registry, *args):
    config = load_train_config(
        None,
        ["plugin=toya", "steps=4", "checkpoint_every=0", *FAST, *args],
        registry=str(registry),
        host=host,
    )
    return train(config, host=host)


def test_training_from_cache_equals_live_bitwise(registry, host, deterministic):
    from l4p_framework.data.synth4d import Synth4D
    from l4p_framework.registry import load_registry

    reg = load_registry(registry)
    encoder = tiny_encoder()
    for split, n in (("train", 8), ("val", 2)):
        build_cache(
            encoder,
            Synth4D(split, **OPTIONS),
            [2],
            reg.root / "cache",
            split,
            n,
            data="synth4d",
            options=OPTIONS,
            batch_size=4,
        )
    out = registry.parent
    cached = _run(
        host, registry, "cache=require", f"weights={out / 'cached.safetensors'}", "update_registry=false"
    )
    live = _run(host, registry, "cache=off", f"weights={out / 'live.safetensors'}", "update_registry=false")
    assert cached.used_cache is not None and live.used_cache is None
    assert state_equal(load_file(out / "cached.safetensors"), load_file(out / "live.safetensors"))
    assert cached.heads["toya"].metrics == live.heads["toya"].metrics


def test_cache_require_without_cache_says_how_to_build(registry, host):
    with pytest.raises(CacheError, match="l4p cache build"):
        _run(host, registry, "cache=require")


def test_cache_require_with_stale_cache_names_both_fingerprints(registry, host, clips):
    from l4p_framework.data.synth4d import Synth4D

    other = tiny_encoder(seed=5)
    build_cache(
        other,
        Synth4D("train", **OPTIONS),
        [2],
        registry.parent / "cache",
        "train",
        8,
        data="synth4d",
        options=OPTIONS,
    )
    with pytest.raises(CacheError) as info:
        _run(host, registry, "cache=require")
    assert other.fingerprint[:16] in str(info.value) and tiny_encoder().fingerprint[:16] in str(info.value)


def test_cache_cli_build_and_info(registry, host, capsys, monkeypatch):
    previous = set_plugin_host(host)
    monkeypatch.chdir(registry.parent)
    try:
        code = l4p_main(
            [
                "cache",
                "build",
                "--data",
                "synth4d:num_queries=4",
                "--split",
                "train,val",
                "--num-clips",
                "2",
                "--heads",
                "toya,toyc",
                "--registry",
                str(registry),
            ]
        )
        assert code == 0
        assert "cached 2 clips of synth4d/val" in capsys.readouterr().out
        code = l4p_main(["cache", "info", "--registry", str(registry), "--json"])
        rows = json.loads(capsys.readouterr().out)
    finally:
        set_plugin_host(previous)
    assert sorted(r["split"] for r in rows) == ["train", "val"]
    assert all(r["layers"] == ["2", "3"] and r["num_clips"] == 2 and r["matches_registry"] for r in rows)
    assert rows[0]["options"] == OPTIONS


def test_parse_data_spec():
    assert parse_data_spec("synth4d") == ("synth4d", {})
    assert parse_data_spec("synth4d:num_frames=16,height=128,fov_range_deg=[40,60]") == (
        "synth4d",
        {"num_frames": 16, "height": 128, "fov_range_deg": [40, 60]},
    )


def test_a_cache_computed_in_another_precision_is_not_used(registry, host):
    """Same weights, other compute dtype, other features: a float32 cache never feeds a bf16 run."""
    from l4p_framework.data.synth4d import Synth4D
    from l4p_framework.registry import load_registry

    reg = load_registry(registry)
    for split, n in (("train", 8), ("val", 2)):
        build_cache(tiny_encoder(), Synth4D(split, **OPTIONS), [2], reg.root / "cache", split, n,
                    data="synth4d", options=OPTIONS, batch_size=4)  # fmt: skip
    assert [c.precision for c in list_caches(reg.root / "cache")] == ["float32", "float32"]
    registry.write_text(registry.read_text().replace("precision: fp32", "precision: bf16"))
    with pytest.raises(CacheError, match="computing in bfloat16"):
        _run(host, registry, "cache=require", "update_registry=false")
    live = _run(host, registry, "update_registry=false")  # cache=auto: computes the features live
    assert live.used_cache is None
