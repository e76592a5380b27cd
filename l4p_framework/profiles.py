"""Model profiles: "l4p" (the default) or "official" (the official L4P behaviour where l4p differs).

A profile is chosen by `profile:` in registry.yaml (top level) or `l4p run --profile` (the flag wins),
and is held by the composed model (`L4P.profile`). Under "official" (l4p-model.md §1.5, §4):

- frames are squash-resized into the encoder's window (224x224 on `l4p-vitg14`), aspect ratio not
  kept: `default_resize`; an explicit `resize=` / `--resize` still wins;
- windows are the encoder's `num_frames` long with stride `num_frames // 2` (16 / 8 on `l4p-vitg14`),
  whatever `window.stride` the registry holds: `window_stride`;
- each head's config gets the overrides its `HeadSpec.profiles["official"]` declares, applied when the
  head is added to the model (`profile_config`); they take precedence over the registry's
  `heads.<name>.params` (saved registries list every param, so "the registry did not set it" cannot
  be told apart). The shipped heads declare: pose `chain_blend: false` (a later window overwrites the
  overlap poses instead of cross-fading), depth `stitch_shift: true` (least-squares disparity scale and
  shift over the overlap instead of the median scale);
- on CUDA, the encoder and heads run under float16 autocast (the official "16-mixed"):
  `autocast_dtype`; elsewhere nothing changes (the encoder keeps its registry `precision`).

Under "l4p" nothing of this applies: the model computes exactly what it did before profiles existed.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Literal, get_args

import torch

from .errors import InputError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .specs import HeadSpec

Profile = Literal["l4p", "official"]
PROFILES: tuple[str, ...] = get_args(Profile)
DEFAULT_PROFILE = "l4p"


def check_profile(name: str | None) -> str:
    """`name` if it is a known profile (None: the default), else InputError naming the allowed ones."""
    if name is None:
        return DEFAULT_PROFILE
    if name not in PROFILES:
        from .suggest import did_you_mean

        raise InputError(
            f"unknown profile {name!r}{did_you_mean(str(name), list(PROFILES))}; "
            f"allowed: {', '.join(PROFILES)}"
        )
    return name


def default_resize(profile: str) -> str:
    """How frames are fitted into the encoder's window when no resize is given."""
    return "squash" if profile == "official" else "letterbox"


def window_stride(profile: str, registry_stride: int | None, num_frames: int) -> int | None:
    """The window stride under `profile`: half the encoder's window ("official"), else the registry's."""
    return max(1, num_frames // 2) if profile == "official" else registry_stride


def profile_config(spec: HeadSpec, config: BaseModel, profile: str) -> BaseModel:
    """`config` with the overrides `spec.profiles[profile]` declares (re-validated); unchanged when
    there are none or they already hold."""
    overrides = dict(spec.profiles.get(profile, {}))
    if not overrides or all(getattr(config, k, object()) == v for k, v in overrides.items()):
        return config
    from .config import validate

    data = {**config.model_dump(exclude_unset=True), **overrides}
    return validate(spec.config_model, data, f"profile {profile!r} of head {spec.name!r}", spec.name)


def autocast_dtype(profile: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of the encoder and heads: float16 for "official" on CUDA (the official
    Lightning Fabric precision "16-mixed"), None (no autocast) otherwise."""
    return torch.float16 if profile == "official" and torch.device(device).type == "cuda" else None


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """torch.autocast on `device` with `dtype`, or a no-op context for dtype None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "Profile",
    "autocast",
    "autocast_dtype",
    "check_profile",
    "default_resize",
    "profile_config",
    "window_stride",
]
