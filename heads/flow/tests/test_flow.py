"""The flow head plugin: contract, shapes (clip and windowed), window-boundary stitching, training,
checkpoints, official layout and input errors, all on the tiny encoder."""

from __future__ import annotations

import math

import pytest
import torch
from l4p_head_flow import FlowConfig, flow_head_spec
from l4p_head_flow import plugin as flow_plugin

from l4p_framework import L4P, InputError, L4PError, load_head, save_head
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
    model.add_head(flow_head_spec(), config or {})
    return model


def test_contract(encoder, batch):
    out = assert_head_contract(flow_head_spec(), encoder, batch)
    assert out["flow"].shape == (1, 2, 8, 64, 64)


def test_registered_in_memory_and_by_entry_point():
    assert list(fresh_host(flow_plugin).heads()) == ["flow"]
    spec = fresh_host(entrypoints=True).heads()["flow"]
    assert spec.distribution == "l4p-head-flow"
    assert spec.targets == ("flow",)


def test_shapes_and_window_boundaries(encoder):
    """20 frames -> windows at 0, 4, 8, 12 (8 frames, stride 4). A later window's first frame keeps the
    earlier window's value; its other frames overwrite."""
    model = model_with(encoder, FAST)
    torch.manual_seed(0)
    video = torch.rand(1, 3, 20, 64, 64)
    with torch.no_grad():
        full = model(video)["flow"]["flow"]
        win = {s: model(video[:, :, s : s + 8])["flow"]["flow"] for s in (0, 4, 8, 12)}
        short = model(video[:, :, :5])["flow"]["flow"]
    assert full.shape == (1, 2, 20, 64, 64)
    assert win[0].shape == (1, 2, 8, 64, 64) and short.shape == (1, 2, 5, 64, 64)
    assert torch.equal(full[:, :, :5], win[0][:, :, :5])
    for s in (4, 8, 12):
        assert torch.equal(full[:, :, s], win[s - 4][:, :, 4]), (
            f"frame {s} must keep the earlier window's value"
        )
        assert not torch.equal(full[:, :, s], win[s][:, :, 0])
    for s in (4, 8):
        assert torch.equal(full[:, :, s + 1 : s + 4], win[s][:, :, 1:4])
    assert torch.equal(full[:, :, 13:], win[12][:, :, 1:])


def test_stitcher_keeps_previous_first_frame():
    stitcher = flow_head_spec().stitcher(FlowConfig())
    state = stitcher.merge(None, {"flow": torch.full((1, 2, 8, 3, 3), 1.0)}, 0, 0)
    state = stitcher.merge(state, {"flow": torch.full((1, 2, 8, 3, 3), 2.0)}, 4, 4)
    out = stitcher.finalize(state)["flow"]
    assert out.shape == (1, 2, 12, 3, 3)
    assert out[0, 0, :, 0, 0].tolist() == [1.0] * 5 + [2.0] * 7


def test_loss_decreases_on_a_fixed_batch(encoder, batch):
    losses = fit_fixed_batch(model_with(encoder, FAST), "flow", batch)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0], losses


def test_loss_known_values_and_first_frame_mask(batch):
    spec, config = flow_head_spec(), FlowConfig()
    gt = batch["flow"]
    pred = gt + torch.tensor([1.0, -2.0]).view(1, 2, 1, 1, 1)
    pred[:, :, 0] = 100.0  # the window's first frame never counts
    valid = torch.ones_like(batch["flow_valid"])  # even when the batch says it is valid
    terms = spec.loss({"flow": pred}, {**batch, "flow_valid": valid}, config)
    assert terms["loss"].item() == pytest.approx(3.0, rel=1e-5)
    assert terms["epe"].item() == pytest.approx(math.sqrt(5.0), rel=1e-5)
    # flow_valid is honoured: errors outside it are ignored
    pred[..., :32, :] += 50.0
    valid[..., :32, :] = False
    assert spec.loss({"flow": pred}, {**batch, "flow_valid": valid}, config)["loss"].item() == pytest.approx(
        3.0, rel=1e-5
    )


