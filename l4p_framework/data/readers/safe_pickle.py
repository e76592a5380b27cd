"""Pickled data in dataset files, read without running code: a restricted unpickler.

A pickle names the functions the loader must call to rebuild it, so `pickle.loads` on a crafted
file runs whatever the file names (``os.system``, ``builtins.exec``, ...). Dataset files are
untrusted input, so l4p unpickles them with `RestrictedUnpickler`, whose `find_class` answers
only the names a pickled numpy array uses and refuses every other global with a `DataError`
naming the file. The admitted names do not reach numpy's own unpickling code either: numpy's
``dtype.__setstate__`` trusts its input (a crafted dtype state crashes the interpreter), so
each name maps to a stand-in here that checks its arguments and builds the array from a plain
dtype string, a shape and raw bytes.

Two allow-lists:

- `TAPVID_PICKLE`: a TAP-Vid pickle, i.e. dicts and lists (pickle opcodes, no global) of numpy
  arrays, numpy scalars and bytes, written with any protocol from 2 to 5;
- `BYTES_ARRAY`: the payload of an ``.npy`` object array of bytes (e.g. TAPVid-3D's
  ``images_jpeg_bytes``), which numpy writes as one pickled ndarray (protocol 3 or 4).
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError

_DTYPE_STR = re.compile(r"[biufcSUO]\d+")
_OBJECT = np.dtype(object)


class _Corrupt(Exception):
    """A stand-in refused its arguments; reported as a corrupt file."""


class _DType:
    """Stand-in for ``numpy.dtype(descr, align, copy)``; BUILD then gives its state."""

    def __init__(self, descr: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(descr, str) or not _DTYPE_STR.fullmatch(descr):
            raise _Corrupt(f"dtype {descr!r} (only bool, int, float, complex, bytes, str, object)")
        self.descr, self.state = descr, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def build(self) -> np.dtype:
        # state: (3, byte order, subarray, names, fields, itemsize or -1, alignment or -1, flags)
        s = self.state
        if not (isinstance(s, tuple) and len(s) == 8 and s[0] == 3 and s[1] in ("<", ">", "|", "=")):
            raise _Corrupt(f"dtype {self.descr!r} has state {s!r}")
        if s[2:5] != (None, None, None):
            raise _Corrupt(f"dtype {self.descr!r} has fields or a subarray (never in these files)")
        dtype = np.dtype(self.descr if s[1] in "|=" else s[1] + self.descr)
        if dtype.kind not in "biufcSUO" or dtype.fields is not None or dtype.subdtype is not None:
            raise _Corrupt(f"dtype {self.descr!r}")
        if s[5] not in (-1, dtype.itemsize):
            raise _Corrupt(f"dtype {self.descr!r} with item size {s[5]!r}")
        return dtype


def _dtype(value: Any) -> np.dtype:
    if not isinstance(value, _DType):
        raise _Corrupt(f"expected a dtype, got {type(value).__name__}")
    return value.build()


def _shape(value: Any) -> tuple[int, ...]:
    if not (isinstance(value, tuple) and all(type(n) is int and n >= 0 for n in value)):
        raise _Corrupt(f"array shape {value!r}")
    return value


class _Array:
    """Stand-in for ``_reconstruct(ndarray, (0,), b"b")``; BUILD gives (1, shape, dtype, fortran, data)."""

    def __init__(self, subtype: Any, shape: Any = (0,), typecode: Any = b"b") -> None:
        if subtype is not _NDARRAY:
            raise _Corrupt(f"array of type {subtype!r}")
        self.state = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def build(self, finish: Callable[[Any], Any]) -> np.ndarray:
        s = self.state
        if not (isinstance(s, tuple) and len(s) == 5 and s[0] == 1 and s[3] in (False, True)):
            raise _Corrupt("array state")
        shape, dtype, fortran, data = _shape(s[1]), _dtype(s[2]), bool(s[3]), s[4]
        count = math.prod(shape)
        if dtype == _OBJECT:
            if not (isinstance(data, list) and len(data) == count):
                raise _Corrupt(f"object array of shape {shape} needs a list of {count} items")
            data = [finish(item) for item in data]
        elif not (isinstance(data, bytes) and len(data) == count * dtype.itemsize):
            raise _Corrupt(f"{dtype} array of shape {shape} needs {count * dtype.itemsize} bytes")
        out = np.empty((0,), np.uint8)
        out.__setstate__((1, shape, dtype, fortran, data))  # numpy's own path, arguments checked
        return out


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stand-in for numpy's ``_frombuffer`` (protocol 5 arrays): the raw bytes of a C/F array."""
    dt, shape = _dtype(dtype), _shape(shape)
    if dt == _OBJECT or order not in ("C", "F") or not isinstance(buffer, (bytes, bytearray)):
        raise _Corrupt("protocol 5 array")
    if len(buffer) != math.prod(shape) * dt.itemsize:
        raise _Corrupt(f"{dt} array of shape {shape} needs {math.prod(shape) * dt.itemsize} bytes")
    return np.frombuffer(buffer, dtype=dt).reshape(shape, order=order)


