"""The motion head plugin: contract, shapes (clip and windowed), training, checkpoints, official layout,
stitching, visualisation and input errors, all on the tiny encoder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from l4p_head_motion import MotionConfig, motion_head_spec
from l4p_head_motion import plugin as motion_plugin

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
    model.add_head(motion_head_spec(), config or {})
    return model


def test_contract(encoder, batch):
    out = assert_head_contract(motion_head_spec(), encoder, batch)
    assert out["motion"].shape == (1, 1, 8, 64, 64)


def test_registered_in_memory_and_by_entry_point():
    assert list(fresh_host(motion_plugin).heads()) == ["motion"]
    spec = fresh_host(entrypoints=True).heads()["motion"]
    assert spec.distribution == "l4p-head-motion"
    assert spec.targets == ("motion_mask",)


def test_shapes_clip_short_and_windowed(encoder):
    """20 frames -> windows at 0, 4, 8, 12; later windows overwrite their whole span."""
    model = model_with(encoder, FAST)
    torch.manual_seed(0)
    video = torch.rand(1, 3, 20, 64, 64)
    with torch.no_grad():
        full = model(video)["motion"]["motion"]
        first = model(video[:, :, :8])["motion"]["motion"]
        last = model(video[:, :, 12:])["motion"]["motion"]
        short = model(video[:, :, :5])["motion"]["motion"]
    assert full.shape == (1, 1, 20, 64, 64)
    assert first.shape == (1, 1, 8, 64, 64) and short.shape == (1, 1, 5, 64, 64)
    assert torch.equal(full[:, :, :4], first[:, :, :4])
    assert torch.equal(full[:, :, 12:], last)


def test_stitcher_overwrites():
    stitcher = motion_head_spec().stitcher(MotionConfig())
    state = stitcher.merge(None, {"motion": torch.full((1, 1, 8, 2, 2), -1.0)}, 0, 0)
    state = stitcher.merge(state, {"motion": torch.full((1, 1, 8, 2, 2), 3.0)}, 4, 4)
    assert stitcher.finalize(state)["motion"][0, 0, :, 0, 0].tolist() == [-1.0] * 4 + [3.0] * 8


def test_loss_decreases_on_a_fixed_batch(encoder, batch):
    losses = fit_fixed_batch(model_with(encoder, FAST), "motion", batch)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0], losses


def test_loss_known_values_and_pos_weight():
    spec = motion_head_spec()
    target = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 2, 2)
    logits = torch.zeros(1, 1, 1, 2, 2)
    assert spec.loss({"motion": logits}, {"motion_mask": target}, MotionConfig())[
        "loss"
    ].item() == pytest.approx(math.log(2.0))
    # pos_weight 3 weights the single positive pixel 3x: (3 + 1 + 1 + 1) / 4 * log 2 at a decoder
    # output of 0, i.e. a calibrated logit of -log 3 (the loss adds log pos_weight back)
    calibrated = logits - math.log(3.0)
    weighted = spec.loss({"motion": calibrated}, {"motion_mask": target.bool()}, MotionConfig(pos_weight=3.0))
    assert weighted["loss"].item() == pytest.approx(1.5 * math.log(2.0))
    logits = torch.randn(1, 1, 2, 4, 4)
    target = (torch.rand(1, 1, 2, 4, 4) > 0.5).float()
    expected = F.binary_cross_entropy_with_logits(logits, target)
    assert spec.loss({"motion": logits}, {"motion_mask": target}, MotionConfig())[
        "loss"
    ].item() == pytest.approx(expected.item())


def test_iou_known_values():
    spec = motion_head_spec()
    gt = torch.zeros(1, 1, 2, 4, 4)
    gt[..., :2, :] = 1.0  # 16 moving pixels
    logits = torch.full_like(gt, -5.0)
    logits[..., :1, :] = 5.0  # 8 predicted, all inside
    logits[0, 0, 0, 3, 0] = 5.0  # one false positive
    assert spec.metrics({"motion": logits}, {"motion_mask": gt})["iou"] == pytest.approx(8 / 17)
    assert spec.metrics({"motion": (gt - 0.5) * 10}, {"motion_mask": gt})["iou"] == 1.0


def test_visualisation_overlays_the_video(batch):
    logits = torch.full_like(batch["motion_mask"], -5.0)
    logits[..., :8, :8] = 5.0
    images = motion_head_spec().visualize({"motion": logits}, batch)
    assert len(images["motion"]) == 8 and len(images["motion_gt"]) == 8
    frame0 = (batch["video"][0, :, 0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    img = images["motion"][0]
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    np.testing.assert_array_equal(img[8:, 8:], frame0[8:, 8:])  # untouched outside the mask
    assert not np.array_equal(img[:8, :8], frame0[:8, :8])


def test_save_load_round_trip_is_bitwise(encoder, batch, tmp_path):
    model = model_with(encoder, {"pos_weight": 4.0})
    spec, config = model.specs["motion"], model.configs["motion"]
    features = model.encode(batch["video"])
    path = tmp_path / "motion.safetensors"
    save_head(path, model.heads["motion"], spec, config, encoder.info)
    loaded, loaded_config, _ = load_head(path, spec, encoder.info)
    assert loaded_config.pos_weight == 4.0
    with torch.no_grad():
        assert torch.equal(
            model.heads["motion"](features, batch)["motion"], loaded(features, batch)["motion"]
        )


def test_official_layout_on_meta_device():
    """preset="official" on l4p-vitg14: the official dyn_mask keys, shapes and parameter count."""
    with torch.device("meta"):
        info = VideoEncoder(get_preset("l4p-vitg14")).info
        spec, config = motion_head_spec(), MotionConfig(preset="official")
        head = spec.build(info, config)
    assert list(spec.layers(info, config)) == [14, 21, 28, 36]
    official = dense_head_to_official(head.state_dict())
    assert len(official) == 68
    assert {k: tuple(v.shape) for k, v in official.items()} == official_dense_head_shapes(1)
    assert sum(p.numel() for p in head.parameters()) == 85_845_889
    converted = spec.official_key_map(official)
    assert converted.keys() == head.state_dict().keys()
    head.load_state_dict(converted, strict=True, assign=True)


@pytest.mark.parametrize(
    "video, match",
    [
        (
            torch.rand(1, 3, 8, 64, 64, 1),
            r"video must have shape \(B, 3, T, H, W\).*got \(1, 3, 8, 64, 64, 1\)",
        ),
        (torch.full((1, 3, 8, 64, 64), float("nan")), r"video \(B, 3, T, H, W\).*NaN or infinite"),
        (torch.rand(1, 3, 0, 64, 64), r"video has no frames"),
    ],
    ids=["rank", "nan", "no_frames"],
)
def test_bad_videos_raise_clear_errors(encoder, video, match):
    with pytest.raises(L4PError, match=match):
        model_with(encoder)(video)


def test_fewer_frames_than_a_tubelet_through_the_encoder(encoder):
    with pytest.raises(InputError, match=r"video has 1 frames.*tubelet \(2\)"):
        encoder(torch.rand(1, 3, 1, 64, 64), [1])


def test_wrong_target_shapes_and_config_raise_clear_errors(encoder, batch):
    spec, config = motion_head_spec(), MotionConfig()
    pred = {"motion": torch.zeros_like(batch["motion_mask"])}
    with pytest.raises(
        InputError, match=r"batch\['motion_mask'\] must have shape \(B, 1, T, H, W\) = \(1, 1, 8, 64, 64\)"
    ):
        spec.loss(pred, {**batch, "motion_mask": batch["motion_mask"][:, 0]}, config)
    with pytest.raises(InputError, match=r"batch has no 'motion_mask'"):
        spec.metrics(pred, {"video": batch["video"]})
    with pytest.raises(ConfigError, match="pos_weight"):
        model_with(encoder, {"pos_weight": -1.0})


@pytest.mark.parametrize("pos_weight", [None, 4.0])
def test_the_best_constant_output_is_the_true_moving_fraction_whatever_the_pos_weight(pos_weight):
    """The head's output is a calibrated logit: the constant that minimises the weighted loss on
    masks with 20 % moving pixels has sigmoid 0.2 (uncalibrated, pos_weight 4 would give 0.5)."""
    spec = motion_head_spec()
    target = torch.zeros(1, 1, 1, 5, 4)
    target[..., 0, :] = 1.0  # 4 of 20 pixels move
    constant = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([constant], lr=1.0, max_iter=100)

    def closure():
        optimizer.zero_grad()
        loss = spec.loss(
            {"motion": constant.expand_as(target)},
            {"motion_mask": target},
            MotionConfig(pos_weight=pos_weight),
        )["loss"]
        loss.backward()
        return loss

    optimizer.step(closure)
    assert float(torch.sigmoid(constant)) == pytest.approx(0.2, abs=1e-3)
