"""Readers of point-tracking formats: TAP-Vid, TAPVid-3D, PointOdyssey, Kubric.

Every test writes tiny files in the documented on-disk layout, reads them back through the
reader and compares with the arrays it wrote (converted to l4p conventions by hand).
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from l4p_framework.data.readers import kubric, pointodyssey, tapvid, tapvid3d
from l4p_framework.errors import DataError

T, H, W = 5, 12, 16


def _video(T=T, H=H, W=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def _jpeg(frame, quality=95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _smooth_video(T=T, H=H, W=W):
    """Smooth frames survive JPEG nearly unchanged."""
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    v = np.stack([np.stack([xx * 8 + t * 10, yy * 10, np.full_like(xx, 128)], -1) for t in range(T)])
    return v.clip(0, 255).astype(np.uint8)


def _rigid(rng, n):
    """n random world-to-camera rigid transforms [n, 4, 4]."""
    out = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        out[i, :3, :3] = q * np.sign(np.linalg.det(q))
        out[i, :3, 3] = rng.normal(size=3) * 0.3
    return out


def _assert_error(excinfo, path, *words):
    msg = str(excinfo.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg


# ---------------------------------------------------------------------------------------------- TAP-Vid


def _tapvid_example(seed=0):
    rng = np.random.default_rng(seed)
    px = rng.uniform([0, 0], [W, H], (3, T, 2))
    occ = np.zeros((3, T), bool)
    occ[1, :2] = True  # point 1 first visible at frame 2
    occ[2] = True  # point 2 never visible
    return {"video": _video(seed=seed), "points": (px / [W, H]).astype(np.float32), "occluded": occ}, px


def test_tapvid_davis_dict_roundtrip(tmp_path):
    ex, px = _tapvid_example()
    path = tmp_path / "tapvid_davis.pkl"
    path.write_bytes(pickle.dumps({"bear": ex, "dog": _tapvid_example(1)[0]}))
    ds = tapvid.TapVidDataset("test", root=path)
    assert len(ds) == 2
    s = ds[0]
    assert s["name"] == "bear"
    assert torch.equal((s["video"] * 255).round().byte().permute(1, 2, 3, 0), torch.from_numpy(ex["video"]))
    # raster convention: normalised * (W, H) is already l4p's pixel coordinate
    np.testing.assert_allclose(s["tracks"].numpy(), px[:2], atol=1e-4)
    assert s["visibility"].tolist() == (~ex["occluded"][:2]).tolist()
    q = s["queries"].numpy()
    np.testing.assert_allclose(q[0], [0, *px[0, 0]], atol=1e-4)
    np.testing.assert_allclose(q[1], [2, *px[1, 2]], atol=1e-4)
    assert s["queries"].shape == (2, 3) and s["tracks"].shape == (2, T, 2)


def test_tapvid_list_strided_resize_and_jpeg(tmp_path):
    ex, px = _tapvid_example()
    ex2 = dict(ex, video=[_jpeg(f) for f in _smooth_video()])  # Kinetics style: JPEG bytes
    path = tmp_path / "rgb_stacking.pkl"
    path.write_bytes(pickle.dumps([ex, ex2]))
    ds = tapvid.TapVidDataset("val", root=tmp_path, query_mode="strided", query_stride=2)
    assert [ds[i]["name"] for i in range(2)] == ["rgb_stacking_0000", "rgb_stacking_0001"]
    s = ds[0]
    # t=0: point 0; t=2: points 0, 1; t=4: points 0, 1
    assert s["queries"][:, 0].tolist() == [0, 2, 2, 4, 4]
    np.testing.assert_allclose(s["tracks"][2].numpy(), px[1], atol=1e-4)
    s1 = ds[1]
    assert np.abs(s1["video"].permute(1, 2, 3, 0).numpy() * 255 - _smooth_video()).max() < 12
    big = tapvid.TapVidDataset("test", root=path, size=(24, 48))[0]  # squash: x * 3, y * 2
    assert big["video"].shape == (3, T, 24, 48)
    np.testing.assert_allclose(big["tracks"].numpy(), px[:2] * [3, 2], atol=1e-3)
    np.testing.assert_allclose(big["queries"][1].numpy(), [2, px[1, 2, 0] * 3, px[1, 2, 1] * 2], atol=1e-3)


def test_tapvid_clip_window(tmp_path):
    ex, px = _tapvid_example()
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps({"bear": ex}))
    ds = tapvid.TapVidDataset("test", root=path, clip_len=3, clip_stride=2)
    assert len(ds) == 2 and ds[1]["name"] == "bear[2:5:1]"
    s = ds[1]
    assert s["video"].shape[1] == 3
    np.testing.assert_allclose(s["queries"][1].numpy(), [0, *px[1, 2]], atol=1e-4)


def test_tapvid_errors(tmp_path):
    ex, _ = _tapvid_example()
    good = pickle.dumps({"bear": ex})
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError) as e:
        tapvid.load_tapvid_pickle(trunc)
    _assert_error(e, trunc, "truncated")

    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"GIF89a not a pickle")
    with pytest.raises(DataError) as e:
        tapvid.load_tapvid_pickle(junk)
    _assert_error(e, junk, "wrong magic number")

    missing = tmp_path / "missing.pkl"
    missing.write_bytes(pickle.dumps({"bear": {"video": ex["video"], "points": ex["points"]}}))
    with pytest.raises(DataError) as e:
        tapvid.TapVidDataset("test", root=missing)
    _assert_error(e, missing, "missing key 'occluded'", "bear")

    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps({"bear": dict(ex, occluded=ex["occluded"][:, :2])}))
    with pytest.raises(DataError, match="occluded has shape"):
        tapvid.load_tapvid_pickle(wrong)


# ---------------------------------------------------------------------------------------------- TAPVid-3D


def _tapvid3d_file(path, *, object_jpegs=True, with_ext=True, drop=None, rename=None):
    rng = np.random.default_rng(3)
    N = 4
    xyz = rng.uniform([-1, -1, 2], [1, 1, 5], (T, N, 3)).astype(np.float32)
    xyz[3, 2, 2] = -1.0  # behind the camera at frame 3
    vis = rng.random((T, N)) > 0.3
    vis[:, 0] = True
    vis[3, 2] = True
    fx, fy, cx, cy = 20.0, 22.0, 8.0, 6.0
    t_q = np.array([0, 1, 0, 2])
    q = np.stack(
        [
            fx * xyz[t_q, range(N), 0] / xyz[t_q, range(N), 2] + cx,
            fy * xyz[t_q, range(N), 1] / xyz[t_q, range(N), 2] + cy,
            t_q,
        ],
        1,
    )
    jpegs = [_jpeg(f) for f in _smooth_video()]
    arrays = {
        "images_jpeg_bytes": np.array(jpegs, dtype=object) if object_jpegs else np.array(jpegs),
        "queries_xyt": q.astype(np.float32),
        "tracks_XYZ": xyz,
        "visibility": vis,
        "fx_fy_cx_cy": np.array([fx, fy, cx, cy]),
    }
    w2c = _rigid(rng, T)
    if with_ext:
        arrays["extrinsics_w2c"] = w2c
    if rename:
        arrays[rename[1]] = arrays.pop(rename[0])
    if drop:
        arrays.pop(drop)
    np.savez(path, **arrays)
    return arrays, w2c


@pytest.mark.parametrize("object_jpegs", [True, False])
def test_tapvid3d_roundtrip(tmp_path, object_jpegs):
    arrays, w2c = _tapvid3d_file(tmp_path / "adt_seq.npz", object_jpegs=object_jpegs)
    ds = tapvid3d.TapVid3DDataset("test", root=tmp_path)
    assert len(tapvid3d.TapVid3DDataset("test", root=tmp_path, files=["adt_seq.npz"])) == 1
    with pytest.raises(DataError, match="no .npz files"):
        tapvid3d.TapVid3DDataset("test", root=tmp_path, files=["pstudio_other"])
    s = ds[0]
    assert s["name"] == "adt_seq" and s["video"].shape == (3, T, H, W)
    assert np.abs(s["video"].permute(1, 2, 3, 0).numpy() * 255 - _smooth_video()).max() < 12
    xyz = arrays["tracks_XYZ"].transpose(1, 0, 2)
    np.testing.assert_allclose(s["tracks_3d"].numpy(), xyz, atol=1e-6)
    np.testing.assert_allclose(s["track_depth"].numpy(), xyz[..., 2], atol=1e-6)
    front = xyz[..., 2] > 0
    u = 20 * xyz[..., 0] / xyz[..., 2] + 8
    v = 22 * xyz[..., 1] / xyz[..., 2] + 6
    np.testing.assert_allclose(s["tracks"].numpy()[front], np.stack([u, v], -1)[front], atol=1e-4)
    assert s["visibility"].tolist() == (arrays["visibility"].T & front).tolist()
    assert not bool(s["visibility"][2, 3])
    q = arrays["queries_xyt"]
    np.testing.assert_allclose(s["queries"].numpy(), np.stack([q[:, 2], q[:, 0], q[:, 1]], 1), atol=1e-5)
    # the query sits on its track at the query frame
    tq = s["queries"][:, 0].long()
    np.testing.assert_allclose(
        s["tracks"][torch.arange(4), tq].numpy(), s["queries"][:, 1:].numpy(), atol=1e-4
    )
    np.testing.assert_allclose(s["poses"].numpy(), np.linalg.inv(w2c), atol=1e-5)
    assert s["intrinsics"].shape == (T, 3, 3) and s["intrinsics"][0].tolist() == [
        [20, 0, 8],
        [0, 22, 6],
        [0, 0, 1],
    ]


def test_tapvid3d_static_camera_readme_names_and_window(tmp_path):
    _tapvid3d_file(tmp_path / "ps.npz", with_ext=False, rename=("tracks_XYZ", "tracks_xyz"))
    s = tapvid3d.TapVid3DDataset("test", root=tmp_path / "ps.npz", pixel_offset=0.5)[0]
    assert torch.equal(s["poses"], torch.eye(4).expand(T, 4, 4))
    assert s["intrinsics"][0, 0, 2] == 8.5
    win = tapvid3d.TapVid3DDataset("test", root=tmp_path, clip_len=3)[0]
    assert win["tracks"].shape[1] == 3 and win["queries"][:, 0].min() >= 0


def test_tapvid3d_errors(tmp_path):
    path = tmp_path / "a.npz"
    _tapvid3d_file(path, drop="tracks_XYZ")
    with pytest.raises(DataError) as e:
        tapvid3d.read_tapvid3d_npz(path)
    _assert_error(e, path, "missing key 'tracks_XYZ'")

    good = tmp_path / "good.npz"
    _tapvid3d_file(good)
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good.read_bytes()[:300])
    with pytest.raises(DataError) as e:
        tapvid3d.read_tapvid3d_npz(trunc)
    _assert_error(e, trunc, "truncated")

    junk = tmp_path / "junk.npz"
    junk.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DataError) as e:
        tapvid3d.read_tapvid3d_npz(junk)
    _assert_error(e, junk, "wrong magic number")

    bad = tmp_path / "badjpeg.npz"
    arrays, _ = _tapvid3d_file(bad)
    arrays["images_jpeg_bytes"][1] = b"\xff\xd8 broken"
    np.savez(bad, **arrays)
    with pytest.raises(DataError) as e:
        tapvid3d.read_tapvid3d_npz(bad)
    _assert_error(e, bad, "frame 1")


# ---------------------------------------------------------------------------------------------- PointOdyssey


def _po_sequence(root, name="seq0", N=6, legacy=False, drop=None):
    rng = np.random.default_rng(5)
    d = root / "train" / name
    (d / "rgbs").mkdir(parents=True)
    (d / "depths").mkdir()
    video = _smooth_video()
    depth_raw = rng.integers(1, 65535, (T, H, W)).astype(np.uint16)
    depth_raw[:, 0, 0] = 0
    for t in range(T):
        Image.fromarray(video[t]).save(d / "rgbs" / f"rgb_{t:05d}.jpg", quality=95)
        Image.fromarray(depth_raw[t]).save(d / "depths" / f"depth_{t:05d}.png")
    w2c = _rigid(rng, T)
    Kmat = np.array([[15.0, 0, W / 2], [0, 15.0, H / 2], [0, 0, 1]])
    cam = rng.uniform([-0.5, -0.4, 2], [0.5, 0.4, 4], (T, N, 3))
    cam[:, 5] = [3.0, 0.0, 2.0]  # outside the image (x = 15 * 1.5 + 8 = 30.5 > W)
    world = np.einsum("tij,tnj->tni", np.linalg.inv(w2c)[:, :3, :3], cam) + np.linalg.inv(w2c)[:, None, :3, 3]
    uv = np.stack([15 * cam[..., 0] / cam[..., 2] + W / 2, 15 * cam[..., 1] / cam[..., 2] + H / 2], -1)
    visibs = rng.random((T, N)) > 0.3
    visibs[0, 0] = True
    valids = np.ones((T, N), bool)
    valids[:, 1] = False
    arrays = {
        "trajs_2d": uv.astype(np.float32),
        "trajs_3d": world.astype(np.float32),
        "intrinsics": np.broadcast_to(Kmat, (T, 3, 3)).copy(),
        "extrinsics": w2c,
    }
    if legacy:
        arrays["visibilities"] = np.where(valids, visibs.astype(np.uint8), 2)
    else:
        arrays["visibs"], arrays["valids"] = visibs, valids
    if drop:
        arrays.pop(drop)
    np.savez(d / "anno.npz", **arrays)
    return {
        "cam": cam,
        "uv": uv,
        "visibs": visibs,
        "valids": valids,
        "w2c": w2c,
        "K": Kmat,
        "depth_raw": depth_raw,
    }


@pytest.mark.parametrize("legacy", [False, True])
def test_pointodyssey_roundtrip(tmp_path, legacy):
    g = _po_sequence(tmp_path, legacy=legacy)
    s = pointodyssey.PointOdysseyDataset("train", root=tmp_path)[0]
    assert s["video"].shape == (3, T, H, W)
    expected_depth = g["depth_raw"] / 65535.0 * 1000.0
    np.testing.assert_allclose(s["depth"][0].numpy(), expected_depth, rtol=1e-5)
    assert not bool(s["depth_valid"][0, 0, 0, 0]) and bool(s["depth_valid"][0, 0, 0, 1])
    np.testing.assert_allclose(s["poses"].numpy(), np.linalg.inv(g["w2c"]), atol=1e-5)
    np.testing.assert_allclose(s["intrinsics"][2].numpy(), g["K"], atol=1e-6)
    vis = (g["visibs"] & g["valids"]).T
    vis[5] = False  # outside the frame
    kept = np.flatnonzero(vis.any(1))
    assert 1 not in kept and 5 not in kept
    np.testing.assert_allclose(s["tracks"].numpy(), g["uv"].transpose(1, 0, 2)[kept], atol=1e-4)
    np.testing.assert_allclose(s["tracks_3d"].numpy(), g["cam"].transpose(1, 0, 2)[kept], atol=1e-4)
    np.testing.assert_allclose(s["track_depth"].numpy(), g["cam"][..., 2].T[kept], atol=1e-4)
    assert s["visibility"].tolist() == vis[kept].tolist()
    assert s["queries"][0].tolist()[0] == 0  # point 0 visible at frame 0


def test_pointodyssey_max_points_and_errors(tmp_path):
    _po_sequence(tmp_path)
    s = pointodyssey.PointOdysseyDataset("train", root=tmp_path, max_points=2, seed=1)[0]
    assert s["tracks"].shape[0] <= 2
    _po_sequence(tmp_path, name="seq1", drop="trajs_3d")
    ds = pointodyssey.PointOdysseyDataset("train", root=tmp_path)
    with pytest.raises(DataError) as e:
        ds[1]
    _assert_error(e, tmp_path / "train" / "seq1" / "anno.npz", "missing key 'trajs_3d'")
    bad_depth = tmp_path / "train" / "seq0" / "depths" / "depth_00002.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(bad_depth)
    with pytest.raises(DataError) as e:
        ds[0]
    _assert_error(e, bad_depth, "16-bit")
    bad_depth.write_bytes(b"\x00\x01\x02\x03garbage")
    with pytest.raises(DataError) as e:
        pointodyssey.read_pointodyssey_depth(bad_depth)
    _assert_error(e, bad_depth, "wrong magic number")


# ---------------------------------------------------------------------------------------------- Kubric


def _encode(x, lo, hi):
    return np.rint((x - lo) / (hi - lo) * 65535).astype(np.uint16)


def _kubric_arrays(T=3, H=8, W=10):
    rng = np.random.default_rng(7)
    focal, sensor = 35.0, 32.0
    f = focal / sensor * W
    z = rng.uniform(2, 9, (T, H, W))
    x = (np.arange(W) + 0.5 - W / 2) / f
    y = (np.arange(H) + 0.5 - H / 2) / f
    dist = z * np.sqrt(x[None, None] ** 2 + y[None, :, None] ** 2 + 1)
    fwd = rng.uniform(-3, 3, (T, H, W, 2))  # (d_row, d_col)
    bwd = rng.uniform(-2, 2, (T, H, W, 2))
    seg = rng.integers(0, 3, (T, H, W, 1)).astype(np.uint8)
    ang = 0.3
    arrays = {
        "video": _video(T, H, W),
        "depth": _encode(dist, 1.0, 20.0)[..., None],
        "depth_range": np.array([1.0, 20.0], np.float32),
        "forward_flow": _encode(fwd, -4.0, 4.0),
        "forward_flow_range": np.array([-4.0, 4.0], np.float32),
        "backward_flow": _encode(bwd, -4.0, 4.0),
        "backward_flow_range": np.array([-4.0, 4.0], np.float32),
        "segmentations": seg,
        "instances_is_dynamic": np.array([True, False]),
        "camera_positions": np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 1.0]]),
        # identity, then a rotation of `ang` about the world Z axis, (w, x, y, z)
        "camera_quaternions": np.array(
            [[1.0, 0, 0, 0], [np.cos(ang / 2), 0, 0, np.sin(ang / 2)], [1.0, 0, 0, 0]]
        ),
        "camera_focal_length": np.array(focal),
        "camera_sensor_width": np.array(sensor),
        "query_points": np.array([[0, 2.5, 3.5], [1, 4.0, 6.0]], np.float32),  # (t, y, x)
        "target_points": rng.uniform(0, 8, (2, T, 2)).astype(np.float32),
        "occluded": np.array([[False, True, False], [True, False, False]]),
    }
    return arrays, {"z": z, "fwd": fwd, "bwd": bwd, "f": f, "ang": ang}


def test_kubric_decode_and_conventions(tmp_path):
    arrays, g = _kubric_arrays()
    (tmp_path / "train").mkdir()
    np.savez(tmp_path / "train" / "movi_0.npz", **arrays)
    ds = kubric.KubricDataset("train", root=tmp_path)
    s = ds[0]
    np.testing.assert_allclose(s["depth"][0].numpy(), g["z"], rtol=2e-3)  # z-depth, not distance
    # flows: (d_row, d_col) -> (u, v); backward frame 0 and forward last frame undefined
    np.testing.assert_allclose(s["flow"][0, 1:].numpy(), g["bwd"][1:, ..., 1], atol=1e-3)
    np.testing.assert_allclose(s["flow"][1, 1:].numpy(), g["bwd"][1:, ..., 0], atol=1e-3)
    assert float(s["flow"][:, 0].abs().max()) == 0 and not bool(s["flow_valid"][0, 0].any())
    assert bool(s["flow_valid"][0, 1:].all())
    np.testing.assert_allclose(s["flow_forward"][0, :2].numpy(), g["fwd"][:2, ..., 1], atol=1e-3)
    assert float(s["flow_forward"][:, 2].abs().max()) == 0
    seg = arrays["segmentations"][..., 0]
    assert s["motion_mask"][0].numpy().tolist() == (seg == 1).astype(np.float32).tolist()
    Kmat = s["intrinsics"][0].numpy()
    np.testing.assert_allclose(Kmat, [[g["f"], 0, 5], [0, g["f"], 4], [0, 0, 1]], atol=1e-5)
    # Blender camera at the origin, identity rotation, looks down world -Z with +Y up:
    # world (1, 2, -5) is right of and above the centre -> l4p camera (1, -2, 5)
    P = s["poses"][0].double().numpy()
    cam = np.linalg.inv(P) @ np.array([1.0, 2.0, -5.0, 1.0])
    np.testing.assert_allclose(cam[:3], [1, -2, 5], atol=1e-6)
    # rotation about world Z: the camera's right axis (pose column 0) is rotated in the XY plane
    np.testing.assert_allclose(
        s["poses"][1, :3, 0].numpy(), [np.cos(g["ang"]), np.sin(g["ang"]), 0], atol=1e-6
    )
    np.testing.assert_allclose(s["poses"][1, :3, 3].numpy(), [1, 0, 0], atol=1e-6)
    assert s["queries"].tolist() == [[0, 3.5, 2.5], [1, 6.0, 4.0]]
    np.testing.assert_allclose(s["tracks"].numpy(), arrays["target_points"])
    assert s["visibility"].tolist() == (~arrays["occluded"]).tolist()


def test_kubric_folder_of_arrays_and_window(tmp_path):
    arrays, g = _kubric_arrays()
    d = tmp_path / "movi_folder"
    d.mkdir()
    for k, v in arrays.items():
        np.save(d / f"{k}.npy", v)
    ds = kubric.KubricDataset("val", root=tmp_path, clip_len=2, clip_stride=1)
    assert len(ds) == 2
    s = ds[1]
    assert s["video"].shape == (3, 2, 8, 10)
    np.testing.assert_allclose(s["depth"][0].numpy(), g["z"][1:], rtol=2e-3)
    assert float(s["flow"][:, 0].abs().max()) == 0  # the clip's first frame has no previous frame
    np.testing.assert_allclose(s["flow"][0, 1].numpy(), g["bwd"][2, ..., 1], atol=1e-3)
    assert s["queries"][:, 0].tolist() == [1.0, 0.0]  # re-sampled: "first" mode in the window


def test_kubric_errors(tmp_path):
    arrays, _ = _kubric_arrays()
    arrays.pop("depth_range")
    path = tmp_path / "nodr.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as e:
        kubric.read_kubric(path)
    _assert_error(e, path, "missing key 'depth_range'")

    arrays, _ = _kubric_arrays()
    for k in ("camera_focal_length", "camera_sensor_width"):
        arrays.pop(k)
    path = tmp_path / "nocam.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as e:
        kubric.read_kubric(path)
    _assert_error(e, path, "distance to the camera centre")

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x89PNG not an npz")
    with pytest.raises(DataError) as e:
        kubric.read_kubric(junk)
    _assert_error(e, junk, "wrong magic number")

    good = tmp_path / "good.npz"
    np.savez(good, **_kubric_arrays()[0])
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(DataError) as e:
        kubric.read_kubric(trunc)
    _assert_error(e, trunc, "truncated")

    d = tmp_path / "folder"
    d.mkdir()
    np.save(d / "video.npy", _video(2, 4, 4))
    (d / "depth.npy").write_bytes(b"junk")
    with pytest.raises(DataError) as e:
        kubric.read_kubric(d)
    _assert_error(e, d / "depth.npy", "wrong magic number")
