"""Entry point `l4p: normals`: registers the normals head with the l4p plugin host."""

from __future__ import annotations

from l4p_framework import HeadSpec, hookimpl

from .head import normals_head_spec


@hookimpl
def l4p_heads() -> list[HeadSpec]:
    """The heads of this plugin: [normals]."""
    return [normals_head_spec()]
