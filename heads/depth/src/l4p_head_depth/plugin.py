"""Entry point `l4p: depth`: registers the depth head with the l4p plugin host."""

from __future__ import annotations

from l4p_framework import hookimpl
from l4p_framework.specs import HeadSpec

from .head import depth_head_spec


@hookimpl
def l4p_heads() -> list[HeadSpec]:
    return [depth_head_spec()]
