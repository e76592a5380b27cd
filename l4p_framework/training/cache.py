"""Feature cache: the frozen encoder's token features of a dataset, computed once, read by training.

A cache is a folder ``<root>/<id>/`` holding safetensors shards and ``index.json``. Its id is a
hash of what determines the features: the encoder fingerprint, the data (name, options, split),
the layers and the storage dtype. Each clip stores its features (one (N, C) tensor per layer)
and its sample (the dataset's tensors: video and every target), so training from a cache reads
both and runs neither the encoder nor the data generator.

float32 caches are exact: `FeatureCache` returns the very tensors the encoder produced (the
encoder is frozen and its per-clip result does not depend on the batch it ran in). bfloat16 /
float16 caches halve the disk and are within `DTYPE_TOLERANCE` (relative) of the live features.
`index.json` is written last and atomically, so an interrupted build is never mistaken for a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import STORAGE_DTYPES
from ..errors import L4PError
from ..features import TokenFeatures
from ..io import atomic_write_text
from ..safetensors_io import write_safetensors
from ..specs import Layer
from .distributed import DistContext

CACHE_FORMAT = "l4p-feature-cache/1"
DTYPES = STORAGE_DTYPES
DTYPE_TOLERANCE = {"float32": 0.0, "bfloat16": 2.0**-8, "float16": 2.0**-11}
"""Largest relative error |cached - live| / |live| of one element for each storage dtype."""


class CacheError(L4PError):
    """A feature cache is missing, incomplete, or was built for another encoder / data / layers."""


def _layer_key(layer: Layer) -> str:
    return str(layer)


def _parse_layer(text: str) -> Layer:
    return text if text == "final" else int(text)


def _canonical_layers(layers: Sequence[Layer]) -> list[Layer]:
    return sorted(dict.fromkeys(layers), key=lambda x: (x == "final", x if x != "final" else 0))


def encoder_precision(encoder) -> str:
    """The dtype an encoder computes in ("float32", "bfloat16"): part of a cache's identity, since
    the same weights give other features in another precision."""
    return str(encoder.dtype).removeprefix("torch.")


def cache_id(
    fingerprint: str,
    data: str,
    options: dict,
    split: str,
    layers: Sequence[Layer],
    dtype: str,
    precision: str = "float32",
) -> str:
    """The folder name of a cache: sha256 of its identity, 16 hex digits."""
    identity = {
        "fingerprint": fingerprint,
        "precision": precision,
        "data": data,
        "options": options,
        "split": split,
        "layers": [_layer_key(x) for x in _canonical_layers(layers)],
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _progress(done: int, total: int, start: float, what: str) -> None:
    rate = done / max(time.perf_counter() - start, 1e-9)
    end = "\n" if done >= total else ""
    print(f"\r{what}: {done}/{total} clips  {rate:.2f} clips/s", end=end, file=sys.stderr, flush=True)


@torch.no_grad()
def build_cache(
    encoder,
    dataset: torch.utils.data.Dataset,
    layers: Sequence[Layer],
    out_dir: str | os.PathLike,
    split: str,
    num_clips: int | None = None,
    dtype: str = "float32",
    *,
    data: str = "custom",
    options: dict[str, Any] | None = None,
    batch_size: int = 1,
    shard_size: int = 32,
    num_workers: int = 0,
    ctx: DistContext | None = None,
    progress: bool = False,
) -> FeatureCache:
    """Encode the first `num_clips` clips of `dataset` and store features + samples under `out_dir`.

    encoder: a frozen VideoEncoder (its fingerprint keys the cache). layers: the token layers to
    store (the union of the heads that will read them). out_dir: the cache root (the registry's
    cache.dir); the cache goes into out_dir/<cache_id>/. data / options: the dataset's name and
    build options (part of the key). Under torchrun (`ctx`) each rank encodes its share of clips
    and rank 0 writes the index. Returns the opened cache.
    """
    from ..data.collate import collate

    if dtype not in DTYPES:
        raise CacheError(f"cache dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if not encoder.frozen:
        raise CacheError("the encoder must be frozen to cache its features (its fingerprint keys the cache)")
    ctx = ctx or DistContext(device=next(encoder.parameters()).device)
    options = dict(options or {})
    layers = _canonical_layers(layers)
    total = len(dataset) if num_clips is None else min(int(num_clips), len(dataset))
    if total <= 0:
        raise CacheError(f"nothing to cache: the dataset has {len(dataset)} clips, num_clips={num_clips}")
    fingerprint = encoder.fingerprint
    precision = encoder_precision(encoder)
    ident = cache_id(fingerprint, data, options, split, layers, dtype, precision)
    path = Path(out_dir) / ident
    if ctx.is_main:
        if (path / "index.json").exists():
            (path / "index.json").unlink()  # an index only ever describes a complete build
        if path.exists():
            for old in path.glob("shard-*.safetensors"):
                old.unlink()
        path.mkdir(parents=True, exist_ok=True)
    ctx.barrier()
    mine = ctx.shard(list(range(total)))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, mine),
        batch_size=batch_size,
        collate_fn=lambda items: items,
        num_workers=num_workers,
    )
    store = DTYPES[dtype]
    device = next(encoder.parameters()).device
    shards: list[dict] = []
    meta: dict[str, dict] = {}
    pending: dict[str, torch.Tensor] = {}
    pending_clips: list[int] = []
    geometry: dict[str, Any] = {}
    sample_keys: dict[str, dict] = {}
    position = 0
    start = time.perf_counter()

    def flush() -> None:
        if not pending_clips:
            return
        name = f"shard-{ctx.rank:03d}-{len(shards):05d}.safetensors"
        write_safetensors(path / name, pending, {"format": CACHE_FORMAT})
        shards.append({"file": name, "clips": list(pending_clips)})
        pending.clear()
        pending_clips.clear()

    for items in loader:
        video = collate([{"video": s["video"]} for s in items])["video"].to(device)
        features = encoder(video, layers)
        if not geometry:
            geometry = {
                "grid_size": list(features.grid_size),
                "patch": list(features.patch),
                "input_size": list(features.input_size),
            }
        for j, sample in enumerate(items):
            clip = mine[position]
            position += 1
            for layer in layers:
                pending[f"{clip:08d}/f/{_layer_key(layer)}"] = features[layer][j].to("cpu", store, copy=True)
            extra = {}
            for key, value in sample.items():
                if isinstance(value, torch.Tensor):
                    pending[f"{clip:08d}/b/{key}"] = value.detach().cpu().clone()
                    sample_keys.setdefault(key, {"dtype": str(value.dtype), "shape": list(value.shape)})
                elif value is None or isinstance(value, bool | int | float | str):
                    extra[key] = value
            meta[str(clip)] = extra
            pending_clips.append(clip)
            if len(pending_clips) >= shard_size:
                flush()
        if progress and ctx.is_main:
            _progress(min(position * ctx.world_size, total), total, start, f"caching {data}/{split}")
    flush()
    part = {"shards": shards, "meta": meta, "geometry": geometry, "sample_keys": sample_keys}
    from .distributed import all_gather_objects

    parts = all_gather_objects(part, ctx)
    if ctx.is_main:
        index = {
            "format": CACHE_FORMAT,
            "id": ident,
            "encoder_fingerprint": fingerprint,
            "encoder_preset": encoder.config.name,
            "encoder_precision": precision,
            "data": data,
            "options": options,
            "split": split,
            "layers": [_layer_key(x) for x in layers],
            "dtype": dtype,
            "num_clips": total,
            **next(p["geometry"] for p in parts if p["geometry"]),
            "sample_keys": {k: v for p in parts for k, v in p["sample_keys"].items()},
            "shards": sorted((s for p in parts for s in p["shards"]), key=lambda s: s["file"]),
            "meta": {k: v for p in parts for k, v in p["meta"].items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        atomic_write_text(path / "index.json", json.dumps(index, indent=1))
    ctx.barrier()
    return FeatureCache.open(path, fingerprint=fingerprint)


class FeatureCache:
    """An opened, complete feature cache (see the module docstring)."""

    def __init__(self, path: Path, index: dict[str, Any]):
        self.path = path
        self.index = index
        self._where: dict[int, str] = {c: s["file"] for s in index["shards"] for c in s["clips"]}

    @classmethod
    def open(cls, path: str | os.PathLike, *, fingerprint: str | None = None) -> FeatureCache:
        """Open the cache folder `path`; refuse it if built for another encoder than `fingerprint`."""
        path = Path(path)
        index_file = path / "index.json"
        if not index_file.is_file():
            raise CacheError(
                f"{path} is not a complete feature cache (no index.json); rebuild it with `l4p cache build`"
            )
        try:
            index = json.loads(index_file.read_text())
        except json.JSONDecodeError as exc:
            raise CacheError(f"{index_file} is not valid JSON ({exc}); rebuild the cache") from None
        if index.get("format") != CACHE_FORMAT:
            raise CacheError(f"{index_file}: format {index.get('format')!r} is not {CACHE_FORMAT!r}")
        cache = cls(path, index)
        if fingerprint is not None and cache.fingerprint != fingerprint:
            raise CacheError(
                f"feature cache {path} was built with encoder fingerprint {cache.fingerprint[:16]}... "
                f"({index.get('encoder_preset')}), but the active encoder has fingerprint {fingerprint[:16]}...; "
                "its features are not this encoder's: rebuild the cache (l4p cache build) or delete it"
            )
        return cache

    # -- identity ---------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self.index["encoder_fingerprint"]

    @property
    def precision(self) -> str:
        """The dtype the encoder computed the features in (caches from before this field: float32)."""
        return self.index.get("encoder_precision", "float32")

    @property
    def layers(self) -> list[Layer]:
        return [_parse_layer(x) for x in self.index["layers"]]

    @property
    def dtype(self) -> str:
        return self.index["dtype"]

    @property
    def tolerance(self) -> float:
        return DTYPE_TOLERANCE[self.dtype]

    def __len__(self) -> int:
        return int(self.index["num_clips"])

    def matches(self, data: str, options: dict, split: str, layers: Sequence[Layer], num_clips: int) -> bool:
        """True when this cache holds these data / split, at least these layers and clips."""
        i = self.index
        same_options = json.dumps(i["options"], sort_keys=True) == json.dumps(
            options, sort_keys=True, default=str
        )
        return (
            i["data"] == data
            and same_options
            and i["split"] == split
            and set(map(_layer_key, layers)) <= set(i["layers"])
            and len(self) >= num_clips
        )

    def summary(self) -> dict[str, Any]:
        size = sum((self.path / s["file"]).stat().st_size for s in self.index["shards"])
        keys = (
            "id",
            "data",
            "split",
            "num_clips",
            "layers",
            "dtype",
            "encoder_preset",
            "encoder_fingerprint",
            "encoder_precision",
        )
        return {
            **{k: self.index.get(k) for k in keys},
            "options": self.index["options"],
            "bytes": size,
            "path": str(self.path),
        }

    # -- reading ----------------------------------------------------------------------------------
    def dataset(self, layers: Sequence[Layer] | None = None, num_clips: int | None = None) -> CachedFeatures:
        """A Dataset of (features {layer: (N, C) float32}, sample dict) pairs, clip order."""
        layers = list(layers) if layers is not None else self.layers
        missing = [x for x in layers if _layer_key(x) not in self.index["layers"]]
        if missing:
            raise CacheError(f"feature cache {self.path} has layers {self.index['layers']}, not {missing}")
        n = len(self) if num_clips is None else num_clips
        if n > len(self):
            raise CacheError(f"feature cache {self.path} holds {len(self)} clips, {n} were asked for")
        return CachedFeatures(self, layers, n)

    def token_features(self, tokens: dict[Layer, torch.Tensor]) -> TokenFeatures:
        """Batched tokens {layer: (B, N, C)} wrapped with this cache's grid / patch / fingerprint."""
        i = self.index
        return TokenFeatures(
            tokens=tokens,
            grid_size=tuple(i["grid_size"]),
            patch=tuple(i["patch"]),
            input_size=tuple(i["input_size"]),
            fingerprint=self.fingerprint,
        )


