"""Readers of dense formats: Sintel, KITTI depth/flow, DAVIS masks, TUM RGB-D.

Every test writes tiny files in the documented layout (binary headers written by hand with
struct/numpy, 16-bit PNGs with Pillow or PyAV) and checks the l4p sample the reader returns.
"""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest
import torch
from PIL import Image

from l4p_framework.data.readers import davis, kitti, sintel, tum
from l4p_framework.errors import DataError, InputError

H, W = 6, 8


def _assert_error(excinfo, path, *words):
    msg = str(excinfo.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg


def _frames(T, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def _save_png16_rgb(path, arr):
    """16-bit RGB PNG through FFmpeg's encoder (independent of l4p's writer)."""
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = arr.shape[1], arr.shape[0], "rgb48be"
        for p in s.encode(av.VideoFrame.from_ndarray(arr.astype(np.uint16), format="rgb48le")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)


# ---------------------------------------------------------------------------------------------- Sintel


def _flo_bytes(flow):
    h, w = flow.shape[:2]
    return struct.pack("<fii", 202021.25, w, h) + flow.astype("<f4").tobytes()


def _cam_bytes(K, Rt):
    return struct.pack("<f", 202021.25) + K.astype("<f8").tobytes() + Rt.astype("<f8").tobytes()


def test_sintel_low_level_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(H, W, 2)).astype(np.float32)
    (tmp_path / "a.flo").write_bytes(_flo_bytes(flow))
    assert np.array_equal(sintel.read_flo(tmp_path / "a.flo"), flow)
    depth = rng.uniform(1, 5, (H, W)).astype(np.float32)
    (tmp_path / "a.dpt").write_bytes(struct.pack("<fii", 202021.25, W, H) + depth.tobytes())
    assert np.array_equal(sintel.read_dpt(tmp_path / "a.dpt"), depth)
    K = np.array([[100.0, 0, 3.5], [0, 100.0, 2.5], [0, 0, 1]])
    Rt = rng.normal(size=(3, 4))
    (tmp_path / "a.cam").write_bytes(_cam_bytes(K, Rt))
    K2, Rt2 = sintel.read_cam(tmp_path / "a.cam")
    assert np.array_equal(K2, K) and np.array_equal(Rt2, Rt)
    sintel.write_flo(tmp_path / "b.flo", flow)
    assert (tmp_path / "b.flo").read_bytes() == (tmp_path / "a.flo").read_bytes()


def test_sintel_errors(tmp_path):
    flow = np.zeros((H, W, 2), np.float32)
    bad_tag = tmp_path / "tag.flo"
    bad_tag.write_bytes(struct.pack("<fii", 1.0, W, H) + flow.tobytes())
    with pytest.raises(DataError) as e:
        sintel.read_flo(bad_tag)
    _assert_error(e, bad_tag, "wrong magic number", "202021.25")

    trunc = tmp_path / "trunc.flo"
    trunc.write_bytes(_flo_bytes(flow)[:-10])
    with pytest.raises(DataError) as e:
        sintel.read_flo(trunc)
    _assert_error(e, trunc, "truncated")

    short = tmp_path / "short.dpt"
    short.write_bytes(struct.pack("<f", 202021.25) + b"\x01")
    with pytest.raises(DataError) as e:
        sintel.read_dpt(short)
    _assert_error(e, short, "truncated")

    neg = tmp_path / "neg.dpt"
    neg.write_bytes(struct.pack("<fii", 202021.25, -3, H))
    with pytest.raises(DataError, match="invalid size"):
        sintel.read_dpt(neg)

    cam = tmp_path / "c.cam"
    cam.write_bytes(_cam_bytes(np.eye(3), np.zeros((3, 4)))[:-8])
    with pytest.raises(DataError) as e:
        sintel.read_cam(cam)
    _assert_error(e, cam, "truncated")

    empty = tmp_path / "e.flo"
    empty.write_bytes(b"")
    with pytest.raises(DataError) as e:
        sintel.read_flo(empty)
    _assert_error(e, empty, "truncated")


def _sintel_tree(root, T=3):
    rng = np.random.default_rng(1)
    scene = "alley_1"
    dirs = {k: root / "training" / k / scene for k in ("clean", "final", "flow", "depth", "camdata_left")}
    for d in dirs.values():
        d.mkdir(parents=True)
    frames = _frames(T)
    flows = rng.normal(size=(T - 1, H, W, 2)).astype(np.float32)
    depth = rng.uniform(1, 9, (T, H, W)).astype(np.float32)
    K = np.array([[100.0, 0, (W - 1) / 2], [0, 100.0, (H - 1) / 2], [0, 0, 1]])
    w2c = np.tile(np.eye(4), (T, 1, 1))
    for t in range(T):
        w2c[t, :3, 3] = [t * 0.5, -t, 2.0]
        c, s = np.cos(0.1 * t), np.sin(0.1 * t)
        w2c[t, :2, :2] = [[c, -s], [s, c]]
    for t in range(T):
        n = f"frame_{t + 1:04d}"
        Image.fromarray(frames[t]).save(dirs["clean"] / f"{n}.png")
        Image.fromarray(frames[t]).save(dirs["final"] / f"{n}.png")
        (dirs["depth"] / f"{n}.dpt").write_bytes(struct.pack("<fii", 202021.25, W, H) + depth[t].tobytes())
        (dirs["camdata_left"] / f"{n}.cam").write_bytes(_cam_bytes(K, w2c[t, :3]))
        if t < T - 1:
            (dirs["flow"] / f"{n}.flo").write_bytes(_flo_bytes(flows[t]))
    return {"frames": frames, "flows": flows, "depth": depth, "K": K, "w2c": w2c}


def test_sintel_dataset(tmp_path):
    g = _sintel_tree(tmp_path)
    s = sintel.SintelDataset("train", root=tmp_path)[0]
    assert s["name"] == "alley_1"
    assert torch.equal((s["video"] * 255).round().byte().permute(1, 2, 3, 0), torch.from_numpy(g["frames"]))
    np.testing.assert_array_equal(s["depth"][0].numpy(), g["depth"])
    assert bool(s["depth_valid"].all())
    K = g["K"].copy()
    K[:2, 2] += 0.5  # integer-centre convention -> l4p's
    np.testing.assert_allclose(s["intrinsics"][1].numpy(), K, atol=1e-6)
    np.testing.assert_allclose(s["poses"].numpy(), np.linalg.inv(g["w2c"]), atol=1e-5)
    # forward flow t -> t+1, last frame zero; no backward flow in Sintel's ground truth
    assert "flow" not in s
    np.testing.assert_array_equal(s["flow_forward"].permute(1, 2, 3, 0)[:2].numpy(), g["flows"])
    assert float(s["flow_forward"][:, 2].abs().max()) == 0
    assert s["flow_forward_valid"][0, :, 0, 0].tolist() == [True, True, False]


def test_sintel_reverse_time_gives_backward_flow(tmp_path):
    g = _sintel_tree(tmp_path)
    s = sintel.SintelDataset("train", root=tmp_path, reverse_time=True, render_pass="final")[0]
    assert "flow_forward" not in s
    assert torch.equal(
        (s["video"] * 255).round().byte().permute(1, 2, 3, 0), torch.from_numpy(g["frames"][::-1].copy())
    )
    # reversed frame j=1 is original frame 1; its backward flow points to reversed j=0 = original 2
    np.testing.assert_array_equal(s["flow"][:, 1].permute(1, 2, 0).numpy(), g["flows"][1])
    np.testing.assert_array_equal(s["flow"][:, 2].permute(1, 2, 0).numpy(), g["flows"][0])
    assert s["flow_valid"][0, :, 0, 0].tolist() == [False, True, True]
    np.testing.assert_allclose(s["poses"][0].numpy(), np.linalg.inv(g["w2c"][2]), atol=1e-5)


def test_sintel_options(tmp_path):
    _sintel_tree(tmp_path, T=4)
    ds = sintel.SintelDataset("train", root=tmp_path, clip_len=2, frame_stride=1)
    assert len(ds) == 2 and ds[1]["name"] == "alley_1[2:4:1]"
    assert "flow_forward" not in sintel.SintelDataset("train", root=tmp_path, frame_stride=2)[0]
    big = sintel.SintelDataset("train", root=tmp_path, size=(12, 24), resize_mode="letterbox")[0]
    assert big["video"].shape == (3, 4, 12, 24) and big["depth"].shape == (1, 4, 12, 24)
    # letterbox 6x8 -> 12x16 centred in 12x24 (offset x 4): cx' = 2 cx + 4, flow scaled by 2
    assert float(big["intrinsics"][0, 0, 2]) == pytest.approx(2 * (3.5 + 0.5) + 4)
    small = sintel.SintelDataset("train", root=tmp_path)[0]
    assert float(big["flow_forward"][0, 0, 0, 4]) == pytest.approx(
        2 * float(small["flow_forward"][0, 0, 0, 0])
    )
    with pytest.raises(InputError, match="no scene"):
        sintel.SintelDataset("train", root=tmp_path, scenes=["market_2"])
    with pytest.raises(InputError, match="render_pass"):
        sintel.SintelDataset("train", root=tmp_path, render_pass="albedo")


# ---------------------------------------------------------------------------------------------- KITTI


def test_kitti_depth_png(tmp_path):
    raw = np.array([[0, 256, 512, 65535], [1, 2560, 300, 0]], np.uint16)
    path = tmp_path / "d.png"
    Image.fromarray(raw).save(path)
    d = kitti.read_kitti_depth_png(path)
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d, raw / 256.0)
    kitti.write_kitti_depth_png(tmp_path / "w.png", d)
    np.testing.assert_array_equal(kitti.read_kitti_depth_png(tmp_path / "w.png"), d)

    eight = tmp_path / "8bit.png"
    Image.fromarray(raw.astype(np.uint8)).save(eight)
    with pytest.raises(DataError) as e:
        kitti.read_kitti_depth_png(eight)
    _assert_error(e, eight, "16-bit")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"JFIF" + bytes(100))
    with pytest.raises(DataError) as e:
        kitti.read_kitti_depth_png(junk)
    _assert_error(e, junk, "wrong magic number")
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError) as e:
        kitti.read_kitti_depth_png(trunc)
    _assert_error(e, trunc, "truncated")


