"""The frozen shared video encoder: VideoMAE / VideoMAEv2 ViTs and their loaders."""

from .config import PRESETS, EncoderConfig
from .loading import (
    bf16_supported,
    build_encoder,
    build_encoder_skeleton,
    get_preset,
    is_preset_name,
    load_encoder,
    save_encoder,
)
from .posembed import sinusoid_table
from .vit import VideoEncoder, weights_fingerprint

__all__ = [
    "PRESETS",
    "EncoderConfig",
    "VideoEncoder",
    "bf16_supported",
    "build_encoder",
    "build_encoder_skeleton",
    "get_preset",
    "is_preset_name",
    "load_encoder",
    "save_encoder",
    "sinusoid_table",
    "weights_fingerprint",
]
