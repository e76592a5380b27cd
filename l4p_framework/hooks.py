"""Hook specifications of the `l4p` plugin system (entry-point group "l4p").

A plugin is a module (or object) with functions decorated by `hookimpl`, named like the specs
below. Each returns a list of typed, frozen specs.
"""

from __future__ import annotations

import pluggy

from .specs import DatasetSpec, EncoderSpec, HeadSpec, SubcommandSpec

PROJECT = "l4p"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def l4p_heads() -> list[HeadSpec]:
    """Task heads this plugin provides."""


@hookspec
def l4p_encoders() -> list[EncoderSpec]:
    """Encoder presets this plugin provides."""


@hookspec
def l4p_datasets() -> list[DatasetSpec]:
    """Datasets (`--data NAME`) this plugin provides."""


@hookspec
def l4p_subcommands() -> list[SubcommandSpec]:
    """Extra `l4p NAME` commands this plugin provides."""
