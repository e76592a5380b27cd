"""DPT3D: official key/shape/parameter tables on the meta device, and small real forward passes."""

from __future__ import annotations

import pydantic
import pytest
import torch

from l4p_framework.blocks import (
    DPT3D,
    DPT3D_OFFICIAL,
    DPT3DConfig,
    dpt3d_hook_layers,
    dpt3d_official,
    dpt3d_official_rays,
    dpt3d_small,
    l4p_dense_head_to_official,
)
from l4p_framework.errors import ConfigError, InputError

torch.set_num_threads(1)

OFFICIAL = dict(encoder_width=1408, token_grid=(8, 16, 16), patch=(2, 14, 14))


def unique_numel(module: torch.nn.Module) -> int:
    seen, n = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            n += t.numel()
    return n


def official_dense_table(c: int, rays: bool) -> dict[str, tuple[int, ...]]:
    """The §5.2 table, written out key by key."""
    p = "task_head.dpt."
    t = {
        "act_postprocess.0.0.weight": (256, 1408, 1, 1, 1),
        "act_postprocess.0.0.bias": (256,),
        "act_postprocess.0.1.weight": (256, 256, 2, 1, 1) if rays else (256, 256, 2, 4, 4),
        "act_postprocess.0.1.bias": (256,),
        "act_postprocess.1.0.weight": (512, 1408, 1, 1, 1),
        "act_postprocess.1.0.bias": (512,),
        "act_postprocess.1.1.weight": (512, 512, 2, 1, 1) if rays else (512, 512, 2, 2, 2),
        "act_postprocess.1.1.bias": (512,),
        "act_postprocess.2.0.weight": (1024, 1408, 1, 1, 1),
        "act_postprocess.2.0.bias": (1024,),
        "act_postprocess.3.0.weight": (1024, 1408, 1, 1, 1),
        "act_postprocess.3.0.bias": (1024,),
        "act_postprocess.3.1.weight": (1024, 1024, 3, 3, 3),
        "act_postprocess.3.1.bias": (1024,),
        "head1.0.weight": (128, 256, 3, 3, 3),
        "head1.0.bias": (128,),
        "head2.0.weight": (128, 128, 3, 3, 3),
        "head2.0.bias": (128,),
        "head2.2.weight": (c, 128, 1, 1, 1),
        "head2.2.bias": (c,),
    }
    for k, cin in zip(range(1, 5), (256, 512, 1024, 1024)):
        t[f"scratch.layer{k}_rn.weight"] = (256, cin, 3, 3, 3)
        t[f"scratch.layer_rn.{k - 1}.weight"] = (256, cin, 3, 3, 3)
        t[f"scratch.refinenet{k}.out_conv.weight"] = (256, 256, 1, 1, 1)
        t[f"scratch.refinenet{k}.out_conv.bias"] = (256,)
        for u in (1, 2):
            for v in (1, 2):
                t[f"scratch.refinenet{k}.resConfUnit{u}.conv{v}.weight"] = (256, 256, 3, 3, 3)
                t[f"scratch.refinenet{k}.resConfUnit{u}.conv{v}.bias"] = (256,)
    return {p + k: v for k, v in t.items()}


@pytest.mark.parametrize(
    "cfg, c, rays, params",
    [
        (dpt3d_official(1), 1, False, 85_845_889),
        (dpt3d_official(2), 2, False, 85_846_018),
        (dpt3d_official_rays(), 6, True, 82_307_590),
    ],
    ids=["depth_dynmask", "flow", "camray"],
)
def test_official_keys_shapes_and_counts(cfg, c, rays, params):
    with torch.device("meta"):
        head = DPT3D(cfg, **OFFICIAL)
    sd = l4p_dense_head_to_official(head.state_dict())
    assert len(sd) == 68
    assert {k: tuple(v.shape) for k, v in sd.items()} == official_dense_table(c, rays)
    assert unique_numel(head) == params


