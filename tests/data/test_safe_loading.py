"""Dataset files are untrusted input: a crafted TAP-Vid pickle or TAPVid-3D .npz runs nothing.

Every crafted file here would run code (or crash the interpreter) under ``pickle.loads`` /
``np.load(allow_pickle=True)``; the readers must refuse it with a one-line DataError naming the
file, and a sentinel file that the payload would create must never appear.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import re
import resource
import struct
import zipfile

import numpy as np
import pytest

from l4p_framework.cli.main import main
from l4p_framework.data.readers import tapvid, tapvid3d
from l4p_framework.errors import DataError

T, H, W = 4, 8, 8


class Payload:
    """Pickles as a call of `func(arg)`: what a crafted file does."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _payloads(sentinel):
    return {
        "os.system": Payload(os.system, f"touch {sentinel}"),
        "builtins.exec": Payload(builtins.exec, f"open({str(sentinel)!r}, 'w').close()"),
    }


def _names_global(msg: str, func) -> bool:
    """The message names the refused global (os.system pickles as posix.system; protocol 2 writes
    builtins as __builtin__)."""
    return re.search(rf"asks to load \w+\.{func.__name__}\b", msg) is not None


def _example(seed=0):
    rng = np.random.default_rng(seed)
    occ = rng.random((3, T)) > 0.5
    occ[:, 0] = False
    return {
        "video": rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8),
        "points": rng.random((3, T, 2)).astype(np.float32),
        "occluded": occ,
    }


def _one_error_line(err: str) -> list[str]:
    lines = [line for line in err.splitlines() if line.startswith("l4p: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec"])
def test_payloads_really_run_code_under_plain_pickle(tmp_path, kind):
    """The control: the payloads below are real, so the tests refusing them can fail."""
    sentinel = tmp_path / "SENTINEL"
    pickle.loads(pickle.dumps(_payloads(sentinel)[kind]))
    assert sentinel.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("kind", ["os.system", "builtins.exec"])
@pytest.mark.parametrize("place", ["top", "in-example", "as-frame"])
def test_tapvid_reader_refuses_code_in_a_pickle(tmp_path, kind, protocol, place):
    sentinel = tmp_path / "SENTINEL"
    payload = _payloads(sentinel)[kind]
    ex = _example()
    if place == "top":
        obj = payload
    elif place == "in-example":
        obj = {"bear": dict(ex, points=payload)}
    else:  # Kinetics layout: frames are a list of JPEG bytes
        obj = {"bear": dict(ex, video=[b"\xff\xd8", payload, b"\xff\xd8", b"\xff\xd8"])}
    path = tmp_path / "tapvid_davis.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    for load in (tapvid.load_tapvid_pickle, lambda p: tapvid.TapVidDataset("test", root=p)):
        with pytest.raises(DataError) as e:
            load(path)
        msg = str(e.value)
        assert str(path) in msg and _names_global(msg, payload.func) and "refusing" in msg, msg
        assert "\n" not in msg
    assert not sentinel.exists()


def test_l4p_eval_refuses_a_crafted_tapvid_pickle(tmp_path, capsys):
    pytest.importorskip("l4p_head_depth")
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "tapvid_davis.pkl"
    path.write_bytes(pickle.dumps({"bear": dict(_example(), occluded=_payloads(sentinel)["os.system"])}))
    code = main(["eval", "--heads", "depth", "--registry", "none", "--data", "tapvid", f"root={path}"])
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = _one_error_line(err)
    assert str(path) in line and "system" in line and "refusing" in line
    assert not sentinel.exists()


