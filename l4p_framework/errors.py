"""Errors a user can cause. Every message says what was wrong, where, and how to fix it."""

from __future__ import annotations


class L4PError(Exception):
    """Base class of every error l4p raises for a user mistake (bad input, config, weights, plugin)."""


class ConfigError(L4PError):
    """A configuration file or override is invalid (typo, wrong type, missing key)."""


class RegistryError(ConfigError):
    """registry.yaml is invalid or points at something that does not exist."""


class WeightsError(L4PError):
    """A weights file is missing, corrupt, has a sha256 mismatch, or has missing/unexpected keys."""


class IncompatibleHeadError(L4PError):
    """A head was trained against a different encoder (fingerprint mismatch) or cannot run on it."""


class PluginError(L4PError):
    """A plugin failed to load, registered a duplicate name, or was asked for but is not installed."""


class InputError(L4PError):
    """A tensor, video file or query given by the user has the wrong shape, values or format."""


class DataError(L4PError):
    """A dataset file is unreadable, truncated, has a wrong magic number, or lacks a key."""


class L4PWarning(UserWarning):
    """Base class of l4p's warnings: something is wrong with an input, l4p carried on with what it could use."""


class DataWarning(L4PWarning):
    """An input file is partly unreadable (e.g. a truncated video); only its readable part is used."""


def check_tensor(name: str, tensor, shape: str, *, ndim: int | None = None, finite: bool = True) -> None:
    """Raise InputError unless `tensor` is a torch tensor with `ndim` dims and finite values.

    `shape` is the human-readable expected shape used in the message, e.g. "(B, 3, T, H, W)".
    """
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape {shape}, got {type(tensor).__name__}")
    if ndim is not None and tensor.ndim != ndim:
        raise InputError(f"{name} must have shape {shape} ({ndim} dims), got {tuple(tensor.shape)}")
    if (
        finite
        and tensor.is_floating_point()
        and tensor.device.type != "meta"
        and not bool(torch.isfinite(tensor).all())
    ):
        raise InputError(f"{name} {shape} contains NaN or infinite values; clean the input first")
