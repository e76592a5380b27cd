"""The training loop in-process: outputs, atomic writes, encoder training, schedule, data order."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from toy_heads import ToyPlugin, toy_spec
from training_helpers import FAST

from l4p_framework import L4P, ConfigError, L4PError, WeightsError, load_registry, read_head_metadata
from l4p_framework.cli.train import train_main
from l4p_framework.io import sha256_file
from l4p_framework.plugins import set_plugin_host
from l4p_framework.testing import fresh_host
from l4p_framework.training import StepBatchSampler, Trainer, load_train_config, train
from l4p_framework.training.state import load_state, save_state


def _config(host, registry, *args, plugin="toya"):
    return load_train_config(
        None,
        [f"plugin={plugin}", "steps=3", "checkpoint_every=0", *FAST, *args],
        registry=str(registry),
        host=host,
    )


def test_head_file_metadata_and_registry_entry(registry, host):
    result = train(_config(host, registry, "params.toya.hidden=8"), host=host)
    meta = read_head_metadata(result.heads["toya"].weights)
    assert meta["head"] == "toya" and meta["config"] == {"layer": 2, "hidden": 8}
    assert meta["training"]["steps"] == 3 and meta["training"]["data"]["name"] == "synth4d"
    assert meta["training"]["data"]["options"] == {
        "height": 64,
        "num_frames": 8,
        "num_queries": 4,
        "width": 64,
    }
    assert set(meta["training"]["metrics"]) == {"l1", "loss"}
    entry = load_registry(registry).registry.heads["toya"]
    assert entry.params == {"layer": 2, "hidden": 8} and entry.sha256 == sha256_file(
        result.heads["toya"].weights
    )
    # a retrain keeps the registered params unless overridden
    assert _config(host, registry).params["toya"] == {"layer": 2, "hidden": 8}


def test_config_fields_missing_from_an_older_registry_entry_can_be_overridden(registry, host):
    train(_config(host, registry, "params.toya.hidden=8"), host=host)
    text = registry.read_text()
    registry.write_text(text.replace("      hidden: 8\n", ""))  # an entry written before `hidden` existed
    assert "hidden" not in load_registry(registry).registry.heads["toya"].params
    assert _config(host, registry).params["toya"] == {"layer": 2, "hidden": 16}  # the default
    assert _config(host, registry, "params.toya.hidden=4").params["toya"]["hidden"] == 4


def _snapshot(registry):
    weights = registry.parent / "weights/toya.safetensors"
    return registry.read_bytes(), weights.read_bytes(), sorted(p.name for p in registry.parent.rglob("*"))


def test_failed_weights_write_leaves_old_files_intact(registry, host, monkeypatch):
    train(_config(host, registry), host=host)
    before = _snapshot(registry)
    import l4p_framework.safetensors_io as st

    def disk_full(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "save_file", disk_full)
    with pytest.raises(L4PError, match="No space left on device.*unchanged"):
        train(_config(host, registry, "seed=1"), host=host)
    after = _snapshot(registry)
    assert after[0] == before[0] and after[1] == before[1]
    assert [n for n in after[2] if n not in before[2] and not n.endswith(".jsonl")] == []  # no temp files


def test_failed_registry_write_restores_old_weights(registry, host, monkeypatch):
    train(_config(host, registry), host=host)
    before = _snapshot(registry)
    import l4p_framework.registry as registry_module
    from l4p_framework.io import atomic_write

    def interrupted(path, text):
        def write(tmp):
            with open(tmp, "w") as f:
                f.write(text[: len(text) // 2])
            raise KeyboardInterrupt  # interrupted half-way through the registry

        return atomic_write(path, write)

    monkeypatch.setattr(registry_module, "atomic_write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(_config(host, registry, "seed=1"), host=host)
    after = _snapshot(registry)
    assert after[0] == before[0] and after[1] == before[1]
    assert [n for n in after[2] if n not in before[2] and not n.endswith(".jsonl")] == []
    entry = load_registry(registry).registry.heads["toya"]
    assert sha256_file(registry.parent / entry.weights) == entry.sha256  # still consistent


def test_dataset_without_the_heads_targets_is_refused(registry):
    host = fresh_host(ToyPlugin(toy_spec("albedo", target="albedo")), entrypoints=True)
    with pytest.raises(ConfigError, match=r"does not provide \['albedo'\].*head 'albedo'"):
        Trainer(_config(host, registry, plugin="albedo"), host=host)


def test_joint_training_with_last_encoder_blocks_updates_encoder_and_heads(registry, host, capsys):
    before = load_registry(registry).registry.encoder
    train(_config(host, registry, plugin="toyc"), host=host)  # trained on the old encoder
    previous = set_plugin_host(host)
    try:
        code = train_main(
            [
                "--heads",
                "toya",
                "--train-last-blocks",
                "3",
                "--registry",
                str(registry),
                "steps=2",
                "checkpoint_every=0",
                *FAST,
            ]
        )
        err = capsys.readouterr().err
        assert code == 0, err
        assert "heads ['toyc'] were trained on the previous encoder" in err
        reg = load_registry(registry)
        enc = reg.registry.encoder
        assert enc.fingerprint != before.fingerprint and enc.weights.startswith("weights/encoder-")
        assert enc.sha256 == sha256_file(reg.resolve(enc.weights))
        assert reg.registry.heads["toya"].encoder_fingerprint == enc.fingerprint
        model = L4P.from_registry(registry, heads=["toya"], host=host)
        assert model.encoder.fingerprint == enc.fingerprint and model.encoder.frozen
        # toya reads layer 2: of the last 3 blocks only block 2 gets gradients; block 1 is frozen
        assert "blocks [3, 4] get no gradient" in err
        fresh = L4P.from_registry(
            registry.parent / "registry.yaml",
            heads=[],
            host=host,
            overrides=["encoder.weights=null", "encoder.sha256=null", "encoder.fingerprint=null"],
        )
        blocks = [
            torch.equal(a.mlp.fc1.weight, b.mlp.fc1.weight)
            for a, b in zip(model.encoder.blocks, fresh.encoder.blocks)
        ]
        assert blocks == [True, False, True, True]
        with pytest.raises(L4PError, match="fingerprint"):
            L4P.from_registry(registry, heads=["toyc"], host=host)
    finally:
        set_plugin_host(previous)


def test_bf16_autocast_trains(registry, host):
    result = train(_config(host, registry, "precision=bf16", "update_registry=false"), host=host)
    assert math.isfinite(result.heads["toya"].final_loss)
    assert all(v.dtype == torch.float32 for v in load_file(result.heads["toya"].weights).values())


def test_float16_files_hold_exactly_the_evaluated_weights(registry, host):
    """save_dtype=float16: half-size files holding bit for bit the weights of the final evaluation."""
    full = train(
        _config(host, registry, "update_registry=false", "weights=" + str(registry.parent / "a.st")),
        host=host,
    )
    trainer = Trainer(_config(host, registry, "train_encoder=true", "save_dtype=float16"), host)
    result = trainer.run()
    stored = load_file(result.heads["toya"].weights)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert result.heads["toya"].weights.stat().st_size < 0.6 * full.heads["toya"].weights.stat().st_size
    assert all(v.dtype == torch.float16 for v in load_file(result.encoder_weights).values())
    # fingerprint and sha256 verified on load; float32 compute so that weights compare exactly
    model = L4P.from_registry(registry, heads=["toya"], host=host, overrides=["encoder.precision=fp32"])
    assert model.encoder.fingerprint == result.encoder_fingerprint
    evaluated = trainer.model.heads["toya"].state_dict()
    for name, value in model.heads["toya"].state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, evaluated[name]), name
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value.float(), trainer.encoder.state_dict()[name].float()), name
    assert read_head_metadata(result.heads["toya"].weights)["training"]["save_dtype"] == "float16"


def test_save_encoder_refuses_weights_the_dtype_cannot_hold(tmp_path):
    from l4p_framework.checkpoints import round_weights
    from l4p_framework.encoder import build_encoder, load_encoder, save_encoder

    encoder = build_encoder("tiny").freeze()
    with pytest.raises(WeightsError, match="round it to the storage dtype first"):
        save_encoder(encoder, tmp_path / "e.safetensors", torch.float16)
    assert not (tmp_path / "e.safetensors").exists()
    round_weights(encoder, torch.float16)
    encoder.freeze()  # the fingerprint of the rounded weights
    save_encoder(encoder, tmp_path / "e.safetensors", torch.float16)
    # an encoder cast to bf16 for inference no longer holds its float32 weights
    with pytest.raises(WeightsError, match="precision='fp32'"):
        save_encoder(load_encoder("tiny", precision="bf16"), tmp_path / "b.safetensors")


def test_grad_accumulation_matches_a_bigger_batch(registry, host):
    a = train(
        _config(host, registry, "batch_size=2", "grad_accum=1", "weights=" + str(registry.parent / "a.st")),
        host=host,
    )
    b = train(
        _config(host, registry, "batch_size=1", "grad_accum=2", "weights=" + str(registry.parent / "b.st")),
        host=host,
    )
    wa, wb = load_file(a.heads["toya"].weights), load_file(b.heads["toya"].weights)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-7), k


def test_learning_rate_schedule(registry, host):
    trainer = Trainer(_config(host, registry, "steps=10", "warmup_steps=4", "min_lr_ratio=0.1"), host=host)
    factors = [trainer.lr_factor(s) for s in range(10)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and all(a > b for a, b in zip(factors[4:], factors[5:]))
    assert factors[9] > 0.1 and trainer.lr_factor(10) == pytest.approx(0.1)


def test_data_order_is_seeded_resumable_and_sharded():
    full = list(StepBatchSampler(10, seed=1, batch_size=4, grad_accum=2, start_step=0, steps=3))
    assert len(full) == 6 and all(len(b) == 4 for b in full)
    assert sorted(full[0] + full[1] + full[2][:2]) == list(range(10))  # epoch 0 is a permutation
    assert list(StepBatchSampler(10, 1, 4, 2, 1, 3)) == full[2:]  # resume at step 1
    assert list(StepBatchSampler(10, 2, 4, 2, 0, 3)) != full  # another seed, another order
    ranks = [list(StepBatchSampler(10, 1, 4, 2, 0, 3, rank=r, world_size=2)) for r in range(2)]
    assert all(ranks[0][k] + ranks[1][k] == full[k] for k in range(6))
    with pytest.raises(ConfigError, match="divisible"):
        StepBatchSampler(10, 1, 3, 1, 0, 3, rank=0, world_size=2)


def test_training_state_round_trip(tmp_path):
    module = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(module.parameters())
    module(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"step": 7, "opt": opt.state_dict(), "rng": torch.get_rng_state(), "t": (1, None, "x"), "f": 0.5}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["step"] == 7 and back["t"] == (1, None, "x") and back["f"] == 0.5
    assert torch.equal(back["rng"], state["rng"])
    assert back["opt"]["param_groups"] == state["opt"]["param_groups"]
    for k, v in state["opt"]["state"].items():
        assert back["opt"]["state"][k].keys() == v.keys()
        assert all(torch.equal(back["opt"]["state"][k][n], v[n]) for n in v)


def test_failed_checkpoint_write_keeps_the_previous_checkpoint_and_resume_works(registry, host, monkeypatch):
    import l4p_framework.safetensors_io as st

    real, calls = st.save_file, {"n": 0}

    def second_fails(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of step 4; step 2's was written
            with open(path, "wb") as f:
                f.write(b"torn")
            raise OSError(28, "No space left on device")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(st, "save_file", second_fails)
    with pytest.raises(L4PError, match="previous checkpoint is intact"):
        train(_config(host, registry, "steps=6", "checkpoint_every=2"), host=host)
    checkpoint = registry.parent / "runs/toya/checkpoint.safetensors"
    assert load_state(checkpoint)["step"] == 2
    monkeypatch.setattr(st, "save_file", real)
    result = train(_config(host, registry, "steps=6", "checkpoint_every=2", "resume=true"), host=host)
    assert load_state(checkpoint)["step"] == 6 and result.heads["toya"].sha256


def test_a_model_window_head_trains_on_clips_larger_than_the_window(registry, host):
    """Clips of 48x80 (letterboxed into the tiny encoder's 64x64 window): the depth head decodes on the
    window's grid, the trainer maps its output back to the clip's grid, where the targets are (as
    `L4P.stream` does at inference), so the loss is computed and falls instead of a shape error."""
    pytest.importorskip("l4p_head_depth")
    config = _config(
        host,
        registry,
        "data.options.height=48",
        "data.options.width=80",
        "steps=30",
        "lr=3e-3",
        "update_registry=false",
        "weights=" + str(registry.parent / "depth.st"),
        plugin="depth",
    )
    result = train(config, host=host)
    records = [json.loads(line) for line in result.log_file.read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r and "eval" not in r]
    assert len(losses) >= 3 and math.isfinite(losses[-1]) and min(losses[-2:]) < losses[0], losses
    assert math.isfinite(result.heads["depth"].metrics["abs_rel"])
