"""The normals head plugin: contract, unit outputs, loss and metric values, baseline, stitching,
visualisation, checkpoints, config and input errors, all on the tiny encoder."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from l4p_head_normals import (
    NormalsConfig,
    camera_facing_baseline,
    normals_head_spec,
    normals_loss_terms,
)
from l4p_head_normals import plugin as normals_plugin

from l4p_framework import L4P, ConfigError, InputError, load_head, save_head
from l4p_framework.metrics import normal_metrics
from l4p_framework.testing import assert_head_contract, fit_fixed_batch, fresh_host, tiny_batch, tiny_encoder
from l4p_framework.viz import normals_to_color

torch.set_num_threads(1)
FAST = {"layer_dims": (8, 8, 16, 16), "feature_dim": 8, "last_dim": 8}
"""Narrow decoder widths for the slower tests."""
SRC = Path(__file__).resolve().parents[1] / "src" / "l4p_head_normals"
PUBLIC = {
    "l4p_framework",
    "l4p_framework.blocks",
    "l4p_framework.metrics",
    "l4p_framework.viz",
    "l4p_framework.testing",
    "l4p_framework.stitching",
}


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture(scope="module")
def batch():
    return tiny_batch()


def model_with(encoder, config=None) -> L4P:
    model = L4P(encoder)
    model.add_head(normals_head_spec(), config or {})
    return model


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def test_plugin_uses_only_the_public_api():
    """Every l4p import of the plugin's source is `l4p_framework` or one of its public subpackages."""
    used = set()
    for path in SRC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                used.add(node.module)
            elif isinstance(node, ast.Import):
                used.update(a.name for a in node.names)
    l4p = {m for m in used if m.split(".")[0] == "l4p_framework"}
    assert l4p and l4p <= PUBLIC, sorted(l4p - PUBLIC)


def test_contract_and_unit_normals(encoder, batch):
    out = assert_head_contract(normals_head_spec(), encoder, batch)
    n = out["normals"]
    assert n.shape == (1, 3, 8, 64, 64)
    torch.testing.assert_close(n.norm(dim=1), torch.ones(1, 8, 64, 64), rtol=0, atol=1e-5)


def test_registered_in_memory_and_by_entry_point():
    assert list(fresh_host(normals_plugin).heads()) == ["normals"]
    spec = fresh_host(entrypoints=True).heads()["normals"]
    assert spec.distribution == "l4p-head-normals"
    assert spec.targets == ("normals",)
    assert [o.name for o in spec.outputs] == ["normals"]


def test_synth4d_ground_truth_is_unit_and_faces_the_camera(batch):
    gt = batch["normals"]
    torch.testing.assert_close(gt.norm(dim=1), torch.ones(1, 8, 64, 64), rtol=0, atol=1e-4)
    # a visible surface faces the camera: its normal points against the viewing ray through its pixel
    k = batch["intrinsics"][0, 0]  # (3, 3) pixels, pixel centres at +0.5
    v, u = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    ray = torch.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], torch.ones_like(u)])
    facing = (gt[0] * ray[:, None]).sum(0)  # (T, H, W)
    assert (facing < 1e-4).all()


def test_shapes_clip_short_and_windowed(encoder):
    """8 frames = one window; 5 frames are ping-pong padded; 20 frames = overlapping windows."""
    model = model_with(encoder, FAST)
    torch.manual_seed(0)
    video = torch.rand(1, 3, 20, 64, 64)
    with torch.no_grad():
        clip = model(video[:, :, :8])["normals"]["normals"]
        short = model(video[:, :, :5])["normals"]["normals"]
        full = model(video)["normals"]["normals"]
    assert clip.shape == (1, 3, 8, 64, 64)
    assert short.shape == (1, 3, 5, 64, 64)
    assert full.shape == (1, 3, 20, 64, 64)
    torch.testing.assert_close(full.norm(dim=1), torch.ones(1, 20, 64, 64), rtol=0, atol=1e-5)
    assert torch.equal(full[:, :, :4], clip[:, :, :4])