def test_a_crafted_dtype_state_is_refused_not_a_crash(tmp_path):
    """numpy's dtype.__setstate__ trusts its input: this state segfaults `pickle.loads`
    (numpy 2.4); the reader must never hand it to numpy."""

    class BadDType:
        def __reduce__(self):
            return (np.dtype, ("f4", False, True), (3, "<", (None, None), -1, -1, 0))

    class ArrayOfBadDType:
        def __reduce__(self):
            reconstruct = np.zeros(1).__reduce__()[0]
            return (reconstruct, (np.ndarray, (0,), b"b"), (1, (3, T, 2), BadDType(), False, b"\0" * 96))

    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps({"bear": dict(_example(), points=ArrayOfBadDType())}))
    with pytest.raises(DataError, match="corrupt pickle") as e:
        tapvid.load_tapvid_pickle(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b"\x00" * 16 + b".",  # BYTEARRAY8 of 1 TiB
        b"\x80\x04N" + b"r" + struct.pack("<I", 2**32 - 1) + b".",  # memo index 2**32 - 1
    ],
    ids=["bytearray8-length", "memo-index"],
)
def test_length_fields_cannot_make_the_reader_allocate(tmp_path, data):
    """A few bytes must not ask for gigabytes: the C unpickler sizes buffers and its memo table from
    such fields before reading."""
    path = tmp_path / "bomb.pkl"
    path.write_bytes(data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError) as e:
        tapvid.load_tapvid_pickle(path)
    assert str(path) in str(e.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_corrupt_pickles_give_data_errors_only(tmp_path):
    """Every truncation and a few hundred seeded byte flips of a valid file: a DataError naming the
    file or a load, never another exception (nor a crash)."""
    ex = dict(_example(), extra=np.float32(0.5), empty=np.zeros(0))
    path = tmp_path / "c.pkl"
    rng = np.random.default_rng(0)
    outcomes = {"loaded": 0, "refused": 0}
    for protocol in (2, 3, 4, 5):
        good = pickle.dumps({"bear": ex, "dog": dict(ex, video=[b"\xff\xd8"] * T)}, protocol=protocol)
        cases = [good[:n] for n in range(2, len(good), 13)]
        for _ in range(100):
            bad = bytearray(good)
            for i in rng.integers(2, len(bad), size=rng.integers(1, 4)):
                bad[i] = rng.integers(0, 256)
            cases.append(bytes(bad))
        for data in cases:
            path.write_bytes(data)
            try:
                tapvid.load_tapvid_pickle(path)
                outcomes["loaded"] += 1
            except DataError as e:
                assert str(path) in str(e) and "\n" not in str(e)
                outcomes["refused"] += 1
    assert outcomes["refused"] > 300, outcomes


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_legitimate_tapvid_pickles_load_exactly(tmp_path, protocol):
    """What `pickle.dump` writes for the documented layouts (any protocol) loads unchanged."""
    davis = _example(0)
    davis["score"] = np.float32(0.25)  # a numpy scalar
    davis["fortran"] = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    davis["empty"] = np.zeros((0, 2), np.int64)
    kinetics = dict(_example(1), video=[bytes([i]) * (i + 1) for i in range(T)], names=np.array(["ab"]))
    objects = dict(_example(2), video=np.array([b"\xff\xd8\x00"] * T, dtype=object))
    written = {"bear": davis, "kinetics": kinetics, "objects": objects}
    path = tmp_path / "tapvid.pkl"
    data = pickle.dumps(written, protocol=protocol)
    versions = [data]
    if protocol <= 3:  # names as numpy 1 writes them (GLOBAL opcodes are plain text at these protocols)
        assert b"numpy._core." in data
        versions.append(data.replace(b"numpy._core.", b"numpy.core."))
    for version in versions:
        path.write_bytes(version)
        loaded = dict(tapvid.load_tapvid_pickle(path))
        assert list(loaded) == list(written)
        for name, ex in written.items():
            assert list(loaded[name]) == list(ex)
            for key, value in ex.items():
                got = loaded[name][key]
                assert type(got) is type(value), (name, key)
                if isinstance(value, np.ndarray):
                    assert got.dtype == value.dtype and got.shape == value.shape, (name, key)
                    assert got.flags.f_contiguous == value.flags.f_contiguous, (name, key)
                    assert np.array_equal(got, value), (name, key)
                else:
                    assert got == value, (name, key)
    list_file = tmp_path / "rgb_stacking.pkl"
    list_file.write_bytes(pickle.dumps([davis], protocol=protocol))
    assert tapvid.load_tapvid_pickle(list_file)[0][0] == "rgb_stacking_0000"


# ---------------------------------------------------------------------------------------------- TAPVid-3D


def _tapvid3d_arrays():
    rng = np.random.default_rng(1)
    from PIL import Image

    frames = []
    for _ in range(T):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(buf, format="JPEG")
        frames.append(buf.getvalue())
    xyz = rng.uniform([-1, -1, 2], [1, 1, 5], (T, 3, 3)).astype(np.float32)
    return {
        "images_jpeg_bytes": np.array(frames, dtype=object),
        "queries_xyt": np.zeros((3, 3), np.float32),
        "tracks_XYZ": xyz,
        "visibility": np.ones((T, 3), bool),
        "fx_fy_cx_cy": np.array([10.0, 10.0, 4.0, 4.0]),
    }


def _npz_with_pickled_member(path, arrays, key, payload, shape):
    """An .npz whose `key` entry is an object-dtype .npy holding `payload` pickled (as numpy would)."""
    np.savez(path, **{k: v for k, v in arrays.items() if k != key})
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{key}.npy", header.getvalue() + pickle.dumps(payload, protocol=3))


@pytest.mark.parametrize("key", ["images_jpeg_bytes", "queries_xyt"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.exec"])
def test_tapvid3d_reader_refuses_code_in_an_npz(tmp_path, key, kind):
    sentinel = tmp_path / "SENTINEL"
    payload = _payloads(sentinel)[kind]
    path = tmp_path / "adt_seq.npz"
    _npz_with_pickled_member(path, _tapvid3d_arrays(), key, payload, (T,))
    ds = tapvid3d.TapVid3DDataset("test", root=path)  # indexing reads headers only
    for load in (tapvid3d.read_tapvid3d_npz, lambda p: ds[0]):
        with pytest.raises(DataError) as e:
            load(path)
        msg = str(e.value)
        assert str(path) in msg and key in msg and "refusing" in msg, msg
        if key == "images_jpeg_bytes":  # the one object entry allowed: its payload names the global
            assert _names_global(msg, payload.func)
    assert not sentinel.exists()


def test_tapvid3d_object_frames_must_be_bytes(tmp_path):
    """An object array of ints is admitted by the unpickler but bytes(n) would allocate n bytes."""
    path = tmp_path / "ints.npz"
    _npz_with_pickled_member(
        path, _tapvid3d_arrays(), "images_jpeg_bytes", np.array([3, 4, 5, 6], dtype=object), (T,)
    )
    with pytest.raises(DataError, match=r"item 0 is a int, expected bytes"):
        tapvid3d.read_tapvid3d_npz(path)


def test_l4p_eval_refuses_a_crafted_tapvid3d_npz(tmp_path, capsys):
    pytest.importorskip("l4p_head_depth")
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "adt_seq.npz"
    payload = _payloads(sentinel)["builtins.exec"]
    _npz_with_pickled_member(path, _tapvid3d_arrays(), "images_jpeg_bytes", payload, (T,))
    code = main(["eval", "--heads", "depth", "--registry", "none", "--data", "tapvid3d", f"root={path}"])
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = _one_error_line(err)
    assert str(path) in line and "builtins.exec" in line
    assert not sentinel.exists()
