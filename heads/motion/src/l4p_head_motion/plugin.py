"""Entry point `l4p: motion`: registers the motion-segmentation head with the l4p plugin host."""

from __future__ import annotations

from l4p_framework import hookimpl
from l4p_framework.specs import HeadSpec

from .head import motion_head_spec


@hookimpl
def l4p_heads() -> list[HeadSpec]:
    return [motion_head_spec()]