def test_metrics_known_values(batch):
    spec = flow_head_spec()
    gt = batch["flow"]
    m = spec.metrics({"flow": gt.clone()}, batch)
    assert m["epe"] == pytest.approx(0.0, abs=1e-9) and m["epe<1"] == 1.0
    pred = gt + torch.tensor([1.2, 1.6]).view(1, 2, 1, 1, 1)
    pred[:, :, 0] = 1e3  # first frame excluded
    m = spec.metrics({"flow": pred}, {**batch, "flow_valid": torch.ones_like(batch["flow_valid"])})
    assert m["epe"] == pytest.approx(2.0, rel=1e-6) and m["epe<1"] == 0.0
    assert {"epe", "epe<1"} <= set(m)


def test_save_load_round_trip_is_bitwise(encoder, batch, tmp_path):
    model = model_with(encoder)
    spec, config = model.specs["flow"], model.configs["flow"]
    features = model.encode(batch["video"])
    path = tmp_path / "flow.safetensors"
    save_head(path, model.heads["flow"], spec, config, encoder.info)
    loaded, _, meta = load_head(path, spec, encoder.info)
    assert meta["head"] == "flow"
    with torch.no_grad():
        assert torch.equal(model.heads["flow"](features, batch)["flow"], loaded(features, batch)["flow"])


def test_official_layout_on_meta_device():
    """preset="official" on l4p-vitg14: the official flow_2d_backward keys, shapes and parameter count."""
    with torch.device("meta"):
        info = VideoEncoder(get_preset("l4p-vitg14")).info
        spec, config = flow_head_spec(), FlowConfig(preset="official")
        head = spec.build(info, config)
    assert list(spec.layers(info, config)) == [14, 21, 28, 36]
    official = dense_head_to_official(head.state_dict())
    assert len(official) == 68
    assert {k: tuple(v.shape) for k, v in official.items()} == official_dense_head_shapes(2)
    assert sum(p.numel() for p in head.parameters()) == 85_846_018
    converted = spec.official_key_map(official)
    assert converted.keys() == head.state_dict().keys()
    head.load_state_dict(converted, strict=True, assign=True)


@pytest.mark.parametrize(
    "video, match",
    [
        (torch.rand(1, 8, 64, 64), r"video must have shape \(B, 3, T, H, W\).*got \(1, 8, 64, 64\)"),
        (torch.full((1, 3, 8, 64, 64), float("inf")), r"video \(B, 3, T, H, W\).*NaN or infinite"),
        (torch.rand(1, 3, 0, 64, 64), r"video has no frames"),
    ],
    ids=["rank", "inf", "no_frames"],
)
def test_bad_videos_raise_clear_errors(encoder, video, match):
    with pytest.raises(L4PError, match=match):
        model_with(encoder)(video)


def test_fewer_frames_than_a_tubelet_through_the_encoder(encoder):
    with pytest.raises(InputError, match=r"video has 1 frames.*tubelet \(2\)"):
        encoder(torch.rand(1, 3, 1, 64, 64), [1])


def test_wrong_target_shapes_raise_clear_errors(batch):
    spec, config = flow_head_spec(), FlowConfig()
    pred = {"flow": batch["flow"].clone()}
    with pytest.raises(
        InputError, match=r"batch\['flow'\] must have shape \(B, 2, T, H, W\) = \(1, 2, 8, 64, 64\)"
    ):
        spec.loss(pred, {**batch, "flow": batch["flow"][:, :1]}, config)
    with pytest.raises(InputError, match=r"batch\['flow_valid'\] must have shape \(B, 1, T, H, W\)"):
        spec.metrics(pred, {**batch, "flow_valid": batch["flow_valid"][:, :, :4]})
    with pytest.raises(InputError, match=r"outputs\['flow'\] must be \(B, 2, T, H, W\)"):
        spec.loss({"flow": batch["flow"][:, :1]}, batch, config)