def test_kitti_flow_png(tmp_path):
    raw = np.zeros((2, 3, 3), np.uint16)  # channels R, G, B = u, v, valid
    raw[..., 0] = 2**15 + 64 * np.array([[1.5, -2, 0], [10, 0.25, 3]])
    raw[..., 1] = 2**15 - 64 * 3
    raw[..., 2] = [[1, 1, 0], [1, 1, 1]]
    path = tmp_path / "000000_10.png"
    _save_png16_rgb(path, raw)
    flow, valid = kitti.read_kitti_flow_png(path)
    assert valid.tolist() == [[True, True, False], [True, True, True]]
    np.testing.assert_array_equal(flow[..., 0], [[1.5, -2, 0], [10, 0.25, 3]])
    np.testing.assert_array_equal(flow[..., 1], [[-3, -3, 0], [-3, -3, -3]])
    kitti.write_kitti_flow_png(tmp_path / "w.png", flow, valid)
    f2, v2 = kitti.read_kitti_flow_png(tmp_path / "w.png")
    assert np.array_equal(f2, flow) and np.array_equal(v2, valid)

    grey = tmp_path / "grey.png"
    Image.fromarray(raw[..., 0]).save(grey)
    with pytest.raises(DataError) as e:
        kitti.read_kitti_flow_png(grey)
    _assert_error(e, grey, "16-bit 3-channel")
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataError) as e:
        kitti.read_kitti_flow_png(trunc)
    _assert_error(e, trunc, "truncated")


