"""Training data: dataset options fitted to the encoder, and a deterministic, resumable data order.

The order of training clips is a pure function of (run seed, position in the run): epoch e is a
permutation of the clips drawn from a generator seeded by `head_seed("data/epoch<e>", seed)`, and
micro-batch k of the run takes the next `batch_size` positions. So a resumed run continues with
exactly the clips the uninterrupted run would have seen, every head trained in the run sees the
same clips, and under torchrun each rank takes its contiguous slice of every global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..checkpoints import head_seed
from ..errors import ConfigError
from ..specs import DatasetSpec, HeadSpec

WINDOW_OPTIONS: dict[str, tuple[str, str, str]] = {"synth4d": ("num_frames", "height", "width")}
"""Datasets whose clip size options default to the encoder's window: name -> (frames, height, width)."""


def resolve_data_options(name: str, options: dict[str, Any], encoder_config) -> dict[str, Any]:
    """`options` with the clip size of datasets in WINDOW_OPTIONS defaulting to the encoder's window."""
    resolved = dict(options)
    if name in WINDOW_OPTIONS:
        frames, height, width = WINDOW_OPTIONS[name]
        resolved.setdefault(frames, encoder_config.num_frames)
        resolved.setdefault(height, encoder_config.image_size[0])
        resolved.setdefault(width, encoder_config.image_size[1])
    return dict(sorted(resolved.items()))


def check_targets(dataset: DatasetSpec, heads: list[HeadSpec]) -> None:
    """ConfigError unless `dataset` provides every target key of every head."""
    for spec in heads:
        missing = [k for k in spec.targets if k not in dataset.provides]
        if missing:
            raise ConfigError(
                f"dataset {dataset.name!r} does not provide {missing}, which head {spec.name!r} needs as "
                f"training targets (it provides {list(dataset.provides)}); pick a dataset with these labels "
                "(data.name=...)"
            )


def check_split(dataset: DatasetSpec, split: str, key: str) -> None:
    if split not in dataset.splits:
        from ..suggest import did_you_mean

        raise ConfigError(
            f"{key}: dataset {dataset.name!r} has no split {split!r}{did_you_mean(split, dataset.splits)}; "
            f"splits: {list(dataset.splits)}"
        )


def build_dataset(spec: DatasetSpec, split: str, options: dict[str, Any], clips: int | None):
    """spec.build(split, **options), limited to its first `clips` items."""
    dataset = spec.build(split, **options)
    if clips is not None:
        if clips > len(dataset):
            raise ConfigError(
                f"dataset {spec.name!r} split {split!r} has {len(dataset)} clips, fewer than the {clips} asked for"
            )
        dataset = torch.utils.data.Subset(dataset, range(clips))
    return dataset


class RunOrder:
    """Clip index of every position of the run: epoch-wise permutations seeded by the run seed."""

    def __init__(self, num_clips: int, seed: int):
        if num_clips <= 0:
            raise ConfigError("the training dataset is empty")
        self.num_clips = num_clips
        self.seed = seed
        self._epoch = -1
        self._perm: torch.Tensor | None = None

    def __call__(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_clips)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(head_seed(f"data/epoch{epoch}", self.seed))
            self._perm = torch.randperm(self.num_clips, generator=gen)
            self._epoch = epoch
        return int(self._perm[offset])


class StepBatchSampler(torch.utils.data.Sampler):
    """Micro-batches of this rank for steps [start_step, steps) (each step has grad_accum of them).

    batch_size is global: rank r of W takes positions [r * b, (r + 1) * b) of each global batch,
    b = batch_size / W.
    """

    def __init__(
        self,
        num_clips: int,
        seed: int,
        batch_size: int,
        grad_accum: int,
        start_step: int,
        steps: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size % world_size:
            raise ConfigError(
                f"batch_size {batch_size} is the global batch and must be divisible by the {world_size} ranks"
            )
        self.order = RunOrder(num_clips, seed)
        self.batch_size, self.grad_accum = batch_size, grad_accum
        self.start_step, self.steps = start_step, steps
        self.local = batch_size // world_size
        self.rank = rank

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * self.grad_accum

    def __iter__(self) -> Iterator[list[int]]:
        for micro in range(self.start_step * self.grad_accum, self.steps * self.grad_accum):
            first = micro * self.batch_size + self.rank * self.local
            yield [self.order(first + j) for j in range(self.local)]