def _scalar(dtype: Any, data: Any) -> Any:
    """Stand-in for numpy's ``scalar(dtype, raw bytes)`` (e.g. an np.float32 value)."""
    dt = _dtype(dtype)
    if dt == _OBJECT or not isinstance(data, bytes) or len(data) != dt.itemsize:
        raise _Corrupt(f"{dt} scalar")
    return np.frombuffer(data, dtype=dt)[0]


def _latin1_encode(text: Any, encoding: Any) -> bytes:
    """`_codecs.encode` as protocol 2 uses it for every bytes object: only (str, "latin1")."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Corrupt(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """`bytes()` as protocol 2 writes an empty bytes object (e.g. the data of a 0-size array)."""
    return b""


def _not_callable(*args: Any) -> Any:
    raise _Corrupt("numpy.ndarray called directly")


class _Global:
    """What `find_class` returns for an admitted name: a call of `func`. Without a ``__dict__``
    and with a refusing ``__setstate__``, the file cannot set attributes on it (pickle's BUILD)."""

    __slots__ = ("func",)

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __call__(self, *args: Any) -> Any:
        return self.func(*args)

    def __setstate__(self, state: Any) -> None:
        raise _Corrupt("state given to a global")


_NDARRAY = _Global(_not_callable)


def _numpy_names(module: str, name: str, func: Callable[..., Any]) -> dict[tuple[str, str], _Global]:
    """numpy 1 writes numpy.core.<module>, numpy 2 numpy._core.<module>: accept both spellings."""
    return {(f"numpy.core.{module}", name): _Global(func), (f"numpy._core.{module}", name): _Global(func)}


_ARRAY: dict[tuple[str, str], _Global] = {
    # an ndarray pickles as _reconstruct(ndarray, (0,), b"b") + BUILD (shape, dtype, raw bytes or,
    # for an object array, the list of its items)
    **_numpy_names("multiarray", "_reconstruct", _Array),
    ("numpy", "ndarray"): _NDARRAY,  # the type _reconstruct is asked to build
    ("numpy", "dtype"): _Global(_DType),  # dtype("f4", False, True) + BUILD (byte order, item size)
}

TAPVID_PICKLE: Mapping[tuple[str, str], _Global] = {
    **_ARRAY,
    # numpy scalars (np.float32(1.0) as a value in an example): scalar(dtype, raw bytes)
    **_numpy_names("multiarray", "scalar", _scalar),
    # protocol 5 writes contiguous arrays as _frombuffer(buffer, dtype, shape, order)
    **_numpy_names("numeric", "_frombuffer", _frombuffer),
    # protocol 2 has no bytes opcode: bytes are _codecs.encode(str, "latin1"), b"" is bytes()
    ("_codecs", "encode"): _Global(_latin1_encode),
    ("__builtin__", "bytes"): _Global(_empty_bytes),
    ("builtins", "bytes"): _Global(_empty_bytes),
}
"""Globals a TAP-Vid pickle (dicts/lists of numpy arrays, numpy scalars, bytes) may name."""

BYTES_ARRAY: Mapping[tuple[str, str], _Global] = dict(_ARRAY)
"""Globals the pickled payload of an ``.npy`` object array may name."""


class RestrictedUnpickler(pickle._Unpickler):
    """An Unpickler whose globals are the stand-ins of `allowed`; any other is a DataError.

    `where` (the file) and `what` (e.g. "a TAP-Vid pickle") make the error message. `load`
    returns the object with its stand-ins still inside: use `restricted_load`. It extends the
    pure-Python unpickler: the C one sizes its memo table from the indices the file gives, so a
    few bytes (a memo index near 2**32) make it allocate tens of GB.
    """

    def __init__(self, file: Any, *, allowed: Mapping[tuple[str, str], Any], where: str | Path, what: str):
        super().__init__(file)
        self.allowed, self.where, self.what = allowed, where, what

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.where}: the file asks to load {module}.{name}, which {self.what} never "
                "contains; refusing to unpickle it (the file is corrupt or crafted to run code)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(
            f"{self.where}: the file holds a persistent id, which {self.what} never contains; "
            "refusing to unpickle it"
        )