def test_kitti_depth_dataset(tmp_path):
    drive = "2011_09_26_drive_0002_sync"
    gt = tmp_path / "ann" / "val" / drive / "proj_depth" / "groundtruth" / "image_02"
    rgb = tmp_path / "raw" / "2011_09_26" / drive / "image_02" / "data"
    gt.mkdir(parents=True)
    rgb.mkdir(parents=True)
    frames = _frames(4)
    depth_raw = np.random.default_rng(2).integers(0, 20000, (3, H, W)).astype(np.uint16)
    for i in range(4):
        Image.fromarray(frames[i]).save(rgb / f"{i + 4:010d}.png")
    for i in range(3):  # ground truth starts one frame later than the raw frames
        Image.fromarray(depth_raw[i]).save(gt / f"{i + 5:010d}.png")
    P = "721.5 0 609.5 44.8 0 721.5 172.8 0.2 0 0 1 0.003"
    (tmp_path / "raw" / "2011_09_26" / "calib_cam_to_cam.txt").write_text(
        f"calib_time: 09-Jan-2012 13:57:47\nP_rect_02: {P}\n"
    )
    s = kitti.KittiDepthDataset("val", root=tmp_path / "ann", raw_root=tmp_path / "raw")[0]
    assert s["name"] == drive
    assert torch.equal((s["video"] * 255).round().byte().permute(1, 2, 3, 0), torch.from_numpy(frames[1:]))
    np.testing.assert_array_equal(s["depth"][0].numpy(), depth_raw / 256.0)
    assert torch.equal(s["depth_valid"], s["depth"] > 0)
    assert s["intrinsics"][0].tolist() == [[721.5, 0, 610.0], [0, 721.5, 173.3000030517578], [0, 0, 1]]
    with pytest.raises(DataError) as e:
        kitti.KittiDepthDataset("val", root=tmp_path / "ann")
    _assert_error(e, drive, "raw_root")


