"""TrainConfig: every option of `l4p-train-head` / `l4p-train`, validated before anything runs.

A run's configuration is merged from, in order: the defaults below, `--plugin` / `--heads` /
`--registry`, each head's current params (its registry entry, else its config model's
defaults, under ``params.<head>``), the ``--config`` YAML file and then ``key=value`` /
``+key=value`` overrides. The result is validated by `TrainConfig` (extra keys are errors with a
did-you-mean) and each ``params.<head>`` again by that head's own config model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import apply_overrides, load_yaml, validate
from ..errors import ConfigError

RUN_CONTROL_KEYS = frozenset(
    {
        "steps",
        "eval_every",
        "eval_batches",
        "log_every",
        "checkpoint_every",
        "num_workers",
        "cache",
        "cache_dir",
        "update_registry",
        "resume",
        "weights",
        "weights_dir",
        "encoder_weights",
        "progress",
        "debug_kill_after_step",
    }
)
"""Keys that may differ between an interrupted run and its `--resume` (they don't change the math).

Changing `steps` on resume is allowed but changes the cosine schedule from that point on.
"""


class DataConfig(BaseModel):
    """What the heads train and evaluate on.

    name: a registered dataset (`l4p plugins` lists them; default the procedural synth4d).
    options: passed to the dataset's build(split, **options). For synth4d, num_frames / height /
        width default to the encoder's window, so clips fit the encoder without resizing.
    train_clips / val_clips: use the first N clips of the split (None: the whole train split;
        eval_batches * batch_size validation clips).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "synth4d"
    options: dict[str, Any] = {}
    train_split: str = "train"
    val_split: str = "val"
    train_clips: int | None = Field(None, gt=0)
    val_clips: int | None = Field(None, gt=0)


class TrainConfig(BaseModel):
    """Training run: heads, data, optimisation, evaluation, checkpoints, outputs.

    batch_size is the global batch of one micro-step (split over torchrun ranks); one optimiser
    step sees batch_size * grad_accum clips. Every head has its own AdamW, learning-rate schedule
    (linear warm-up, then cosine to lr * min_lr_ratio) and gradient clipping (clip_grad_norm
    applies to each head's gradient on its own), so heads trained together never influence each
    other's updates.
    """

    model_config = ConfigDict(extra="forbid")

    # -- what to train ------------------------------------------------------------------------
    plugin: str | None = None
    """l4p-train-head: the head to train (a head name, or a plugin distribution with one head)."""
    heads: list[str] = []
    """l4p-train: the heads trained jointly."""
    params: dict[str, dict[str, Any]] = {}
    """Per-head config params (validated by each head's config model)."""
    loss_weights: dict[str, float] = {}
    init_from_registry: bool = False
    """Start from the head's registered weights instead of a fresh initialisation."""
    train_encoder: bool = False
    """l4p-train only: train the encoder too (L4P's first stage); it gets a new fingerprint."""
    train_last_blocks: int | None = Field(None, gt=0)
    """Train only the encoder's last N blocks (and its final norm); implies train_encoder."""
    encoder_lr: float | None = Field(None, gt=0)
    """Learning rate of the encoder (default: lr)."""

    # -- data -----------------------------------------------------------------------------------
    data: DataConfig = DataConfig()
    num_workers: int = Field(0, ge=0)

    # -- optimisation ---------------------------------------------------------------------------
    steps: int = Field(1000, gt=0)
    batch_size: int = Field(2, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(100, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    clip_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: heads (and a trainable encoder) run under bf16 autocast; weights stay float32."""
    device: str = "auto"
    """auto: cuda (cuda:LOCAL_RANK under torchrun) when available, else cpu."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms(True) (bitwise-reproducible runs, slower on GPU)."""

    # -- evaluation, logging, checkpoints -------------------------------------------------------
    eval_every: int = Field(0, ge=0)
    """Evaluate every N steps (0: only at the end); the final evaluation always runs."""
    eval_batches: int = Field(2, ge=0)
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(100, ge=0)
    """Write out_dir/checkpoint.safetensors every N steps (0: never)."""
    out_dir: str | None = None
    """Run folder (log.jsonl, checkpoint); default <registry folder>/runs/<heads>."""
    progress: bool = True
    resume: bool = False

    # -- feature cache ----------------------------------------------------------------------------
    cache: Literal["auto", "off", "require"] = "auto"
    """auto: read encoder features from a matching cache when one exists; require: fail without."""
    cache_dir: str | None = None
    """Where caches live (default: the registry's cache.dir)."""

    # -- outputs -----------------------------------------------------------------------------------
    registry: str = "registry.yaml"
    weights: str | None = None
    """Output file of the head (only with a single head); default <weights_dir>/<head>.safetensors."""
    weights_dir: str | None = None
    """Default folder of the output weights (default: <registry folder>/weights)."""
    encoder_weights: str | None = None
    """Output file of a trained encoder (default <weights_dir>/encoder-<fingerprint[:12]>.safetensors)."""
    save_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Dtype of the written weights files. float16 halves them: the trained modules are rounded to
    it before the final evaluation, so the recorded metrics are those of the files."""
    update_registry: bool = True
    """Write/update the registry entries of the trained heads (and encoder)."""

    debug_kill_after_step: int | None = Field(None, gt=0)
    """Testing aid: SIGKILL this process right after finishing that step (simulates a crash)."""

    @field_validator("cache", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML reads a bare `off` / `on` as a boolean
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.plugin is not None and self.heads and list(self.heads) != [self.plugin]:
            raise ValueError(f"give either plugin ({self.plugin!r}) or heads ({self.heads}), not both")
        if len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads lists a head twice: {self.heads}")
        if self.weights is not None and len(self.head_names) > 1:
            raise ValueError("weights names one output file; with several heads use weights_dir")
        if self.train_last_blocks is not None:
            self.train_encoder = True
        return self

    @property
    def head_names(self) -> list[str]:
        return list(self.heads) if self.heads else ([self.plugin] if self.plugin else [])


def _defaults() -> dict[str, Any]:
    return TrainConfig().model_dump(mode="json")


def _split_early(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """Overrides of the keys that decide which heads/registry to use, and the rest.

    data.options.* keys may be new without a leading "+": the dataset validates its own options.
    """
    early, rest = [], []
    for item in overrides:
        key = item.lstrip("+").split("=", 1)[0]
        if key.startswith("data.options.") and not item.startswith("+"):
            item = "+" + item
        (early if key in ("plugin", "heads", "registry") else rest).append(item)
    return early, rest


def load_train_config(
    config_file: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    *,
    plugin: str | None = None,
    heads: Sequence[str] | None = None,
    registry: str | None = None,
    host=None,
) -> TrainConfig:
    """Merge defaults, CLI flags, head params, YAML and overrides; validate everything.

    Head params come from the registry entry of each head when it has one (so a retrain keeps
    its architecture) and from the head's config-model defaults otherwise; then `config_file`
    and `overrides` (``params.depth.preset=official``) apply on top.
    """
    data = _defaults()
    if plugin is not None:
        data["plugin"] = plugin
    if heads is not None:
        data["heads"] = list(heads)
    if registry is not None:
        data["registry"] = str(registry)
    if config_file is not None:
        data = _merge(data, load_yaml(config_file))
    early, rest = _split_early(overrides)
    source = str(config_file) if config_file else "command line"
    data = apply_overrides(data, early, source="command line")
    first = validate(TrainConfig, data, source)
    from ..plugins import get_plugin_host

    host = host or get_plugin_host()
    names = resolve_head_names(first.head_names, host)
    if first.heads:
        data["heads"] = names
    elif names:
        data["plugin"] = names[0]
    data["params"] = _head_params(names, first.registry, data.get("params") or {}, host)
    data["loss_weights"] = {n: 1.0 for n in names} | dict(data.get("loss_weights") or {})
    data = apply_overrides(data, rest, source="command line")
    config = validate(TrainConfig, data, source)
    if not config.head_names:
        raise ConfigError("no head to train: pass --plugin NAME (l4p-train-head) or --heads a,b (l4p-train)")
    for key in ("params", "loss_weights"):
        unknown = sorted(set(getattr(config, key)) - set(names))
        if unknown:
            raise ConfigError(
                f"{key} has entries for {unknown}, which are not trained in this run; trained: {names}"
            )
    for name in names:  # each head's params by its own config model, before anything runs
        validate(host.get_head(name).config_model, config.params[name], source, f"params.{name}")
    return config


def _merge(base: dict, extra: dict) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(
        OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(extra)), resolve=True
    )


def _head_params(names: list[str], registry: str, given: dict, host) -> dict[str, dict]:
    """params of every head: config-model defaults, then its registry entry, then the given ones."""
    from ..registry import load_registry

    reg_path = Path(registry)
    reg = load_registry(reg_path) if reg_path.is_file() else None
    params: dict[str, dict] = {}
    unknown = sorted(set(given) - set(names))
    if unknown:
        from ..suggest import did_you_mean

        raise ConfigError(
            f"params has entries for {unknown}, which are not trained in this run "
            f"{did_you_mean(unknown[0], names)}; trained heads: {names}"
        )
    for name in names:
        spec = host.get_head(name)
        entry = reg.registry.heads.get(name) if reg else None
        # the config model's defaults under the registered params: fields added to a head's config
        # after its entry was written can be overridden like any other
        base = spec.config_model().model_dump(mode="json") | (dict(entry.params) if entry else {})
        params[name] = _merge(base, given.get(name) or {})
    return params


def resolve_head_names(names: Sequence[str], host) -> list[str]:
    """Head names; a plugin distribution name that provides exactly one head is accepted too."""
    installed = host.heads()
    out = []
    for name in names:
        if name not in installed:
            provided = [h for h, s in installed.items() if s.distribution in (name, f"l4p-head-{name}")]
            if len(provided) == 1:
                name = provided[0]
            else:
                host.get_head(name)  # raises PluginError with a did-you-mean
        out.append(name)
    return out
