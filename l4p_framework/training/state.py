"""Nested training state (state dicts, optimiser and scheduler states, RNG states) <-> safetensors.

Training checkpoints hold more than weights: optimiser states are nested dicts with int keys,
tuples and scalars. They are stored without pickle: every tensor goes into the safetensors file
under a path-like key, and the structure (with the scalars) goes into the metadata as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError
from ..safetensors_io import read_safetensors, write_safetensors

STATE_FORMAT = "l4p-train-state/1"


def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON skeleton, tensors): tensors replaced by {"__tensor__": key}, tuples / int-keyed dicts tagged."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            key = path or "_"
            tensors[key] = x.detach().cpu().clone().contiguous()
            return {"__tensor__": key}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x) and "__tensor__" not in x:
                return {k: walk(v, f"{path}/{k}" if path else k) for k, v in x.items()}
            return {"__items__": [[k, walk(v, f"{path}/{k}" if path else str(k))] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, bool | int | float | str):
            return x
        raise TypeError(f"cannot store {type(x).__name__} at {path!r} in a training state")

    return walk(obj, prefix), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of flatten_state."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if "__items__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__items__"]}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write a nested training state atomically as one safetensors file."""
    skeleton, tensors = flatten_state(state)
    return write_safetensors(path, tensors, {"format": STATE_FORMAT, "state": json.dumps(skeleton)})


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state written by save_state (WeightsError if it is not one)."""
    tensors, meta = read_safetensors(path)
    if meta.get("format") != STATE_FORMAT:
        raise WeightsError(f"{path} is not an l4p training checkpoint (format {meta.get('format')!r})")
    return unflatten_state(json.loads(meta["state"]), tensors)