def test_kitti_flow_dataset(tmp_path):
    img = tmp_path / "training" / "image_2"
    occ = tmp_path / "training" / "flow_occ"
    img.mkdir(parents=True)
    occ.mkdir()
    frames = _frames(2)
    Image.fromarray(frames[0]).save(img / "000000_10.png")
    Image.fromarray(frames[1]).save(img / "000000_11.png")
    flow = np.random.default_rng(3).uniform(-5, 5, (H, W, 2)).round(2)
    valid = np.random.default_rng(4).random((H, W)) > 0.3
    kitti.write_kitti_flow_png(occ / "000000_10.png", flow, valid)
    expect = np.where(valid[..., None], np.rint(flow * 64) / 64, 0)

    s = kitti.KittiFlowDataset("train", root=tmp_path)[0]
    assert s["name"] == "000000" and s["video"].shape == (3, 2, H, W)
    np.testing.assert_allclose(s["flow_forward"][:, 0].permute(1, 2, 0).numpy(), expect, atol=1e-6)
    assert float(s["flow_forward"][:, 1].abs().max()) == 0
    assert s["flow_forward_valid"][0, 0].numpy().tolist() == valid.tolist()
    assert not bool(s["flow_forward_valid"][0, 1].any())

    r = kitti.KittiFlowDataset("train", root=tmp_path, reverse_time=True)[0]
    assert torch.equal(r["video"][:, 0], s["video"][:, 1])  # frame 11 first
    np.testing.assert_allclose(r["flow"][:, 1].permute(1, 2, 0).numpy(), expect, atol=1e-6)
    assert not bool(r["flow_valid"][0, 0].any()) and r["flow_valid"][0, 1].numpy().tolist() == valid.tolist()
    with pytest.raises(InputError, match="clip_len"):
        kitti.KittiFlowDataset("train", root=tmp_path, clip_len=2)


# ---------------------------------------------------------------------------------------------- DAVIS


def _palette_png(path, ids):
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
    im.save(path)


def test_davis_masks_and_dataset(tmp_path):
    seq = "bike-packing"
    img = tmp_path / "JPEGImages" / "480p" / seq
    ann = tmp_path / "Annotations" / "480p" / seq
    img.mkdir(parents=True)
    ann.mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text(f"{seq}\n")
    ids = np.zeros((3, H, W), np.uint8)
    ids[:, 1:3, 2:4] = 1
    ids[:, 4:6, 5:8] = 2
    for t in range(3):
        Image.fromarray(_frames(3)[t]).save(img / f"{t:05d}.jpg")
        _palette_png(ann / f"{t:05d}.png", ids[t])
    assert np.array_equal(davis.read_davis_mask(ann / "00000.png"), ids[0])
    s = davis.DavisDataset("val", root=tmp_path, num_queries=5)[0]
    assert s["name"] == seq and s["video"].shape == (3, 3, H, W)
    assert s["motion_mask"].dtype == torch.float32
    assert s["motion_mask"][0].numpy().tolist() == (ids > 0).astype(np.float32).tolist()
    q = s["queries"].numpy()
    assert q.shape == (5, 3) and (q[:, 0] == 0).all()
    assert all(ids[0, int(y), int(x)] > 0 and x % 1 == 0.5 for _, x, y in q)

    grey = tmp_path / "grey.png"  # DAVIS 2016 style 0/255 mask
    Image.fromarray((ids[0] > 0).astype(np.uint8) * 255).save(grey)
    assert davis.read_davis_mask(grey).max() == 1
    rgb = tmp_path / "rgb.png"
    Image.fromarray(_frames(1)[0]).save(rgb)
    with pytest.raises(DataError) as e:
        davis.read_davis_mask(rgb)
    _assert_error(e, rgb, "palette")
    jpg = tmp_path / "mask.png"
    Image.fromarray(_frames(1)[0]).save(jpg, format="JPEG")
    with pytest.raises(DataError) as e:
        davis.read_davis_mask(jpg)
    _assert_error(e, jpg, "wrong magic number")
    (ann / "00002.png").unlink()  # partially annotated clip: no motion_mask
    assert "motion_mask" not in davis.DavisDataset("val", root=tmp_path)[0]


