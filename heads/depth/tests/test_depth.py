"""The depth head plugin: contract, shapes (clip and windowed), training, checkpoints, official layout,
stitching and input errors, all on the tiny encoder."""

from __future__ import annotations

import math

import pytest
import torch
from l4p_head_depth import DepthConfig, depth_head_spec, silog_loss
from l4p_head_depth import plugin as depth_plugin

from l4p_framework import L4P, ConfigError, InputError, L4PError, load_head, save_head
from l4p_framework.blocks.dense_head import dense_head_to_official, official_dense_head_shapes
from l4p_framework.encoder import VideoEncoder, get_preset
from l4p_framework.testing import assert_head_contract, fit_fixed_batch, fresh_host, tiny_batch, tiny_encoder

torch.set_num_threads(1)
FAST = {"layer_dims": (8, 8, 16, 16), "feature_dim": 8, "last_dim": 8}
"""Narrow decoder widths for the slower tests (a fraction of the default small preset's cost)."""


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture(scope="module")
def batch():
    return tiny_batch()


def model_with(encoder, config=None) -> L4P:
    model = L4P(encoder)
    model.add_head(depth_head_spec(), config or {})
    return model


def test_contract_and_positive_depth(encoder, batch):
    out = assert_head_contract(depth_head_spec(), encoder, batch)
    assert out["depth"].shape == (1, 1, 8, 64, 64)
    assert bool((out["depth"] > 0).all())


def test_registered_in_memory_and_by_entry_point():
    assert list(fresh_host(depth_plugin).heads()) == ["depth"]
    spec = fresh_host(entrypoints=True).heads()["depth"]
    assert spec.distribution == "l4p-head-depth"
    assert spec.targets == ("depth",)


def test_shapes_clip_short_and_windowed(encoder):
    """8 frames = one window; 5 frames are ping-pong padded; 20 frames = windows at 0, 4, 8, 12."""
    model = model_with(encoder, FAST)
    torch.manual_seed(0)
    video = torch.rand(1, 3, 20, 64, 64)
    with torch.no_grad():
        clip = model(video[:, :, :8])["depth"]["depth"]
        short = model(video[:, :, :5])["depth"]["depth"]
        full = model(video)["depth"]["depth"]
    assert clip.shape == (1, 1, 8, 64, 64)
    assert short.shape == (1, 1, 5, 64, 64)
    assert full.shape == (1, 1, 20, 64, 64)
    assert bool(torch.isfinite(full).all()) and bool((full > 0).all())
    # the first window's frames before the first overlap are written unchanged
    assert torch.equal(full[:, :, :4], clip[:, :, :4])


def test_loss_decreases_on_a_fixed_batch(encoder, batch):
    losses = fit_fixed_batch(model_with(encoder, FAST), "depth", batch)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0], losses


def test_silog_known_values():
    gt = torch.tensor([2.0, 4.0, 8.0, 1.0]).view(1, 1, 1, 2, 2)
    valid = torch.tensor([True, True, True, False]).view(1, 1, 1, 2, 2)
    # any global scale costs nothing with lambda = 1; the invalid pixel is ignored
    pred = gt * 3.0
    pred[..., 1, 1] = 1000.0
    loss, mu = silog_loss(pred, gt, valid)
    assert loss.item() == pytest.approx(0.0, abs=1e-10) and mu.item() == pytest.approx(math.log(3.0))
    # lambda = 0 is mean(d^2): the scale error is paid in full
    assert silog_loss(pred, gt, valid, lam=0.0)[0].item() == pytest.approx(math.log(3.0) ** 2, rel=1e-5)
    # d = (0, 2, 0 | ignored) -> variance 8/9
    pred = gt * torch.tensor([1.0, math.exp(2.0), 1.0, 5.0]).view(1, 1, 1, 2, 2)
    assert silog_loss(pred, gt, valid)[0].item() == pytest.approx(8 / 9, rel=1e-5)
    # a sequence without valid pixels is skipped, not NaN
    loss, _ = silog_loss(
        torch.ones(2, 1, 1, 2, 2), torch.ones(2, 1, 1, 2, 2), torch.zeros(2, 1, 1, 2, 2, dtype=bool)
    )
    assert loss.item() == 0.0


def test_loss_reads_depth_valid(batch):
    spec = depth_head_spec()
    gt = batch["depth"]
    pred = gt * 2.0
    pred[..., :32, :] *= torch.exp(torch.randn_like(pred[..., :32, :]))  # wrong only in the top half
    valid = torch.zeros_like(gt, dtype=torch.bool)
    valid[..., 32:, :] = True
    loss = spec.loss({"depth": pred}, {**batch, "depth_valid": valid}, DepthConfig())["loss"]
    assert loss.item() == pytest.approx(0.0, abs=1e-9)
    assert spec.loss({"depth": pred}, batch, DepthConfig())["loss"].item() > 0.1


def test_metrics_known_values(batch):
    spec = depth_head_spec()
    gt = batch["depth"]
    m = spec.metrics({"depth": gt * 5.0}, batch)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-6) and m["delta1"] == 1.0
    # affine in disparity: exact only for the scale+shift (disparity) alignment
    pred = 1.0 / (0.5 / gt + 0.2)
    m = spec.metrics({"depth": pred}, batch)
    assert m["abs_rel_ss"] == pytest.approx(0.0, abs=1e-5) and m["delta1_ss"] == 1.0
    assert m["abs_rel"] > 0.01
    assert set(m) == {"abs_rel", "delta1", "abs_rel_ss", "delta1_ss"}


