"""Key maps between official L4P checkpoint heads and l4p's blocks (l4p-model.md §5.2, §5.3).

The caller strips the per-head prefix `l4p_model.task_heads.<name>.` first (`strip_prefix`).

- Dense heads: official keys are `task_head.dpt.<name>` where `<name>` is `DPT3D`'s own key, plus the
  alias `scratch.layer_rn.{k-1}.weight` of every `scratch.layer{k}_rn.weight` (one module registered
  twice). Import verifies each alias equals its original and drops it; export adds it back.
- Tracking head: `TrackingDecoder`'s keys equal the official ones, so the map is the identity plus checks
  (notably that the persistent Fourier matrix is present: it must be loaded, never regenerated).
"""

from __future__ import annotations

import re

import torch

from ..errors import WeightsError

DENSE_PREFIX = "task_head.dpt."
_ALIAS = re.compile(r"^scratch\.layer_rn\.(\d+)\.(weight|bias)$")
TRACKING_PE_KEY = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
TRACKING_PREFIXES = (
    "prompt_encoder.",
    "mask_decoder.",
    "prompt_feature_linear_layer.",
    "processed_video_mask_token.",
    "processed_video_features_proj.",
)


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries whose key starts with `prefix`, with the prefix removed (others are left out)."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def official_dense_head_to_l4p(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official dense-head keys (`task_head.dpt.*`) -> `DPT3D` keys.

    Raises WeightsError for a key without the `task_head.dpt.` prefix, an alias without its
    original, or an alias whose tensor differs from the original's.
    """
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(DENSE_PREFIX):
            raise WeightsError(
                f"official dense-head key {key!r} does not start with {DENSE_PREFIX!r}; strip only the "
                "'l4p_model.task_heads.<name>.' prefix before converting"
            )
        name = key[len(DENSE_PREFIX) :]
        m = _ALIAS.match(name)
        if m:
            aliases[f"scratch.layer{int(m.group(1)) + 1}_rn.{m.group(2)}"] = value
        else:
            out[name] = value
    for original, value in aliases.items():
        if original not in out:
            raise WeightsError(
                f"official dense head has alias for {original!r} (scratch.layer_rn.*) but not the key "
                f"{DENSE_PREFIX + original!r}; the checkpoint is incomplete"
            )
        ref = out[original]
        if ref.shape != value.shape or not (ref.is_meta or torch.equal(ref, value)):
            raise WeightsError(
                f"official dense head: {DENSE_PREFIX + original!r} and its alias differ; they must be the "
                "same tensor (the checkpoint is corrupt or was edited)"
            )
    return out


def l4p_dense_head_to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`DPT3D` keys -> official keys (`task_head.dpt.*`), adding the `scratch.layer_rn.{k-1}` aliases.

    Each alias holds the same tensor object as its original (as in the official state dict).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        out[DENSE_PREFIX + key] = value
        m = re.match(r"^scratch\.layer(\d)_rn\.(weight|bias)$", key)
        if m:
            out[f"{DENSE_PREFIX}scratch.layer_rn.{int(m.group(1)) - 1}.{m.group(2)}"] = value
    return out


def _check_tracking_keys(state_dict: dict[str, torch.Tensor], where: str) -> None:
    for key in state_dict:
        if not key.startswith(TRACKING_PREFIXES):
            raise WeightsError(
                f"{where}: unexpected tracking-head key {key!r}; expected keys under {TRACKING_PREFIXES}"
            )
    if TRACKING_PE_KEY not in state_dict:
        raise WeightsError(
            f"{where}: missing {TRACKING_PE_KEY!r}; the random-Fourier matrix is part of the weights and "
            "must be loaded from the checkpoint, never regenerated"
        )


def official_tracking_head_to_l4p(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official tracking-head keys (after `l4p_model.task_heads.track_2d.`) -> `TrackingDecoder` keys.

    The names are identical; this checks the key set's prefixes and the Fourier matrix, and drops the
    non-persistent `grid_xy` buffer if a converted file carries it.
    """
    sd = {k: v for k, v in state_dict.items() if k != "grid_xy"}
    _check_tracking_keys(sd, "official tracking head")
    return dict(sd)


def l4p_tracking_head_to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`TrackingDecoder` keys -> official tracking-head keys (identical names; checked)."""
    _check_tracking_keys(state_dict, "l4p tracking decoder")
    return dict(state_dict)