# -- shared frame matching (matching="shared") -----------------------------------------------------
SHARED = {**FAST, "matching": "shared"}


def test_untrained_refiner_returns_the_matching_flow(encoder, batch):
    """The refiner's last layer starts at zero: output = the shared matching's flow exactly."""
    from l4p_framework.matching import compute_matches

    matched = model_with(encoder, SHARED)
    with torch.no_grad():
        out = matched(batch["video"])["flow"]["flow"]
    initial = compute_matches(batch["video"], matched.matching).backward
    torch.testing.assert_close(out, initial, atol=1e-6, rtol=0)
    assert float(initial[:, :, 1:].abs().mean()) > 0.05  # the frames do move


def test_matching_flow_comes_at_the_input_resolution(encoder, batch):
    """A 2x larger video: the flow is decoded at 128 x 128, in input pixels (no upsampling of a
    64 x 64 estimate), and the shared matching computed on the 128 x 128 frames."""
    from l4p_framework.matching import compute_matches

    video = torch.nn.functional.interpolate(
        batch["video"][0], scale_factor=2, mode="bilinear", align_corners=False
    )[None].clamp(0, 1)
    model = model_with(encoder, SHARED)
    torch.nn.init.normal_(model.heads["flow"].refiner.net[-1].weight, std=0.01)  # a non-zero correction
    with torch.no_grad():
        out = model(video)["flow"]["flow"]
    assert out.shape == (1, 2, video.shape[2], 128, 128)
    initial = compute_matches(video, model.matching).backward
    correction = out - initial
    assert 0 < float(correction.abs().mean()) < 0.5 * float(initial[:, :, 1:].abs().mean())
    # a per-pixel correction at 128 x 128, not a 64 x 64 map upsampled: odd and even columns differ
    # as much as neighbours do
    even_odd = (correction[..., 1::2] - correction[..., 0::2]).abs().mean()
    odd_even = (correction[..., 2::2] - correction[..., 1:-1:2]).abs().mean()
    assert float(odd_even) > 0.5 * float(even_odd) > 0


def test_matching_head_learns_and_keeps_the_official_keys_separate(encoder, batch):
    model = model_with(encoder, SHARED)
    keys = model.heads["flow"].state_dict().keys()
    assert any(k.startswith("refiner.") for k in keys) and any(k.startswith("dpt.") for k in keys)
    losses = fit_fixed_batch(model, "flow", batch, steps=15)
    assert losses[-1] < 0.9 * losses[0], losses  # a correction of the matching: starts near the target


def test_matching_head_without_the_shared_matching_says_what_it_needs(encoder, batch):
    head = model_with(encoder, SHARED).heads["flow"]
    features = encoder(batch["video"], list(head.layers))
    with pytest.raises(InputError, match=r"flow head reads the shared frame matching.*prepare_window"):
        head(features, {"video": batch["video"]})


def test_matching_config_is_validated():
    with pytest.raises(ValueError):
        FlowConfig(matching="lucas-kanade")
    with pytest.raises(ValueError):
        FlowConfig(matching="block")


def test_eval_prints_the_matching_alone_beside_the_head(encoder):
    """`evaluate` scores a head that reads the shared matching against the matching alone: with an
    untrained refiner (output = the matching flow) both columns are equal; at the input size."""
    from l4p_framework.data.synth4d.dataset import Synth4D
    from l4p_framework.evaluation import evaluate

    model = model_with(encoder, SHARED)
    data = Synth4D("test", num_frames=8, height=48, width=80, num_queries=4)
    results = evaluate(model, data, ["flow"], num_clips=1)["flow"]
    assert results["model"]["epe"] == pytest.approx(results["matching"]["epe"], abs=1e-6)
    assert results["model"]["epe"] < results["baseline"]["epe"]  # DIS beats zero flow
