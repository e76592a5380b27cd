"""Head checkpoints: one safetensors file per head with metadata; strict, verified loading."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from .config import validate
from .errors import IncompatibleHeadError, WeightsError
from .io import sha256_file
from .safetensors_io import read_safetensors, strict_load, write_safetensors
from .specs import EncoderInfo, HeadSpec

HEAD_FORMAT = "l4p-head/1"


def head_seed(name: str, seed: int = 0) -> int:
    """Per-head RNG seed from the head name and the run seed (independent of other heads)."""
    return int.from_bytes(hashlib.sha256(f"{name}:{seed}".encode()).digest()[:8], "little") & (2**63 - 1)


def build_head(spec: HeadSpec, info: EncoderInfo, config: BaseModel, seed: int = 0) -> torch.nn.Module:
    """spec.build under an RNG seeded from (head name, seed): adding other heads never changes it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(head_seed(spec.name, seed))
        return spec.build(info, config)


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""Dtypes a weights file may store its floating tensors in."""


@torch.no_grad()
def round_weights(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Round every floating parameter and buffer of `module` to `dtype`'s precision, in place.

    The tensors keep their own dtype; afterwards, storing them as `dtype` and loading them back
    is exact, so a file written in `dtype` holds exactly the weights that were evaluated.
    """
    for tensor in module.state_dict(keep_vars=True).values():
        if tensor.is_floating_point():
            tensor.data.copy_(tensor.data.to(dtype))
    return module


def head_metadata(
    spec: HeadSpec, config: BaseModel, encoder: EncoderInfo, training: dict[str, Any] | None = None
) -> dict[str, str]:
    """The safetensors metadata of a head file (`HEAD_FORMAT`): head and plugin names and versions,
    the encoder it was trained on, its hooked layers, its config and `training` (JSON strings)."""
    return {
        "format": HEAD_FORMAT,
        "head": spec.name,
        "head_version": spec.version,
        "plugin": spec.distribution,
        "plugin_version": spec.distribution_version,
        "encoder_preset": encoder.preset,
        "encoder_fingerprint": encoder.fingerprint,
        "layers": json.dumps([*spec.layers(encoder, config)]),
        "config": config.model_dump_json(),
        "training": json.dumps(training or {}, sort_keys=True, default=str),
    }


def save_head(
    path: str | os.PathLike,
    module: torch.nn.Module,
    spec: HeadSpec,
    config: BaseModel,
    encoder: EncoderInfo,
    training: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> str:
    """Write a head's weights + metadata atomically; returns the file's sha256.

    Floating tensors are stored as `dtype` (float32, or float16 / bfloat16 for half-size files);
    loading casts them back into the module's float32 parameters.
    """
    metadata = head_metadata(spec, config, encoder, training)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in module.state_dict().items()}
    path = write_safetensors(path, state, metadata)
    return sha256_file(path)


def read_head_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a head file, JSON fields decoded."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as exc:
        raise WeightsError(f"head file {path} is unreadable or corrupt ({exc})") from None
    for key in ("layers", "config", "training"):
        if key in meta:
            meta[key] = json.loads(meta[key])
    return meta


def load_head(
    path: str | os.PathLike,
    spec: HeadSpec,
    encoder: EncoderInfo,
    *,
    sha256: str | None = None,
    config: BaseModel | None = None,
    allow_fingerprint_mismatch: bool = False,
) -> tuple[torch.nn.Module, BaseModel, dict[str, Any]]:
    """(module, config, metadata) of a head file, checked against `spec` and the active encoder.

    Verifies the sha256 (when given), the format, the head name, the encoder fingerprint (unless
    `allow_fingerprint_mismatch`, for experts) and loads strictly.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"head weights {path} do not exist; train the head (l4p-train-head --plugin {spec.name})"
        )
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise WeightsError(
                f"{path}: sha256 mismatch (registry says {sha256[:16]}..., file is {actual[:16]}...); "
                "the file changed since it was registered: re-register it or restore the file"
            )
    tensors, meta = read_safetensors(path)
    if meta.get("format") != HEAD_FORMAT:
        raise WeightsError(f"{path} is not an l4p head file (format {meta.get('format')!r})")
    if meta.get("head") != spec.name:
        raise IncompatibleHeadError(f"{path} holds head {meta.get('head')!r}, not {spec.name!r}")
    recorded = meta.get("encoder_fingerprint", "")
    if recorded != encoder.fingerprint and not allow_fingerprint_mismatch:
        raise IncompatibleHeadError(
            f"head {spec.name!r} ({path}) was trained against encoder fingerprint {recorded[:16]}... "
            f"but the active encoder ({encoder.preset}) has fingerprint {encoder.fingerprint[:16]}...; "
            "retrain the head on this encoder (or pass allow_fingerprint_mismatch=True if you know better)"
        )
    if config is None:
        config = validate(
            spec.config_model, json.loads(meta.get("config", "{}")), f"{path} metadata", spec.name
        )
    module = build_head(spec, encoder, config)
    strict_load(module, tensors, f"head file {path}")
    meta["config"] = json.loads(meta.get("config", "{}"))
    return module, config, meta
