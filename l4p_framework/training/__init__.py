"""Training heads (and optionally the encoder): config, loop, feature cache, torchrun support.

`load_train_config` merges defaults, a YAML file and key=value overrides into a validated
`TrainConfig`; `train(config)` runs it and writes the heads' safetensors files and registry
entries (returning a `TrainResult`). `build_cache` stores the frozen encoder's features of a
dataset once; `FeatureCache` reads them back, and training uses a matching cache automatically.
"""

from .cache import (
    DTYPE_TOLERANCE,
    CachedFeatures,
    CacheError,
    FeatureCache,
    build_cache,
    cache_id,
    collate_cached,
    find_cache,
    list_caches,
)
from .config import DataConfig, TrainConfig, load_train_config
from .data import StepBatchSampler, resolve_data_options
from .distributed import DistContext, distributed_session, init_distributed
from .trainer import HeadResult, Trainer, TrainResult, TrainStep, head_rng, train

__all__ = [
    "DTYPE_TOLERANCE",
    "CacheError",
    "CachedFeatures",
    "DataConfig",
    "DistContext",
    "FeatureCache",
    "HeadResult",
    "StepBatchSampler",
    "TrainConfig",
    "TrainResult",
    "TrainStep",
    "Trainer",
    "build_cache",
    "cache_id",
    "collate_cached",
    "distributed_session",
    "find_cache",
    "head_rng",
    "init_distributed",
    "list_caches",
    "load_train_config",
    "resolve_data_options",
    "train",
]