def test_save_load_round_trip_is_bitwise(encoder, batch, tmp_path):
    model = model_with(encoder)
    spec, config = model.specs["depth"], model.configs["depth"]
    features = model.encode(batch["video"])
    path = tmp_path / "depth.safetensors"
    save_head(path, model.heads["depth"], spec, config, encoder.info)
    loaded, loaded_config, meta = load_head(path, spec, encoder.info)
    assert loaded_config == config and meta["head"] == "depth"
    with torch.no_grad():
        a = model.heads["depth"](features, batch)["depth"]
        b = loaded(features, batch)["depth"]
    assert torch.equal(a, b)


def test_official_layout_on_meta_device():
    """preset="official" on the l4p-vitg14 encoder: the official 68 keys, shapes and parameter count."""
    with torch.device("meta"):
        info = VideoEncoder(get_preset("l4p-vitg14")).info
        spec, config = depth_head_spec(), DepthConfig(preset="official")
        head = spec.build(info, config)
    assert list(spec.layers(info, config)) == [14, 21, 28, 36]
    official = dense_head_to_official(head.state_dict())
    assert len(official) == 68
    assert {k: tuple(v.shape) for k, v in official.items()} == official_dense_head_shapes(1)
    assert sum(p.numel() for p in head.parameters()) == 85_845_889
    converted = spec.official_key_map(official)
    assert converted.keys() == head.state_dict().keys()
    head.load_state_dict(converted, strict=True, assign=True)


def test_official_key_map_round_trip_with_real_weights(encoder, batch):
    spec = depth_head_spec()
    model = model_with(encoder)
    features = model.encode(batch["video"])
    prefixed = {
        f"l4p_model.task_heads.depth.{k}": v
        for k, v in dense_head_to_official(model.heads["depth"].state_dict()).items()
    }
    official = {k.removeprefix("l4p_model.task_heads.depth."): v for k, v in prefixed.items()}
    fresh = spec.build(encoder.info, model.configs["depth"])
    fresh.load_state_dict(spec.official_key_map(official), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(features, batch)["depth"], model.heads["depth"](features, batch)["depth"])


def test_stitcher_undoes_a_known_disparity_scale():
    """Window 2 = the true depth with disparity a*d (the head stitches by a robust scale: shifts
    accumulate over long videos); after stitching every frame is the true depth."""
    torch.manual_seed(1)
    true = 1.0 + 9.0 * torch.rand(2, 1, 12, 6, 5)
    a = torch.tensor([2.0, 0.5])
    second = true[:, :, 4:] / a.view(2, 1, 1, 1, 1)
    stitcher = depth_head_spec().stitcher(DepthConfig())
    state = stitcher.merge(None, {"depth": true[:, :, :8]}, 0, 0)
    state = stitcher.merge(state, {"depth": second}, 4, 4)
    out = stitcher.finalize(state)["depth"]
    assert out.shape == true.shape
    torch.testing.assert_close(out, true, rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "video, match",
    [
        (torch.rand(3, 8, 64, 64), r"video must have shape \(B, 3, T, H, W\).*got \(3, 8, 64, 64\)"),
        (torch.full((1, 3, 8, 64, 64), float("nan")), r"video \(B, 3, T, H, W\).*NaN or infinite"),
        (torch.rand(1, 3, 0, 64, 64), r"video has no frames"),
    ],
    ids=["rank", "nan", "no_frames"],
)
def test_bad_videos_raise_clear_errors(encoder, video, match):
    with pytest.raises(L4PError, match=match):
        model_with(encoder)(video)


def test_other_video_sizes_are_fitted_into_the_window_and_mapped_back(encoder):
    out = model_with(encoder)(torch.rand(1, 3, 8, 128, 96))["depth"]["depth"]
    assert out.shape == (1, 1, 8, 128, 96) and bool((out > 0).all())


def test_fewer_frames_than_a_tubelet_through_the_encoder(encoder):
    with pytest.raises(InputError, match=r"video has 1 frames.*tubelet \(2\)"):
        encoder(torch.rand(1, 3, 1, 64, 64), [1])
    # through L4P a 1-frame clip is ping-pong padded to a window and cropped back
    with torch.no_grad():
        assert model_with(encoder)(torch.rand(1, 3, 1, 64, 64))["depth"]["depth"].shape == (1, 1, 1, 64, 64)


def test_wrong_target_shapes_raise_clear_errors(batch):
    spec, config = depth_head_spec(), DepthConfig()
    pred = {"depth": batch["depth"] + 1.0}
    with pytest.raises(
        InputError, match=r"batch\['depth'\] must have shape \(B, 1, T, H, W\) = \(1, 1, 8, 64, 64\)"
    ):
        spec.loss(pred, {**batch, "depth": batch["depth"][:, 0]}, config)
    with pytest.raises(InputError, match=r"batch\['depth_valid'\] must have shape \(B, 1, T, H, W\)"):
        spec.metrics(pred, {**batch, "depth_valid": batch["depth_valid"][..., :32]})
    with pytest.raises(InputError, match=r"batch has no 'depth'"):
        spec.loss(pred, {"video": batch["video"]}, config)
    with pytest.raises(InputError, match=r"outputs\['depth'\] must be \(B, 1, T, H, W\)"):
        spec.loss({"depth": batch["depth"][0]}, batch, config)


def test_config_errors(encoder):
    with pytest.raises(ConfigError, match="silog_lambda"):
        model_with(encoder, {"silog_lambda": 2.0})
    with pytest.raises(ConfigError, match="unknown key"):
        model_with(encoder, {"presets": "small"})
    with pytest.raises(ConfigError, match="non-decreasing"):
        model_with(encoder, {"layers": (4, 3, 2, 1)})
    with pytest.raises(InputError, match=r"reads layers \[9\]"):
        model_with(encoder, {"layers": (1, 2, 3, 9)})
