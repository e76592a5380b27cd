"""Batch collation of sample dicts (the keys of `l4p_framework.batch`)."""

from __future__ import annotations

from typing import Any

import torch

from .. import batch as B
from ..errors import InputError


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch with a leading batch dim B.

    Tensors are stacked (shapes must agree, else InputError naming the key and the shapes).
    Query-indexed keys (`batch.QUERY_KEYS`: queries (N, 3), tracks (N, T, 2), visibility (N, T),
    track_depth (N, T), tracks_3d (N, T, 3)) may differ in N: they are zero-padded (False for
    bool) to the largest N, and `query_valid` (B, N) bool marks the real queries. Non-tensor
    values (seed, name, ...) become lists of length B. Every sample must have the same keys. A
    sample's own `query_valid` (N,) is padded with False and combined with the padding mask.
    """
    if not samples:
        raise InputError("collate got an empty list of samples; pass at least one sample dict")
    keys = list(samples[0])
    for i, s in enumerate(samples[1:], 1):
        if set(s) != set(keys):
            missing = sorted(set(keys) - set(s))
            extra = sorted(set(s) - set(keys))
            raise InputError(
                f"collate: sample {i} has different keys from sample 0 (missing {missing}, extra {extra}); "
                "every sample of a batch must carry the same keys"
            )
    out: dict[str, Any] = {}
    query_keys = [
        k for k in keys if k in (*B.QUERY_KEYS, B.QUERY_VALID) and isinstance(samples[0][k], torch.Tensor)
    ]
    counts = None
    if query_keys:
        counts = [_query_count(s, query_keys) for s in samples]
        n_max = max(counts)
    for key in keys:
        values = [s[key] for s in samples]
        if not all(isinstance(v, torch.Tensor) for v in values):
            if any(isinstance(v, torch.Tensor) for v in values):
                raise InputError(f"collate: key {key!r} is a tensor in some samples and not in others")
            out[key] = list(values)
            continue
        if key in query_keys:
            values = [_pad_queries(key, v, n_max) for v in values]
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            listed = ", ".join(str(tuple(v.shape)) for v in values)
            raise InputError(
                f"collate: key {key!r} has different shapes across samples: {listed}; "
                "resize or crop the samples to one shape before batching"
            )
        dtypes = {v.dtype for v in values}
        if len(dtypes) > 1:
            raise InputError(
                f"collate: key {key!r} has different dtypes across samples: {sorted(map(str, dtypes))}"
            )
        out[key] = torch.stack(values)
    if counts is not None:
        arange = torch.arange(n_max)
        mask = torch.stack([arange < n for n in counts])
        if B.QUERY_VALID in out:  # samples brought their own mask: keep it, padding stays False
            mask = mask & out[B.QUERY_VALID].bool()
        out[B.QUERY_VALID] = mask
    return out


def _query_count(sample: dict[str, Any], query_keys: list[str]) -> int:
    counts = {k: int(sample[k].shape[0]) for k in query_keys if sample[k].ndim >= 1}
    if len(set(counts.values())) > 1:
        raise InputError(f"collate: query keys disagree on the query count N within one sample: {counts}")
    return next(iter(counts.values()), 0)


def _pad_queries(key: str, value: torch.Tensor, n_max: int) -> torch.Tensor:
    if value.ndim == 0:
        raise InputError(f"collate: query key {key!r} must have a leading query dim N, got a scalar")
    n = value.shape[0]
    if n == n_max:
        return value
    pad = torch.zeros((n_max - n, *value.shape[1:]), dtype=value.dtype)
    return torch.cat([value, pad])