class CachedFeatures(torch.utils.data.Dataset):
    """Items: (features {layer: (N, C) float32}, sample dict) of clip i of a FeatureCache."""

    def __init__(self, cache: FeatureCache, layers: list[Layer], length: int):
        self.cache = cache
        self.layers = layers
        self.length = length
        self._handles: dict[str, Any] = {}

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict:  # DataLoader workers re-open the shards themselves
        return {**self.__dict__, "_handles": {}}

    def _handle(self, name: str):
        from safetensors import safe_open

        handle = self._handles.get(name)
        if handle is None:
            try:
                handle = safe_open(str(self.cache.path / name), framework="pt")
            except Exception as exc:
                raise CacheError(
                    f"feature cache shard {self.cache.path / name} is unreadable ({exc})"
                ) from None
            self._handles[name] = handle
        return handle

    def __getitem__(self, i: int) -> tuple[dict[Layer, torch.Tensor], dict[str, Any]]:
        i = int(i)
        if not 0 <= i < self.length:
            raise IndexError(f"cached clip {i} out of range [0, {self.length})")
        handle = self._handle(self.cache._where[i])
        prefix = f"{i:08d}/"
        features = {
            layer: handle.get_tensor(f"{prefix}f/{_layer_key(layer)}").float() for layer in self.layers
        }
        sample: dict[str, Any] = {
            k: handle.get_tensor(f"{prefix}b/{k}") for k in self.cache.index["sample_keys"]
        }
        sample.update(self.cache.index["meta"].get(str(i), {}))
        return features, sample


