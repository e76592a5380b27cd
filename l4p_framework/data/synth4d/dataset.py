"""The synth4d torch Dataset and its DatasetSpec (`--data synth4d`)."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import ValidationError

from ... import batch as B
from ...errors import ConfigError
from ...specs import DatasetSpec
from .clip import generate_clip
from .config import Synth4DConfig
from .textures import scan_photos

SPLIT_SEEDS: dict[str, tuple[int, int]] = {
    "train": (0, 1_000_000),
    "val": (1_000_000, 1_001_000),
    "test": (2_000_000, 2_001_000),
}
"""Half-open seed range [start, stop) of each split; the ranges do not overlap."""

PROVIDES = (
    B.VIDEO,
    B.DEPTH,
    B.DEPTH_VALID,
    B.FLOW,
    B.FLOW_VALID,
    B.FLOW_FORWARD,
    B.NORMALS,
    B.MOTION_MASK,
    B.INTRINSICS,
    B.POSES,
    B.QUERIES,
    B.TRACKS,
    B.VISIBILITY,
    B.TRACK_DEPTH,
    B.TRACKS_3D,
)


def valid_options() -> list[str]:
    """Names accepted by `Synth4D(split, **options)`."""
    return ["length", *Synth4DConfig.model_fields]


class Synth4D(torch.utils.data.Dataset):
    """Procedural clips: item i of a split is `generate_clip(SPLIT_SEEDS[split][0] + i, config)`.

    split is "train", "val" or "test"; `length` (default: the whole seed range of the split, at
    most that) sets `len()`; every other option is a `Synth4DConfig` field (num_frames, height,
    width, num_queries, ...). Items are sample dicts, see `generate_clip`. With `textures`, the
    photo folder (and `photo_split`) is checked here: a missing or empty folder, or an unreadable
    photo header, raises DataError now; the split uses only its photos of `photo_split`.
    """

    def __init__(self, split: str = "train", *, length: int | None = None, **options: Any) -> None:
        if split not in SPLIT_SEEDS:
            raise ConfigError(f"synth4d: unknown split {split!r}; valid splits: {', '.join(SPLIT_SEEDS)}")
        fields = set(Synth4DConfig.model_fields)
        for name in options:
            if name not in fields:
                raise ConfigError(
                    f"synth4d: unknown option {name!r}; valid options: {', '.join(valid_options())}"
                )
        try:
            self.config = Synth4DConfig(**options)
        except ValidationError as exc:
            raise ConfigError(f"synth4d: invalid options {options}: {exc}") from None
        start, stop = SPLIT_SEEDS[split]
        size = stop - start
        if length is None:
            length = size
        if not isinstance(length, int) or not 0 < length <= size:
            raise ConfigError(
                f"synth4d: length must be an int in [1, {size}] for split {split!r}, got {length!r}"
            )
        self.split = split
        self.length = length
        self.first_seed = start
        self.photos: tuple[str, ...] = ()
        if self.config.textures is not None:
            self.photos = scan_photos(self.config.textures, self.config.photo_split, split)

    def __len__(self) -> int:
        return self.length

    def seed(self, index: int) -> int:
        """Seed of item `index` (negative indices count from the end)."""
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"synth4d {self.split}: index {index} out of range [0, {self.length})")
        return self.first_seed + index

    def __getitem__(self, index: int) -> dict[str, Any]:
        seed = self.seed(int(index))
        sample = generate_clip(seed, self.config, split=self.split)
        sample["name"] = f"synth4d-{self.split}-{seed:07d}"
        return sample


def synth4d_spec() -> DatasetSpec:
    """The DatasetSpec registering synth4d with the plugin host."""
    return DatasetSpec(
        name="synth4d",
        build=lambda split, **options: Synth4D(split, **options),
        provides=PROVIDES,
        splits=tuple(SPLIT_SEEDS),
        description=(
            "Procedural textured room with moving rigid spheres/boxes and a moving camera, ray cast in "
            "torch: exact RGB, depth, normals, flow, tracks, motion masks, intrinsics and poses; "
            "optionally photo textures (textures=FOLDER, photo_split=JSON) and real-camera effects. "
            f"Options: {', '.join(valid_options())}."
        ),
    )
