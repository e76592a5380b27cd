"""The fixed 1-D sinusoidal position table of VideoMAE (l4p-model.md §1.2), regenerated bit-exactly."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch


@lru_cache(maxsize=16)
def _table(num_tokens: int, width: int) -> torch.Tensor:
    position = np.arange(num_tokens, dtype=np.float64)[:, None]
    channel = np.arange(width)
    angle = position / np.power(10000, 2 * (channel // 2) / width)  # float64, as the reference
    angle[:, 0::2] = np.sin(angle[:, 0::2])
    angle[:, 1::2] = np.cos(angle[:, 1::2])
    return torch.from_numpy(angle.astype(np.float32))[None]


def sinusoid_table(num_tokens: int, width: int) -> torch.Tensor:
    """Position table (1, num_tokens, width) float32 over the flattened token index p.

    Channel j gets angle p / 10000^(2*floor(j/2)/width); even channels sin, odd channels cos
    (interleaved). Computed in float64 with numpy, then cast to float32.
    """
    return _table(num_tokens, width).clone()