def _record_shapes(head: DPT3D, tokens, **kw) -> tuple[dict[str, tuple[int, ...]], torch.Tensor]:
    shapes: dict[str, tuple[int, ...]] = {}
    names = [f"act_postprocess.{i}" for i in range(4)]
    names += [f"scratch.layer{k}_rn" for k in range(1, 5)] + [f"scratch.refinenet{k}" for k in range(1, 5)]
    names += ["head1", "head2"]
    mods = dict(head.named_modules())
    hooks = [
        mods[n].register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
        for n in names
    ]
    out = head(tokens, **kw)
    for h in hooks:
        h.remove()
    return shapes, out


def test_official_intermediate_shapes_follow_spec_table():
    """§2.2 table: (C, T, H, W) of every stage for the standard variant."""
    with torch.device("meta"):
        head = DPT3D(DPT3D_OFFICIAL, **OFFICIAL)
        shapes, out = _record_shapes(head, [torch.empty(2, 2048, 1408) for _ in range(4)])
    assert shapes == {
        "act_postprocess.0": (256, 16, 64, 64),
        "act_postprocess.1": (512, 16, 32, 32),
        "act_postprocess.2": (1024, 8, 16, 16),
        "act_postprocess.3": (1024, 4, 8, 8),
        "scratch.layer1_rn": (256, 16, 64, 64),
        "scratch.layer2_rn": (256, 16, 32, 32),
        "scratch.layer3_rn": (256, 8, 16, 16),
        "scratch.layer4_rn": (256, 4, 8, 8),
        "scratch.refinenet4": (256, 8, 16, 16),
        "scratch.refinenet3": (256, 16, 32, 32),
        "scratch.refinenet2": (256, 16, 64, 64),
        "scratch.refinenet1": (256, 16, 128, 128),
        "head1": (128, 16, 128, 128),
        "head2": (1, 16, 224, 224),
    }
    assert out.shape == (2, 1, 16, 224, 224)
    assert head.native_size == (16, 128, 128)


def test_official_rays_intermediate_shapes_follow_spec():
    """§2.3: levels 16x16x16, 16x16x16, 8x16x16, 4x8x8; refinenet4 8x16x16; output (B, 6, 16, 16, 16)."""
    with torch.device("meta"):
        head = DPT3D(dpt3d_official_rays(), **OFFICIAL)
        shapes, out = _record_shapes(head, [torch.empty(1, 2048, 1408) for _ in range(4)])
    assert [shapes[f"act_postprocess.{i}"][1:] for i in range(4)] == [
        (16, 16, 16),
        (16, 16, 16),
        (8, 16, 16),
        (4, 8, 8),
    ]
    assert shapes["scratch.refinenet4"][1:] == (8, 16, 16)
    assert all(shapes[f"scratch.refinenet{k}"][1:] == (16, 16, 16) for k in (1, 2, 3))
    assert out.shape == (1, 6, 16, 16, 16)
    # The official fixed output_size (16, 16, 16) equals the native size: no resize either way.
    assert head.native_size == (16, 16, 16)


def test_small_standard_forward_and_backward():
    torch.manual_seed(0)
    head = DPT3D(dpt3d_small(out_channels=2), encoder_width=64, token_grid=(8, 8, 8), patch=(2, 14, 14))
    tokens = [torch.randn(1, 512, 64, requires_grad=True) for _ in range(4)]
    out = head(tokens)
    assert out.shape == (1, 2, 16, 112, 112)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tokens)
    no_grad = {n for n, p in head.named_parameters() if p.grad is None}
    # refinenet4 has no skip input: its RCU1 is kept for the checkpoint but unused.
    assert no_grad == {
        f"scratch.refinenet4.resConfUnit1.conv{i}.{w}" for i in (1, 2) for w in ("weight", "bias")
    }


def test_small_output_size_argument_and_token_order():
    torch.manual_seed(0)
    head = DPT3D(dpt3d_small(), encoder_width=32, token_grid=(2, 4, 4), patch=(2, 8, 8)).eval()
    tokens = [torch.randn(2, 32, 32) for _ in range(4)]
    assert head(tokens).shape == (2, 1, 4, 32, 32)
    assert head(tokens, output_size=(4, 20, 24)).shape == (2, 1, 4, 20, 24)
    # Batch elements are independent.
    with torch.no_grad():
        both = head(tokens)
        first = head([t[:1] for t in tokens])
    torch.testing.assert_close(both[:1], first, rtol=1e-5, atol=1e-5)


