"""synth4d with photo textures, real-camera effects and dolly camera motion (issue 17, item 1)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from l4p_framework import batch as B
from l4p_framework.data.synth4d import Synth4D, Synth4DConfig, generate_clip, render_clip
from l4p_framework.data.synth4d import camera_effects as fx
from l4p_framework.data.synth4d import textures as tex
from l4p_framework.errors import ConfigError, DataError

TINY = dict(num_frames=3, height=32, width=40, num_queries=8)


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Photo caches are per process; clear them so each test sees its own tmp files."""
    tex.scan_photos.cache_clear()
    tex.load_photo.cache_clear()
    yield
    tex.scan_photos.cache_clear()
    tex.load_photo.cache_clear()


def _save(path: Path, rgb: np.ndarray) -> Path:
    """Write uint8 (H, W, 3) `rgb` to `path` (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def _noise_photo(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _solid(color: tuple[int, int, int], h: int = 24, w: int = 32) -> np.ndarray:
    return np.broadcast_to(np.array(color, dtype=np.uint8), (h, w, 3)).copy()


def _tensors_equal(a: dict, b: dict, skip: tuple[str, ...] = ()) -> None:
    for key, value in a.items():
        if isinstance(value, torch.Tensor) and key not in skip:
            assert torch.equal(value, b[key]), key


def test_default_config_renders_as_before():
    """Sums of every label of two default clips, pinned with the code before photos/effects/dolly.

    Any change of the random stream or of the default rendering moves them far beyond the tolerance.
    """
    pinned = {
        0: {"depth": 27049.2203, "flow": 4954.0693, "flow_forward": 4770.855, "motion_mask": 1549.0,
            "normals": 7751.297, "poses": 28.6664, "tracks": 1450.879, "video": 5595.3817},
        7: {"depth": 36747.2461, "flow": 4374.874, "flow_forward": 4449.788, "motion_mask": 868.0,
            "normals": 7973.2344, "poses": 31.4616, "tracks": 1564.6004, "video": 5382.8467},
    }  # fmt: skip
    cfg = Synth4DConfig(num_frames=4, height=32, width=48, num_queries=8)
    for seed, sums in pinned.items():
        clip = generate_clip(seed, cfg)
        for key, want in sums.items():
            got = float(clip[key].double().abs().sum())
            assert math.isclose(got, want, rel_tol=2e-6, abs_tol=2e-3), (seed, key, got, want)


def test_texture_folder_errors(tmp_path):
    with pytest.raises(DataError, match=r"textures folder .*missing_dir does not exist"):
        Synth4D("train", textures=str(tmp_path / "missing_dir"), **TINY)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    with pytest.raises(DataError, match=r"empty holds no \.jpg"):
        Synth4D("train", textures=str(empty), **TINY)

    bad = tmp_path / "bad"
    _save(bad / "good.png", _noise_photo(0))
    (bad / "sub").mkdir()
    (bad / "sub" / "broken.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    with pytest.raises(DataError, match=r"sub/broken\.jpg is not a readable image"):
        Synth4D("train", textures=str(bad), **TINY)

    # A valid header with truncated data passes the cheap check; decoding names the file.
    trunc = tmp_path / "trunc"
    data = (_save(tmp_path / "full.png", _noise_photo(1, 64, 64))).read_bytes()
    trunc.mkdir()
    (trunc / "cut.png").write_bytes(data[: len(data) // 2])
    ds = Synth4D("train", length=1, textures=str(trunc), **TINY)
    with pytest.raises(DataError, match=r"cannot decode texture photo .*cut\.png"):
        ds[0]


def test_photo_split_file_errors(tmp_path):
    photos = tmp_path / "photos"
    for name in ("a.png", "b.png", "c.png"):
        _save(photos / name, _noise_photo(len(name)))
    split = tmp_path / "split.json"

    def build(table, which="train"):
        split.write_text(json.dumps(table))
        tex.scan_photos.cache_clear()
        return Synth4D(which, textures=str(photos), photo_split=str(split), **TINY)

    with pytest.raises(DataError, match=r"a\.png is listed under both 'train' and 'test'"):
        build({"train": ["a.png"], "val": ["b.png"], "test": ["a.png"]})
    with pytest.raises(DataError, match=r"lists no photo under 'val'"):
        build({"train": ["a.png"], "test": ["c.png"]}, "val")
    with pytest.raises(DataError, match=r"photos/z\.png \(listed under 'train'.*does not exist"):
        build({"train": ["z.png"], "val": ["b.png"], "test": ["c.png"]})
    split.write_text("{not json")
    with pytest.raises(DataError, match=r"split\.json is unreadable"):
        Synth4D("train", textures=str(photos), photo_split=str(split), **TINY)
    with pytest.raises(ConfigError, match="photo_split needs textures"):
        Synth4D("train", photo_split=str(split), **TINY)
    split.write_text(json.dumps({"train": ["a.png"], "val": ["b.png"], "test": ["c.png"]}))
    cfg = Synth4DConfig(textures=str(photos), photo_split=str(split), **TINY)
    with pytest.raises(ConfigError, match="needs the split"):
        generate_clip(0, cfg)


def test_textures_are_deterministic_per_seed_and_leave_labels_alone(tmp_path):
    photos = tmp_path / "photos"
    _save(photos / "noise.png", _noise_photo(2))
    _save(photos / "nested" / "noise.jpg", _noise_photo(3, 40, 56))
    _save(photos / "noise.webp", _noise_photo(4, 30, 30))
    cfg = Synth4DConfig(textures=str(photos), **TINY)
    a = generate_clip(5, cfg)
    tex.load_photo.cache_clear()  # decoding again gives the same photo
    b = generate_clip(5, cfg)
    _tensors_equal(a, b)
    assert not torch.equal(a[B.VIDEO], generate_clip(6, cfg)[B.VIDEO])
    plain = generate_clip(5, Synth4DConfig(**TINY))
    _tensors_equal(a, plain, skip=(B.VIDEO,))  # photos change the colours only
    assert not torch.equal(a[B.VIDEO], plain[B.VIDEO])
    assert 0 <= a[B.VIDEO].min() and a[B.VIDEO].max() <= 1
    # texture_mix=0: every material keeps its procedural pattern (the plain video exactly).
    none = generate_clip(5, Synth4DConfig(textures=str(photos), texture_mix=0.0, **TINY))
    assert torch.equal(none[B.VIDEO], plain[B.VIDEO])


def test_photo_split_is_respected(tmp_path, monkeypatch):
    """Train photos are pure red, val green, test blue: train clips are red and never open another photo."""
    photos = tmp_path / "photos"
    colors = {"train": (255, 0, 0), "val": (0, 255, 0), "test": (0, 0, 255)}
    table = {split: [f"{split}_{i}.png" for i in range(2)] for split in colors}
    for split, names in table.items():
        for name in names:
            _save(photos / name, _solid(colors[split]))
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps(table))

    opened: list[str] = []
    real_open = tex.Image.open
    monkeypatch.setattr(
        tex.Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k)
    )
    for split, channel in (("train", 0), ("test", 2)):
        opened.clear()
        tex.load_photo.cache_clear()
        ds = Synth4D(split, length=2, textures=str(photos), photo_split=str(split_file), **TINY)
        assert sorted(Path(p).name for p in ds.photos) == table[split]
        for i in range(2):
            sample, aux = render_clip(ds.seed(i), ds.config, split)
            assert bool(aux["scene"].photos.use.all())
            video = sample[B.VIDEO]
            others = [c for c in range(3) if c != channel]
            assert all((video[channel] >= video[c]).all() for c in others)
            assert all(video[channel].mean() > 2 * video[c].mean() for c in others)
        assert opened and all(Path(p).name.startswith(f"{split}_") for p in opened), opened


def test_mipmap_lookup_does_not_alias(tmp_path):
    """A 1-texel checkerboard seen at ~7 texels per pixel: mip-mapped lookups are ~uniform grey."""
    ij = np.add.outer(np.arange(256), np.arange(256)) % 2
    path = _save(tmp_path / "checker.png", (np.repeat(ij[..., None], 3, -1) * 255).astype(np.uint8))
    matrix, offset = tex.color_jitter(torch.ones(1), torch.ones(1), torch.ones(1), torch.zeros(1))
    assert torch.allclose(matrix[0], torch.eye(3), atol=1e-6) and offset.abs().max() < 1e-6
    texel = 0.01  # scene units per texel: the crop (whole photo) spans 2.56 units
    photos = tex.PhotoMaterials(
        paths=(str(path),),
        use=torch.ones(1, dtype=torch.bool),
        photo=torch.zeros(1, dtype=torch.long),
        crop_side=torch.ones(1),
        crop_pos=torch.zeros(1, 2),
        extent=torch.tensor([256 * texel]),
        angle=torch.tensor([0.3]),
        color_matrix=matrix,
        color_offset=offset,
    )
    spacing = 7.37 * texel  # one pixel's footprint on the surface
    grid = torch.arange(64, dtype=torch.float32) * spacing
    uv = torch.stack(torch.meshgrid(grid, grid, indexing="ij")).reshape(2, -1)
    filtered = tex.photo_color(photos, 0, uv, torch.full((uv.shape[1],), spacing))
    unfiltered = tex.photo_color(photos, 0, uv, torch.zeros(uv.shape[1]))
    print(f"std unfiltered {float(unfiltered.std()):.4f}, mip-mapped {float(filtered.std()):.4f}")
    assert unfiltered.std() > 0.15  # bilinear at level 0: random-looking values in [0, 1]
    assert filtered.std() < unfiltered.std() / 10 and abs(float(filtered.mean()) - 0.5) < 0.01
    # Levels: 256 -> 1 texel, each the box average of the one above; the last is the crop's mean.
    levels = tex.crop_pyramid(tex.load_photo(str(path)), 1.0, (0.0, 0.0))
    assert [lv.shape[-1] for lv in levels] == [2**k for k in range(8, -1, -1)]
    assert torch.allclose(levels[-1].flatten(), torch.full((3,), 0.5))
    # Mirror repeat: coordinates beyond the crop fold back, continuously.
    x = torch.tensor([-1.0, 0.0, 5.0, 256.0, 258.0, 512.0, 515.0])
    assert torch.equal(tex.mirror(x, 256), torch.tensor([1.0, 0.0, 5.0, 256.0, 254.0, 0.0, 3.0]))


def test_camera_effects_change_only_the_video_deterministically():
    cfg = Synth4DConfig(camera_effects=True, **TINY)
    plain = generate_clip(9, Synth4DConfig(**TINY))
    a, b = generate_clip(9, cfg), generate_clip(9, cfg)
    _tensors_equal(a, b)
    _tensors_equal(a, plain, skip=(B.VIDEO,))
    diff = (a[B.VIDEO] - plain[B.VIDEO]).abs()
    assert diff.mean() > 0.005 and a[B.VIDEO].min() >= 0 and a[B.VIDEO].max() <= 1
    assert not torch.equal(generate_clip(10, cfg)[B.VIDEO], generate_clip(10, Synth4DConfig(**TINY))[B.VIDEO])


def test_camera_effect_functions():
    g = torch.Generator().manual_seed(0)
    video = torch.rand(3, 4, 24, 32, generator=g)
    assert torch.equal(fx.motion_blur(video, torch.zeros(2, 4)), video)
    assert torch.equal(fx.jpeg_compress(video, [None] * 4), video)
    assert torch.equal(fx.sensor_noise(video, 0.0, 0.0, torch.randn(video.shape)), video)
    # A horizontal shift blurs along x only: a horizontal ramp stays, vertical detail is kept.
    ramp = torch.linspace(0, 1, 32).expand(3, 4, 24, 32).contiguous()
    blurred = fx.motion_blur(ramp, torch.tensor([[6.0] * 4, [0.0] * 4]))
    assert torch.allclose(blurred[..., 8:-8], ramp[..., 8:-8], atol=1e-5)
    rows = (torch.arange(24) % 2).float().expand(3, 4, 32, 24).transpose(-1, -2).contiguous()
    assert torch.allclose(fx.motion_blur(rows, torch.tensor([[6.0] * 4, [0.0] * 4])), rows, atol=1e-5)
    # Defocus keeps a flat image flat and smooths noise.
    flat = torch.full((3, 2, 16, 16), 0.4)
    assert torch.allclose(fx.defocus_blur(flat, 1.0), flat, atol=1e-6)
    assert fx.defocus_blur(video, 1.0).std() < 0.6 * video.std()
    # Shot noise grows with the signal.
    dark, bright = torch.full((3, 1, 64, 64), 0.05), torch.full((3, 1, 64, 64), 0.9)
    noise = torch.randn(3, 1, 64, 64, generator=g)
    assert (fx.sensor_noise(bright, 0.002, 0.003, noise) - bright).std() > 2 * (
        fx.sensor_noise(dark, 0.002, 0.003, noise) - dark
    ).std()
    # Gains drift smoothly; JPEG changes the chosen frames only.
    gains = fx.drifting_gains(g, 24)
    assert gains.shape == (3, 24) and (gains[:, 1:] / gains[:, :-1] - 1).abs().max() < 0.06
    jpeg = fx.jpeg_compress(video, [40, None, 90, None])
    assert not torch.equal(jpeg[:, 0], video[:, 0]) and torch.equal(jpeg[:, 1], video[:, 1])


def test_dolly_camera_motion_and_many_objects():
    kinds = []
    six = {**TINY, "num_frames": 6}
    for seed in range(6):
        base = render_clip(seed, Synth4DConfig(**six, camera_motion="pan"))[1]["scene"]
        mixed_cfg = Synth4DConfig(**six, camera_motion="mixed", min_objects=8, max_objects=10)
        sample, aux = render_clip(seed, mixed_cfg)
        scene = aux["scene"]
        assert 8 <= scene.num_objects <= 10 and torch.isfinite(sample[B.VIDEO]).all()
        # The dolly adds a steady travel along the first frame's view direction to the pan path.
        travel = scene.cam_pos - base.cam_pos
        t = torch.arange(6, dtype=torch.float32)[:, None]
        assert torch.allclose(travel, t * travel[1], atol=1e-4)
        forward = base.cam_rot[0, :, 2]
        along = float(travel[-1] @ forward)
        assert torch.allclose(travel[-1], along * forward, atol=1e-4)
        kinds.append(abs(along) > 1e-3)
        # The camera stays inside the room, in front of every object's bounds.
        assert ((scene.cam_pos > scene.room_lo + 0.45) & (scene.cam_pos < scene.room_hi - 0.35)).all()
        assert (scene.cam_pos[:, 2] < scene.room_hi[2] - 3.9).all()
        assert (sample[B.DEPTH] > 0).all()
    assert any(kinds) and not all(kinds)  # "mixed": some clips dolly, some only pan