def _finish(obj: Any, memo: dict[int, Any]) -> Any:
    """Replace the stand-ins in an unpickled object by numpy arrays and dtypes (lists and dicts in
    place, so shared and self-referencing containers stay so)."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _Array):
        out = memo[key] = obj.build(lambda item: _finish(item, memo))
    elif isinstance(obj, _DType):
        out = memo[key] = obj.build()
    elif type(obj) is list:
        out = memo[key] = obj
        obj[:] = [_finish(item, memo) for item in obj]
    elif type(obj) is dict:
        out = memo[key] = obj
        items = [(_finish(k, memo), _finish(v, memo)) for k, v in obj.items()]
        obj.clear()
        obj.update(items)
    elif type(obj) in (tuple, set, frozenset):
        out = memo[key] = type(obj)(_finish(item, memo) for item in obj)
    elif isinstance(obj, _Global):  # an admitted name never called
        raise _Corrupt(f"a bare {getattr(obj, '__name__', obj)!r}")
    else:  # bytes, str, numbers, None, numpy scalars and arrays already built
        out = obj
    return out


def restricted_load(
    stream: Any, where: str | Path, *, allowed: Mapping[tuple[str, str], Any], what: str
) -> Any:
    """Unpickle from a binary `stream` admitting only `allowed` globals, stand-ins replaced.

    DataError naming `where` for a refused global and for any other failure (truncated or
    corrupt data, arguments a stand-in refuses).
    """
    try:
        # a structure check first: a length prefix larger than the file would otherwise make the
        # unpickler allocate that much (a corrupt BYTEARRAY8 length asks for up to 2**63 bytes)
        start = stream.tell()
        for _ in pickletools.genops(stream):
            pass
        stream.seek(start)
        return _finish(RestrictedUnpickler(stream, allowed=allowed, where=where, what=what).load(), {})
    except DataError:
        raise
    except _Corrupt as e:
        raise DataError(f"{where}: corrupt pickle ({e}); re-download the file ({what} expected)") from None
    except Exception as e:  # corrupt data raises many types (EOFError, UnpicklingError, KeyError, ...)
        raise DataError(
            f"{where}: truncated or corrupt pickle ({type(e).__name__}: {e}); "
            f"re-download the file ({what} expected)"
        ) from None


def safe_loads(data: bytes, where: str | Path) -> Any:
    """A TAP-Vid pickle's object from its bytes, with only `TAPVID_PICKLE` globals (DataError otherwise)."""
    return restricted_load(io.BytesIO(data), where, allowed=TAPVID_PICKLE, what="a TAP-Vid pickle")


def read_npy(data: bytes, where: str | Path, *, object_of_bytes: bool = False) -> np.ndarray:
    """One ``.npy`` array from its bytes, never unpickling anything but an object array of bytes.

    Numeric and fixed-width bytes ('S') arrays are read with ``allow_pickle=False``. An object
    array is refused unless `object_of_bytes`; then its pickled payload is read with the
    `BYTES_ARRAY` allow-list and every item must be bytes. DataError naming `where` otherwise.
    """
    fh = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fh)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(fh)
        if not dtype.hasobject:
            return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise DataError(f"{where}: truncated or corrupt .npy array ({e}); re-generate the file") from None
    if not object_of_bytes:
        raise DataError(
            f"{where}: array of dtype {dtype} holds pickled Python objects, which this format never "
            "stores; refusing to unpickle it"
        )
    what = "an object array of bytes"
    arr = restricted_load(fh, where, allowed=BYTES_ARRAY, what=what)
    if not isinstance(arr, np.ndarray) or arr.dtype != object or arr.shape != tuple(shape):
        got = f"{arr.dtype} array {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise DataError(f"{where}: pickled payload is a {got}, expected {what} of shape {tuple(shape)}")
    for i, item in enumerate(arr.flat):
        if not isinstance(item, bytes):
            raise DataError(f"{where}: item {i} is a {type(item).__name__}, expected bytes ({what})")
    return arr
