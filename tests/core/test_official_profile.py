"""The `official` profile (issue 21 item 2): registry field, `l4p run --profile`, squash resize, half-window
stride, head config overrides (pose overwrite, depth scale+shift), autocast dtype; the default "l4p"
profile changes nothing."""

import numpy as np
import pytest
import torch

from l4p_framework import L4P
from l4p_framework.cli.main import main
from l4p_framework.data.video import write_video
from l4p_framework.errors import InputError, RegistryError
from l4p_framework.plugins import get_plugin_host
from l4p_framework.profiles import autocast_dtype, check_profile, default_resize
from l4p_framework.registry import load_registry
from l4p_framework.results import load_results

pytest.importorskip("l4p_head_depth")
pytest.importorskip("l4p_head_pose")


def _registry(path, profile=None, stride=None):
    lines = ["schema_version: 1"]
    if profile is not None:
        lines.append(f"profile: {profile}")
    lines += ["encoder:", "  preset: tiny", "  precision: fp32"]
    if stride is not None:
        lines += ["window:", f"  stride: {stride}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _video(path, frames=10, size=(48, 80)):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[0], size[1] * 2, 3), dtype=np.uint8)
    return write_video(path, np.stack([base[:, t : t + size[1]] for t in range(frames)]), fps=10)


@pytest.fixture
def seen(monkeypatch):
    """Every window the model prepares: (start, resize mode, model-window size)."""
    calls = []
    original = L4P.window_batch

    def spy(self, batch, heads=None, resize=None):
        out = original(self, batch, heads, resize)
        calls.append((batch["window"].start, out["transform"].mode, tuple(out["video"].shape[-2:])))
        return out

    monkeypatch.setattr(L4P, "window_batch", spy)
    return calls


def _run(video, out, *extra):
    args = ["run", str(video), "--heads", "depth,pose", "--out", str(out), "--no-ply", "--no-preview"]
    assert main([*args, *extra]) == 0
    return load_results(out / video.stem)


def test_registry_profile_is_validated_and_defaults_to_l4p(tmp_path):
    assert load_registry(_registry(tmp_path / "a.yaml")).registry.profile == "l4p"
    assert load_registry(_registry(tmp_path / "b.yaml", "official")).registry.profile == "official"
    with pytest.raises(RegistryError) as err:
        load_registry(_registry(tmp_path / "c.yaml", "offical"))
    message = str(err.value)
    assert "profile" in message and "'l4p'" in message and "'official'" in message
    with pytest.raises(InputError, match="allowed: l4p, official"):
        check_profile("fast")
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(["run", "x.mp4", "--profile", "fast"])


def test_official_profile_squashes_uses_half_window_stride_and_returns_input_size(tmp_path, seen):
    video = _video(tmp_path / "clip.mp4", frames=16)
    registry = _registry(tmp_path / "registry.yaml", "official", stride=8)  # tiny: 8-frame windows
    results = _run(video, tmp_path / "out", "--registry", str(registry))
    assert [s for s, _, _ in seen] == [0, 4, 8]  # stride 8 // 2, not the registry's window.stride 8
    assert {(mode, size) for _, mode, size in seen} == {("squash", (64, 64))}
    assert results.meta["resize"] == "squash" and results.meta["profile"] == "official"
    assert results["depth/depth"].shape == (16, 48, 80)
    assert results["pose/poses"].shape == (16, 4, 4)

    seen.clear()  # --profile l4p on the official registry: letterbox and the registry's stride
    results = _run(video, tmp_path / "out2", "--registry", str(registry), "--profile", "l4p")
    assert [s for s, _, _ in seen] == [0, 8]
    assert {mode for _, mode, _ in seen} == {"letterbox"}
    assert results.meta["resize"] == "letterbox" and results.meta["profile"] == "l4p"

    seen.clear()  # an explicit --resize wins over the profile's
    _run(video, tmp_path / "out3", "--registry", str(registry), "--resize", "crop")
    assert {mode for _, mode, _ in seen} == {"crop"}


def test_the_profile_flag_overrides_a_registry_without_profile(tmp_path, seen):
    video = _video(tmp_path / "clip.mp4", frames=8)
    _run(video, tmp_path / "out", "--registry", "none", "--profile", "official")
    assert {mode for _, mode, _ in seen} == {"squash"}


def test_official_profile_overrides_the_heads_stitching_configs(tmp_path):
    from l4p_head_pose import PoseStitcher

    from l4p_framework.stitching import DisparityAffineStitcher

    for profile, blend, shift in (("l4p", True, False), ("official", False, True)):
        reg = _registry(tmp_path / f"{profile}.yaml", profile)
        model = L4P.from_registry(reg, heads=[], allow_untrained=True)
        host = get_plugin_host()
        model.add_head(host.get_head("pose"), {"chain_blend": True})  # the profile wins over params
        model.add_head(host.get_head("depth"))
        assert model.configs["pose"].chain_blend is blend
        assert model.configs["depth"].stitch_shift is shift
        pose = model.specs["pose"].stitcher(model.configs["pose"])
        depth = model.specs["depth"].stitcher(model.configs["depth"])
        assert isinstance(pose, PoseStitcher) and pose.blend is blend
        assert isinstance(depth, DisparityAffineStitcher) and depth.shift is shift


def _poses(translations):
    poses = torch.eye(4, dtype=torch.float64).repeat(1, len(translations), 1, 1)
    poses[0, :, :3, 3] = torch.tensor(translations, dtype=torch.float64)
    return poses


def test_pose_stitcher_overwrites_the_overlap_without_blend_and_cross_fades_by_default():
    from l4p_head_pose import PoseStitcher, chain_step

    first = _poses([[k, 0.0, 0.0] for k in range(8)])
    # The second window (frames 4-11) disagrees with the first over the overlap: its own path bends.
    second = _poses([[k, 0.3 * k * k, 0.0] for k in range(8)])
    chained, *_ = chain_step(first, second, 4, 4, "poses")
    results = {}
    for blend in (True, False):
        stitcher = PoseStitcher(blend=blend)
        state = stitcher.merge(None, {"poses": first.float()}, 0, 0)
        state = stitcher.merge(state, {"poses": second.float()}, 4, 4)
        results[blend] = stitcher.finalize(state)["poses"].double()
    for poses in results.values():
        torch.testing.assert_close(poses[:, :4], first[:, :4], atol=1e-6, rtol=0)
        torch.testing.assert_close(poses[:, 8:], chained[:, 4:], atol=1e-5, rtol=0)
    torch.testing.assert_close(results[False][:, 4:8], chained[:, :4], atol=1e-5, rtol=0)  # overwritten
    assert (results[True][:, 4:8] - chained[:, :4]).abs().max() > 1e-2  # cross-faded from the first
    assert PoseStitcher().blend is True


def test_default_profile_outputs_are_bit_identical_with_the_profile_unset(tmp_path):
    video = _video(tmp_path / "clip.mp4")
    unset = _registry(tmp_path / "unset.yaml")
    named = _registry(tmp_path / "named.yaml", "l4p")
    runs = [
        _run(video, tmp_path / "a", "--registry", str(unset)),
        _run(video, tmp_path / "b", "--registry", str(named)),
        _run(
            video,
            tmp_path / "c",
            "--registry",
            str(_registry(tmp_path / "o.yaml", "official")),
            "--profile",
            "l4p",
        ),
    ]
    for other in runs[1:]:
        assert set(other) == set(runs[0])
        for key in runs[0]:
            np.testing.assert_array_equal(np.asarray(other[key]), np.asarray(runs[0][key]), err_msg=key)
    assert runs[0].meta["resize"] == "letterbox" and runs[0].meta["profile"] == "l4p"


def test_autocast_dtype_is_float16_on_cuda_under_official_only(monkeypatch):
    assert autocast_dtype("official", "cuda") == torch.float16
    assert autocast_dtype("official", "cuda:0") == torch.float16
    assert autocast_dtype("official", "cpu") is None
    assert autocast_dtype("l4p", "cuda") is None
    assert default_resize("official") == "squash" and default_resize("l4p") == "letterbox"

    # The autocast path itself, exercised on CPU with bfloat16: outputs come back float32 and finite.
    import sys

    from l4p_framework import compose

    compose_module = sys.modules["l4p_framework.compose"]  # the package's `compose` is the function

    model = compose(["depth"], profile="official").eval()
    video = torch.rand(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(compose_module, "autocast_dtype", lambda profile, device: torch.bfloat16)
    active = []
    head = model.heads["depth"]
    original = head.forward
    monkeypatch.setattr(
        head,
        "forward",
        lambda *a, **k: (
            active.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            or original(*a, **k)
        ),
    )
    with torch.no_grad():
        depth = model(video)["depth"]["depth"]
    assert depth.dtype == torch.float32 and bool(torch.isfinite(depth).all())
    assert active == [(True, torch.bfloat16)]
