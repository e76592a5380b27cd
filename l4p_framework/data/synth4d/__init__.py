"""synth4d: a procedural 4D scene generator with exact labels for every l4p task.

A closed, procedurally textured room with 2-6 rigid spheres and boxes (some moving, some static)
seen by a moving camera, ray cast in torch. `generate_clip(seed, config)` renders one clip as a
sample dict with the keys of `l4p_framework.batch`; `Synth4D(split, ...)` wraps it as a Dataset
with disjoint seed ranges per split; `synth4d_spec()` registers it as `--data synth4d`.
"""

from __future__ import annotations

from .clip import generate_clip, render_clip
from .config import Synth4DConfig
from .dataset import SPLIT_SEEDS, Synth4D, synth4d_spec, valid_options
from .scene import Scene, sample_scene

__all__ = [
    "SPLIT_SEEDS",
    "Scene",
    "Synth4D",
    "Synth4DConfig",
    "generate_clip",
    "render_clip",
    "sample_scene",
    "synth4d_spec",
    "valid_options",
]