# ---------------------------------------------------------------------------------------------- TUM


def test_tum_sequence(tmp_path):
    seq = tmp_path / "rgbd_dataset_freiburg3_walking_xyz"
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    frames = _frames(4)
    depth_raw = np.random.default_rng(6).integers(0, 30000, (4, H, W)).astype(np.uint16)
    rgb_t = [100.0, 100.033, 100.066, 100.1]
    dep_t = [100.01, 100.04, 100.2, 100.11]  # frame 2 has no depth within 0.02 s
    rgb_lines, dep_lines = ["# color images", "# file: test"], ["# depth maps"]
    for i in range(4):
        Image.fromarray(frames[i]).save(seq / "rgb" / f"{rgb_t[i]:.6f}.png")
        Image.fromarray(depth_raw[i]).save(seq / "depth" / f"{dep_t[i]:.6f}.png")
        rgb_lines.append(f"{rgb_t[i]:.6f} rgb/{rgb_t[i]:.6f}.png")
        dep_lines.append(f"{dep_t[i]:.6f} depth/{dep_t[i]:.6f}.png")
    (seq / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (seq / "depth.txt").write_text("\n".join(dep_lines) + "\n")
    a = np.pi / 2
    gt = ["# timestamp tx ty tz qx qy qz qw"]
    for i, t in enumerate([99.995, 100.03, 100.07, 100.105]):
        gt.append(f"{t} {i} 2 3 0 0 {np.sin(a / 2) if i == 1 else 0} {np.cos(a / 2) if i == 1 else 1}")
    (seq / "groundtruth.txt").write_text("\n".join(gt) + "\n")

    ds = tum.TumDataset("test", root=tmp_path)
    s = ds[0]
    assert s["name"] == seq.name and s["video"].shape == (3, 3, H, W)  # frame 2 dropped
    kept = [0, 1, 3]
    assert torch.equal((s["video"] * 255).round().byte().permute(1, 2, 3, 0), torch.from_numpy(frames[kept]))
    np.testing.assert_allclose(s["depth"][0].numpy(), depth_raw[kept] / 5000.0, rtol=1e-6)
    P = s["poses"].double().numpy()
    np.testing.assert_allclose(P[:, :3, 3], [[0, 2, 3], [1, 2, 3], [3, 2, 3]], atol=1e-6)
    np.testing.assert_allclose(P[1, :3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)  # 90 deg about z
    np.testing.assert_allclose(
        s["intrinsics"][0].numpy(), [[535.4, 0, 320.6], [0, 539.2, 248.1], [0, 0, 1]], atol=1e-4
    )
    other = tmp_path / "my_capture"
    seq.rename(other)
    assert "intrinsics" not in tum.TumDataset("test", root=other)[0]  # unknown camera
    given = tum.TumDataset("test", root=other, intrinsics=(500, 500, 320, 240), pixel_offset=0.0)[0]
    assert given["intrinsics"][0].tolist() == [[500, 0, 320], [0, 500, 240], [0, 0, 1]]
    seq = other
    strided = tum.TumDataset("test", root=seq, frame_stride=2, max_frames=2)[0]
    assert strided["video"].shape[1] == 2

    (seq / "groundtruth.txt").write_text("# bad\n100.0 1 2 3 0 0 0\n")
    with pytest.raises(DataError) as e:
        tum.TumDataset("test", root=seq)
    _assert_error(e, seq / "groundtruth.txt", "line 2", "8 fields")


def test_tum_associate():
    idx = tum.associate(np.array([1.0, 2.0, 3.0, 10.0]), np.array([2.015, 0.99, 3.03]), 0.02)
    assert idx.tolist() == [1, 0, -1, -1]
    assert tum.associate(np.array([1.0]), np.array([]), 0.02).tolist() == [-1]


def test_png16_helper_rejects_garbage_bytes(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20).getvalue())
    with pytest.raises(DataError) as e:
        tum.read_tum_depth(p)
    _assert_error(e, p, "corrupt")
