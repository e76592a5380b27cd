"""The rigid-motion residual of `matching: shared` on exact flow fields, and the fused motion head."""

from __future__ import annotations

import math

import pytest
import torch
from l4p_head_motion import motion_head_spec
from l4p_head_motion.geometry import rigid_residual

from l4p_framework import L4P, ConfigError, InputError
from l4p_framework.matching import MatchFeatures
from l4p_framework.testing import tiny_encoder

H, W, T = 120, 160, 8
K = torch.tensor([[140.0, 0.0, 80.0], [0.0, 140.0, 60.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _flow(camera: torch.Tensor, square_shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward and forward flow (2, T, H, W) of a camera moving by `camera` (3,) per frame in front of
    a scene whose depth varies 2..6, with a 30x30 square at rows/cols 40-70 that also slides
    `square_shift` pixels per frame to the right (an object moving in the world); and its mask (H, W)."""
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    depth = (2 + 4 * (0.5 + 0.5 * torch.sin(xs / 9.0) * torch.cos(ys / 13.0))).double()
    rays = torch.stack([xs, ys, torch.ones_like(xs)], -1).double() @ torch.linalg.inv(K).T
    points = depth[..., None] * rays  # camera t coordinates; the camera moves by +camera per frame

    def image_motion(sign: int) -> torch.Tensor:
        other = points - sign * camera.double()  # the same points in camera t + sign
        pixels = other @ K.T
        uv = pixels[..., :2] / pixels[..., 2:]
        return torch.stack([uv[..., 0] - xs, uv[..., 1] - ys], 0).float()

    square = torch.zeros(H, W, dtype=torch.bool)
    square[40:70, 40:70] = True
    backward, forward = image_motion(-1), image_motion(1)
    backward[1, square] -= square_shift
    forward[1, square] += square_shift
    backward = backward[:, None].expand(2, T, H, W).clone()
    forward = forward[:, None].expand(2, T, H, W).clone()
    backward[:, 0] = 0
    forward[:, -1] = 0
    return (backward, forward), square


def _matches(backward: torch.Tensor, forward: torch.Tensor) -> MatchFeatures:
    none = torch.zeros(1, 1, T, H, W, dtype=torch.bool)
    return MatchFeatures(forward[None], backward[None], none, none.clone(), torch.ones(1, 1, T, H, W))


@pytest.mark.parametrize(
    "camera",
    [torch.tensor([0.02, 0.0, 0.0]), torch.tensor([0.0, 0.01, 0.03]), torch.zeros(3)],
    ids=["sideways", "forward", "still"],
)
def test_a_moving_object_stands_out_of_a_rigid_scene(camera):
    """Sideways, forward or no camera motion: the sliding square's residual is far above the static
    scene's (the scene's own parallax from its varying depth fits the epipolar geometry)."""
    (backward, forward), square = _flow(camera, square_shift=1.0)
    residual = rigid_residual(_matches(backward, forward))[0, 0]
    assert residual.shape == (T, H, W)
    inner = torch.zeros_like(square)
    inner[45:65, 45:65] = True
    far = torch.ones_like(square)
    far[30:80, 30:80] = False
    for f in range(T):
        moving, static = residual[f][inner], residual[f][far]
        assert float(moving.median()) > 5 * max(float(static.median()), 0.5), (
            f,
            float(moving.median()),
            float(static.median()),
        )
        assert float(static.quantile(0.9)) < 2.0, f  # thousandths of the diagonal: < 0.4 px here


def test_residual_units_are_thousandths_of_the_diagonal():
    """A still camera and a square sliding 2 px per frame: over the 4-frame gap it is 8 px off the
    identity homography, 8 / 200 px diagonal = 40 thousandths (the box average blurs its edges only)."""
    (backward, forward), _ = _flow(torch.zeros(3), square_shift=2.0)
    residual = rigid_residual(_matches(backward, forward), gaps=(4,))[0, 0]
    assert float(residual[6, 50:60, 50:60].mean()) == pytest.approx(8 / math.hypot(H, W) * 1000, rel=0.1)


def test_a_single_frame_or_a_textureless_window_gives_no_evidence():
    (backward, forward), _ = _flow(torch.tensor([0.02, 0.0, 0.0]), square_shift=1.0)
    one = rigid_residual(_matches(backward, forward))[:, :, :1]
    single = MatchFeatures(
        *(x[:, :, :1] for x in (forward[None], backward[None])),
        *(torch.zeros(1, 1, 1, H, W, dtype=torch.bool),) * 2,
        torch.ones(1, 1, 1, H, W),
    )
    assert torch.equal(rigid_residual(single), torch.zeros(1, 1, 1, H, W))
    assert one.abs().sum() > 0
    blank = _matches(backward, forward)
    blank.confidence.zero_()
    assert torch.equal(rigid_residual(blank), torch.zeros(1, 1, T, H, W))


def test_each_gap_gets_its_own_channel():
    """Gaps 2 and 4: two channels; a still camera and a square sliding 1 px per frame is 2 and 4 px off
    the identity over them (the 4-frame residual about twice the 2-frame one)."""
    (backward, forward), _ = _flow(torch.zeros(3), square_shift=1.0)
    residual = rigid_residual(_matches(backward, forward), gaps=(2, 4))[0]
    assert residual.shape == (2, T, H, W)
    ratio = residual[1, 6, 50:60, 50:60].mean() / residual[0, 6, 50:60, 50:60].mean()
    assert float(ratio) == pytest.approx(2.0, rel=0.1)


def test_the_fused_head_outputs_at_the_input_resolution_and_needs_the_matching():
    """With matching "shared" the composed model computes the matching once per window and the head
    returns logits at the input resolution (frames below residual_min_side keep the decoder's
    logits, the same as matching "none"); a bare call without the matching is a clear error."""
    torch.manual_seed(0)
    encoder = tiny_encoder()
    video = torch.rand(1, 3, 8, 48, 80)
    outputs = {}
    for name, params in {
        "none": {},
        "small frames": {"matching": "shared"},
        "fused": {"matching": "shared", "residual_min_side": 0},
    }.items():
        model = L4P(encoder)
        torch.manual_seed(1)
        model.add_head(motion_head_spec(), params)
        with torch.no_grad():
            outputs[name] = model(video)["motion"]["motion"]
        assert outputs[name].shape == (1, 1, 8, 48, 80) and bool(torch.isfinite(outputs[name]).all())
    assert model.uses_matching("motion")
    torch.testing.assert_close(outputs["small frames"], outputs["none"])
    assert not torch.allclose(outputs["fused"], outputs["none"])
    layers = model.layers_of(model.specs["motion"], model.configs["motion"])
    features = model.encoder(torch.rand(1, 3, 8, 64, 64), layers)
    with pytest.raises(InputError, match="shared frame matching"):
        model.heads["motion"](features, {})


@pytest.mark.parametrize(
    "params, match",
    [
        ({"fusion": (1.0, 0.0)}, "fusion needs 4 weights"),
        ({"residual_gaps": (2, 2), "fusion": (1, 1, 1, 0)}, "distinct"),
    ],
)
def test_a_fusion_that_does_not_fit_its_gaps_is_a_config_error(params, match):
    with pytest.raises(ConfigError, match=match):
        L4P(tiny_encoder()).add_head(motion_head_spec(), {"matching": "shared", **params})