def collate_cached(cache: FeatureCache):
    """A collate_fn turning [(features, sample), ...] into (TokenFeatures, batch)."""
    from ..data.collate import collate

    def fn(items: list[tuple[dict, dict]]) -> tuple[TokenFeatures, dict[str, Any]]:
        layers = list(items[0][0])
        tokens = {layer: torch.stack([f[layer] for f, _ in items]) for layer in layers}
        return cache.token_features(tokens), collate([s for _, s in items])

    return fn


def list_caches(root: str | os.PathLike) -> list[FeatureCache]:
    """Every complete cache under `root` (incomplete builds are skipped)."""
    root = Path(root)
    out = []
    for index in sorted(root.glob("*/index.json")) if root.is_dir() else []:
        try:
            out.append(FeatureCache.open(index.parent))
        except CacheError:
            continue
    return out


def find_cache(
    root: str | os.PathLike,
    *,
    fingerprint: str,
    data: str,
    options: dict,
    split: str,
    layers: Sequence[Layer],
    num_clips: int,
    dtype: str | None = None,
    precision: str | None = None,
) -> tuple[FeatureCache | None, list[FeatureCache]]:
    """(a matching cache or None, caches of the same data/layers built for another encoder).

    With `precision` given, only caches computed in that encoder precision match. Among several
    matches, one of storage `dtype` is preferred, then the one with fewest layers.
    """
    matches, stale = [], []
    for cache in list_caches(root):
        if not cache.matches(data, options, split, layers, num_clips):
            continue
        if precision is not None and cache.precision != precision:
            continue
        (matches if cache.fingerprint == fingerprint else stale).append(cache)
    matches.sort(key=lambda c: (dtype is not None and c.dtype != dtype, len(c.layers)))
    return (matches[0] if matches else None), stale


def remove_cache(cache: FeatureCache) -> None:
    """Delete a cache folder (index first, so a crash never leaves a valid-looking half)."""
    (cache.path / "index.json").unlink(missing_ok=True)
    shutil.rmtree(cache.path, ignore_errors=True)
