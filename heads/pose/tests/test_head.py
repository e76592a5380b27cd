"""Contract, shapes, plugin registration, official key map, visualisation and export of the pose head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from l4p_head_pose import (
    OFFICIAL_MODULE,
    PoseConfig,
    PoseHead,
    official_key_map,
    pose_head_spec,
    save_pose_outputs,
)
from pydantic import ValidationError

from l4p_framework import L4P
from l4p_framework.blocks import DPT3D, dpt3d_official_rays, l4p_dense_head_to_official
from l4p_framework.encoder.config import PRESETS
from l4p_framework.errors import WeightsError
from l4p_framework.geometry import load_intrinsics_json, load_tum
from l4p_framework.specs import EncoderInfo
from l4p_framework.testing import assert_head_contract, fresh_host, tiny_batch, tiny_encoder


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


def test_contract(encoder):
    out = assert_head_contract(pose_head_spec(), encoder=encoder)
    assert out["rays"].shape == (1, 6, 8, 8, 8)  # one ray per token cell (8x8) and frame


def test_contract_per_frame_and_moment_scale(encoder):
    config = PoseConfig(intrinsics_mode="per_frame", moment_scale=10.0, use_batch_intrinsics=False)
    out = assert_head_contract(pose_head_spec(), encoder=encoder, config=config)
    assert torch.allclose(out["poses"][:, 0], torch.eye(4).expand(1, 4, 4), atol=1e-6)


def test_config_is_strict():
    with pytest.raises(ValidationError):
        PoseConfig(intrinsic_mode="fixed")
    with pytest.raises(ValidationError):
        PoseConfig(intrinsics_mode="known")  # known K comes from the batch, not the config
    with pytest.raises(ValidationError):
        PoseConfig(moment_scale=0.0)


@pytest.mark.parametrize("frames", [8, 20])
def test_shapes_through_l4p_forward(encoder, frames):
    model = L4P(encoder, window_stride=4)
    model.add_head(pose_head_spec())
    video = tiny_batch(frames=frames)["video"]
    with torch.no_grad():
        out = model(video)["pose"]
    assert out["rays"].shape == (1, 6, frames, 8, 8)
    assert out["poses"].shape == (1, frames, 4, 4)
    assert out["intrinsics"].shape == (1, frames, 3, 3)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())
    assert torch.allclose(out["poses"][0, 0], torch.eye(4), atol=1e-6)  # world = first camera of the video
    rot = out["poses"][0, :, :3, :3]
    assert torch.allclose(rot @ rot.mT, torch.eye(3).expand_as(rot), atol=1e-5)  # rigid
    # fixed mode: one K for the whole video (the first window's estimate)
    assert torch.equal(out["intrinsics"][0], out["intrinsics"][0, :1].expand(frames, 3, 3))


def test_short_clip_is_padded_and_cropped(encoder):
    model = L4P(encoder)
    model.add_head(pose_head_spec())
    with torch.no_grad():
        out = model(tiny_batch(frames=5)["video"])["pose"]
    assert out["poses"].shape == (1, 5, 4, 4) and out["rays"].shape[2] == 5


def test_registered_through_entry_point():
    host = fresh_host(entrypoints=True)
    spec = host.get_head("pose")
    assert spec.distribution == "l4p-head-pose"
    assert spec.targets == ("intrinsics", "poses") and spec.inputs == ("intrinsics",)
    assert [o.name for o in spec.outputs] == ["rays", "poses", "intrinsics"]


def _official_info() -> EncoderInfo:
    c = PRESETS["l4p-vitg14"]
    return EncoderInfo(
        c.name, c.width, c.depth, c.num_heads, c.patch_size, c.tubelet, c.num_frames, c.image_size
    )


def test_official_ray_head_keys_on_meta():
    info = _official_info()
    config = PoseConfig(preset="official")
    assert config.hook_layers(info) == (14, 21, 28, 36)
    with torch.device("meta"):
        head = PoseHead(info, config)
        reference = DPT3D(
            dpt3d_official_rays(), encoder_width=1408, token_grid=(8, 16, 16), patch=(2, 14, 14)
        )
    assert head.grid == (16, 16) and head.dpt.native_size == (16, 16, 16)
    prefix = f"l4p_model.task_heads.{OFFICIAL_MODULE}."
    official = {prefix + k: v for k, v in l4p_dense_head_to_official(reference.state_dict()).items()}
    official["l4p_model.video_encoder.blocks.0.norm1.weight"] = torch.empty(1408, device="meta")  # ignored
    assert sum(k.startswith(prefix) for k in official) == 68
    assert official[prefix + "task_head.dpt.head2.2.weight"].shape == (6, 128, 1, 1, 1)
    mapped = official_key_map(official)
    assert len(mapped) == 64 and all(k.startswith("dpt.") for k in mapped)
    head.load_state_dict(mapped, strict=True, assign=True)
    assert sum(p.numel() for p in head.parameters()) == 82_307_590
    # already-stripped keys work too; a mismatched alias is refused
    stripped = {k[len(prefix) :]: v for k, v in official.items() if k.startswith(prefix)}
    assert official_key_map(stripped).keys() == mapped.keys()
    cpu = {k: torch.zeros(v.shape) for k, v in stripped.items() if "head2" in k or "layer1_rn" in k}
    cpu["task_head.dpt.scratch.layer_rn.0.weight"] = torch.ones(
        cpu["task_head.dpt.scratch.layer1_rn.weight"].shape
    )
    with pytest.raises(WeightsError):
        official_key_map(cpu)


def test_visualize_and_export(tmp_path, encoder):
    spec = pose_head_spec()
    model = L4P(encoder)
    model.add_head(spec)
    batch = tiny_batch()
    with torch.no_grad():
        out = model(batch["video"])["pose"]
    images = spec.visualize(out, batch)
    assert images["trajectory"].dtype == np.uint8 and images["trajectory"].shape == (256, 512, 3)
    alone = spec.visualize(out, {})
    assert alone["trajectory"].shape == (256, 512, 3)
    paths = save_pose_outputs(out, tmp_path, image_size=(64, 64), fps=10.0)
    ts, poses = load_tum(paths["trajectory"])
    assert torch.allclose(ts, torch.arange(8, dtype=torch.float64) / 10.0)
    assert torch.allclose(poses.float(), out["poses"][0], atol=1e-5)
    K, size = load_intrinsics_json(paths["intrinsics"])
    assert size == (64, 64) and torch.allclose(K.float(), out["intrinsics"][0], atol=1e-5)
    assert "convention" in json.loads(paths["intrinsics"].read_text())
