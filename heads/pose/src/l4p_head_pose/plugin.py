"""Entry point `l4p: pose`: registers the camera (rays -> poses + intrinsics) head with the l4p plugin host."""

from __future__ import annotations

from l4p_framework import hookimpl
from l4p_framework.specs import HeadSpec

from .head import pose_head_spec


@hookimpl
def l4p_heads() -> list[HeadSpec]:
    return [pose_head_spec()]