def test_loss_known_values():
    gt = _unit(torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, -1.0], [0.0, 0.0, -1.0]]))
    gt = gt.T.reshape(1, 3, 1, 2, 2)
    valid = torch.ones(1, 1, 1, 2, 2, dtype=torch.bool)
    # perfect prediction (any positive length): both terms 0
    cos, l1 = normals_loss_terms(gt * 3.0, gt, valid)
    assert cos.item() == pytest.approx(0.0, abs=1e-7) and l1.item() == pytest.approx(0.0, abs=1e-7)
    # opposite prediction: 1 - cos = 2; |n - (-n)|_1 = 2 |n|_1 (1, 1, sqrt 2, 1 for these normals)
    cos, l1 = normals_loss_terms(-gt, gt, valid)
    assert cos.item() == pytest.approx(2.0, rel=1e-6)
    assert l1.item() == pytest.approx(2.0 * (3 + math.sqrt(2)) / 4, rel=1e-6)
    # 90 degrees everywhere: 1 - cos = 1; |(1,0,0) - (0,0,-1)|_1 = 2
    pred = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1, 1).expand(1, 3, 1, 2, 2)
    flat = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1, 1).expand(1, 3, 1, 2, 2)
    cos, l1 = normals_loss_terms(pred, flat, valid)
    assert cos.item() == pytest.approx(1.0) and l1.item() == pytest.approx(2.0)


def test_loss_ignores_invalid_pixels_and_reads_depth_valid(batch):
    spec, config = normals_head_spec(), NormalsConfig()
    gt = batch["normals"]
    pred = gt.clone()
    pred[..., :32, :] = torch.randn_like(pred[..., :32, :])  # wrong only in the top half
    depth_valid = torch.zeros(1, 1, 8, 64, 64, dtype=torch.bool)
    depth_valid[..., 32:, :] = True
    assert spec.loss({"normals": pred}, {**batch, "depth_valid": depth_valid}, config)["loss"].item() == (
        pytest.approx(0.0, abs=1e-6)
    )
    assert spec.loss({"normals": pred}, batch, config)["loss"].item() > 0.5
    # zero (and non-finite) GT is invalid too, and never poisons the gradient
    broken = gt.clone()
    broken[..., :16, :] = 0.0
    broken[..., 16:32, :] = float("nan")
    pred = pred.requires_grad_(True)
    out = spec.loss({"normals": pred}, {**batch, "normals": broken, "depth_valid": None}, config)
    assert torch.isfinite(out["loss"]) and out["loss"].item() == pytest.approx(0.0, abs=1e-6)
    out["loss"].backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[..., :32, :].abs().sum() == 0


def test_loss_weights_and_no_valid_pixels(batch):
    spec = normals_head_spec()
    pred = {"normals": -batch["normals"]}
    only_cos = spec.loss(pred, batch, NormalsConfig(l1_weight=0.0))
    assert only_cos["loss"].item() == pytest.approx(2.0, rel=1e-5)
    both = spec.loss(pred, batch, NormalsConfig(cosine_weight=0.5, l1_weight=2.0))
    assert both["loss"].item() == pytest.approx(
        0.5 * both["cosine"].item() + 2.0 * both["l1"].item(), rel=1e-6
    )
    x = torch.randn(1, 3, 8, 64, 64, requires_grad=True)
    none = spec.loss(
        {"normals": x},
        {**batch, "depth_valid": torch.zeros(1, 1, 8, 64, 64, dtype=torch.bool)},
        NormalsConfig(),
    )
    assert none["loss"].item() == 0.0
    none["loss"].backward()  # still differentiable
    assert x.grad is not None and x.grad.abs().sum() == 0


def test_loss_decreases_on_a_fixed_batch(encoder, batch):
    losses = fit_fixed_batch(model_with(encoder, FAST), "normals", batch, lr=3e-3)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0], losses


def test_metrics_known_values_and_keys(batch):
    spec = normals_head_spec()
    gt = batch["normals"]
    m = spec.metrics({"normals": gt * 2.0}, batch)
    assert set(m) == {"mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"}
    assert m["mean_angle"] == pytest.approx(0.0, abs=0.05) and m["within_11.25"] == 1.0
    # every normal tilted by 20 degrees towards a perpendicular direction: error 20 degrees everywhere
    a = math.radians(20.0)
    other = torch.tensor([0.3, 0.5, 0.8]).view(1, 3, 1, 1, 1).expand_as(gt)
    perpendicular = _unit(torch.linalg.cross(gt, other, dim=1))
    turned = math.cos(a) * gt + math.sin(a) * perpendicular
    m = spec.metrics({"normals": turned}, batch)
    assert m["mean_angle"] == pytest.approx(20.0, abs=1e-3)
    assert m["median_angle"] == pytest.approx(20.0, abs=1e-3)
    assert (m["within_11.25"], m["within_22.5"], m["within_30"]) == (0.0, 1.0, 1.0)
    # depth_valid restricts the pixels: the metrics are those of the valid half
    depth_valid = torch.zeros(1, 1, 8, 64, 64, dtype=torch.bool)
    depth_valid[..., 32:, :] = True
    wrong = gt.clone()
    wrong[..., :32, :] = -wrong[..., :32, :]
    half = spec.metrics({"normals": wrong}, {**batch, "depth_valid": depth_valid})
    assert half["mean_angle"] == pytest.approx(0.0, abs=0.05)
    assert spec.metrics({"normals": wrong}, batch)["mean_angle"] == pytest.approx(90.0, abs=0.1)