def test_small_rays_variant_on_token_grid():
    torch.manual_seed(0)
    head = DPT3D(dpt3d_small(rays=True), encoder_width=64, token_grid=(8, 8, 8), patch=(2, 14, 14))
    out = head([torch.randn(2, 512, 64) for _ in range(4)])
    assert head.config.out_channels == 6
    assert out.shape == (2, 6, 16, 8, 8)
    with pytest.raises(InputError, match="fixes output_size"):
        head([torch.randn(2, 512, 64) for _ in range(4)], output_size=(16, 112, 112))


def test_odd_grid_crops_only_the_stride_rounding():
    # level 3: ceil(7/2) = 4 -> refinenet4 x2 = 8, cropped to level 2's 7 (the official crop).
    head = DPT3D(dpt3d_small(), encoder_width=16, token_grid=(2, 7, 5), patch=(2, 4, 4))
    assert head.level_sizes[3] == (1, 4, 3)
    assert head.fusion_sizes[4] == (2, 8, 6)
    out = head([torch.randn(1, 70, 16) for _ in range(4)])
    assert out.shape == (1, 1, 4, 28, 20)


def test_incompatible_factors_raise_at_construction():
    cfg = dpt3d_small().model_copy(update={"fusion_scale_factors": ((1, 1, 1),) * 4})
    with pytest.raises(ConfigError, match="cannot fuse refinenet4"):
        DPT3D(cfg, encoder_width=16, token_grid=(8, 8, 8), patch=(2, 14, 14))
    # Level 1 upsampled x4 in H/W cannot meet refinenet3's x2 output.
    cfg = dpt3d_small().model_copy(
        update={"actpost_scale_factors": ((1, 2, 2), (1, 2, 2), (0, 0, 0), (-1, -1, -1))}
    )
    with pytest.raises(ConfigError, match="cannot fuse refinenet3.*level 1"):
        DPT3D(cfg, encoder_width=16, token_grid=(8, 8, 8), patch=(2, 14, 14))


def test_config_validation():
    kw = dict(layers=(1, 2, 3, 4), layer_dims=(8, 8, 8, 8), feature_dim=8, last_dim=8, out_channels=1)
    DPT3DConfig(**kw)
    with pytest.raises(pydantic.ValidationError):
        DPT3DConfig(**kw, typo=1)
    with pytest.raises(pydantic.ValidationError, match="mixes"):
        DPT3DConfig(**kw, actpost_scale_factors=((1, -1, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0)))
    with pytest.raises(pydantic.ValidationError, match=">= 1"):
        DPT3DConfig(**kw, fusion_scale_factors=((0, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1)))
    with pytest.raises(pydantic.ValidationError):
        DPT3DConfig(**{**kw, "layers": (4, 3, 2, 1)})
    assert DPT3DConfig(**kw, output_size=(4, 8, 8)).output_size == (4, 8, 8)


def test_mixed_zero_and_positive_factor_kernel():
    head = DPT3D(dpt3d_small(rays=True), encoder_width=16, token_grid=(2, 2, 2), patch=(2, 4, 4))
    convt = head.act_postprocess[0][1]
    assert isinstance(convt, torch.nn.ConvTranspose3d)
    assert convt.kernel_size == (2, 1, 1) and convt.stride == (2, 1, 1)


def test_bad_tokens_raise_input_error():
    head = DPT3D(dpt3d_small(), encoder_width=16, token_grid=(2, 2, 2), patch=(2, 4, 4))
    with pytest.raises(InputError, match="4 token layers"):
        head([torch.randn(1, 8, 16)] * 3)
    with pytest.raises(InputError, match=r"\(B, 8, 16\)"):
        head([torch.randn(1, 9, 16)] * 4)


def test_hook_layers():
    assert dpt3d_hook_layers(40) == (14, 21, 28, 36)
    assert dpt3d_hook_layers(12) == (4, 6, 8, 11)
    assert dpt3d_hook_layers(4) == (1, 2, 3, 4)
    assert dpt3d_hook_layers(2) == (1, 1, 1, 2)
    with pytest.raises(ConfigError):
        dpt3d_hook_layers(0)
