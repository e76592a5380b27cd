"""l4p: modular multi-task plugin framework for low-level 4D perception from monocular video.

Public API (everything else may change between versions).
"""

from .checkpoints import build_head, load_head, read_head_metadata, save_head
from .compose import L4P, compose
from .encoder import EncoderConfig, VideoEncoder, build_encoder, load_encoder, save_encoder
from .errors import (
    ConfigError,
    DataError,
    IncompatibleHeadError,
    InputError,
    L4PError,
    PluginError,
    RegistryError,
    WeightsError,
)
from .features import TokenFeatures
from .hooks import hookimpl
from .matching import MatchConfig, MatchFeatures, compute_matches
from .plugins import PluginHost, get_plugin_host
from .registry import Registry, load_registry
from .specs import DatasetSpec, EncoderInfo, EncoderSpec, HeadSpec, OutputSpec, SubcommandSpec
from .stitching import DisparityAffineStitcher, OverwriteStitcher

__version__ = "0.1.0"

__all__ = [
    "MatchConfig",
    "MatchFeatures",
    "compute_matches",
    "L4P",
    "ConfigError",
    "DataError",
    "DatasetSpec",
    "DisparityAffineStitcher",
    "EncoderConfig",
    "EncoderInfo",
    "EncoderSpec",
    "HeadSpec",
    "IncompatibleHeadError",
    "InputError",
    "L4PError",
    "OutputSpec",
    "OverwriteStitcher",
    "PluginError",
    "PluginHost",
    "Registry",
    "RegistryError",
    "SubcommandSpec",
    "TokenFeatures",
    "VideoEncoder",
    "WeightsError",
    "build_encoder",
    "build_head",
    "compose",
    "get_plugin_host",
    "hookimpl",
    "load_encoder",
    "load_head",
    "load_registry",
    "read_head_metadata",
    "save_encoder",
    "save_head",
]