def test_camera_facing_baseline(batch):
    spec = normals_head_spec()
    base = spec.baseline(batch)["normals"]
    assert base is not None and base.shape == (1, 3, 8, 64, 64) and base.dtype == torch.float32
    assert torch.equal(base[:, 2], -torch.ones(1, 8, 64, 64)) and not base[:, :2].any()
    m = spec.metrics({"normals": base}, batch)
    assert m == pytest.approx(normal_metrics(base, batch["normals"], batch["depth_valid"]))
    assert 0.0 < m["mean_angle"] < 90.0
    assert camera_facing_baseline is spec.baseline
    with pytest.raises(InputError, match=r"baseline needs batch\['video'\]"):
        spec.baseline({"normals": batch["normals"]})


def test_stitcher_overwrites_the_overlap():
    stitcher = normals_head_spec().stitcher(NormalsConfig())
    first = _unit(torch.randn(1, 3, 8, 4, 5))
    second = _unit(torch.randn(1, 3, 8, 4, 5))
    state = stitcher.merge(None, {"normals": first}, 0, 0)
    state = stitcher.merge(state, {"normals": second}, 4, 4)
    out = stitcher.finalize(state)["normals"]
    assert out.shape == (1, 3, 12, 4, 5)
    assert torch.equal(out[:, :, :4], first[:, :, :4]) and torch.equal(out[:, :, 4:], second)


def test_visualize_rgb_normal_maps(batch):
    spec = normals_head_spec()
    pred = _unit(torch.randn(1, 3, 8, 64, 64))
    images = spec.visualize({"normals": pred}, batch)
    assert set(images) == {"normals", "normals_gt"}
    assert len(images["normals"]) == 8 and images["normals"][0].shape == (64, 64, 3)
    assert images["normals"][0].dtype.name == "uint8"
    assert (images["normals_gt"][3] == normals_to_color(batch["normals"][0, :, 3])).all()
    # (0, 0, -1) -> RGB (128, 128, 0)
    flat = spec.visualize(spec.baseline(batch), {})
    assert set(flat) == {"normals"} and flat["normals"][0][0, 0].tolist() == [128, 128, 0]


def test_save_load_round_trip_is_bitwise(encoder, batch, tmp_path):
    model = model_with(encoder, FAST)
    spec, config = model.specs["normals"], model.configs["normals"]
    features = model.encode(batch["video"])
    path = tmp_path / "normals.safetensors"
    save_head(path, model.heads["normals"], spec, config, encoder.info)
    loaded, loaded_config, meta = load_head(path, spec, encoder.info)
    assert loaded_config == config and meta["head"] == "normals"
    with torch.no_grad():
        a = model.heads["normals"](features, batch)["normals"]
        b = loaded(features, batch)["normals"]
    assert torch.equal(a, b)


def test_config_errors(encoder):
    with pytest.raises(ConfigError, match="both 0"):
        model_with(encoder, {"cosine_weight": 0.0, "l1_weight": 0.0})
    with pytest.raises(ConfigError, match="cosine_weight"):
        model_with(encoder, {"cosine_weight": -1.0})
    with pytest.raises(ConfigError, match="unknown key"):
        model_with(encoder, {"l1": 1.0})


def test_wrong_shapes_raise_clear_errors(batch):
    spec, config = normals_head_spec(), NormalsConfig()
    pred = {"normals": batch["normals"].clone()}
    with pytest.raises(
        InputError, match=r"batch\['normals'\] must have shape \(B, 3, T, H, W\) = \(1, 3, 8, 64, 64\)"
    ):
        spec.loss(pred, {**batch, "normals": batch["normals"][:, :2]}, config)
    with pytest.raises(InputError, match=r"batch\['depth_valid'\] must have shape \(B, 1, T, H, W\)"):
        spec.metrics(pred, {**batch, "depth_valid": batch["depth_valid"][..., :32]})
    with pytest.raises(InputError, match=r"batch has no 'normals'"):
        spec.loss(pred, {"video": batch["video"]}, config)
    with pytest.raises(InputError, match=r"outputs\['normals'\] must be \(B, 3, T, H, W\)"):
        spec.loss({"normals": batch["normals"][0]}, batch, config)
    with pytest.raises(InputError, match=r"outputs have no 'normals'"):
        spec.metrics({"depth": batch["depth"]}, batch)
