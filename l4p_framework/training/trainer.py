"""The training loop of `l4p-train-head` / `l4p-train`.

One run trains one or more heads (and optionally the encoder) on a dataset:

- the frozen encoder's features come from a feature cache when one matches (`cache=auto`), else
  from the live encoder (outside autocast, in the encoder's own precision: exactly what a cache
  stores);
- every head has its own AdamW, warm-up + cosine schedule and gradient clipping, and its own RNG
  stream (re-seeded for each micro-step from `head_seed(head, run seed)`, the step and the rank):
  a head's update never depends on which other heads train beside it;
- the data order is a pure function of the run seed and the step (see `training.data`);
- rank 0 writes a JSON-lines log, a progress line, checkpoints (atomically; model + optimiser +
  scheduler + RNG states + step) and at the end each head's safetensors file and registry entry,
  with rollback so that a failed write leaves the previous weights and registry intact.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from ..checkpoints import STORAGE_DTYPES, head_seed, load_head, round_weights, save_head
from ..compose import L4P, encoder_from_registry, outputs_to_input_pixels
from ..config import validate
from ..errors import ConfigError, L4PError, RegistryError
from ..features import TokenFeatures
from ..io import WriteError, sha256_file
from ..plugins import PluginHost, get_plugin_host
from ..registry import HeadEntry, RegistryFile, load_registry
from ..specs import HeadSpec, Layer
from .cache import CacheError, FeatureCache, collate_cached, encoder_precision, find_cache
from .config import RUN_CONTROL_KEYS, TrainConfig, resolve_head_names
from .data import StepBatchSampler, build_dataset, check_split, check_targets, resolve_data_options
from .distributed import DistContext, broadcast_object, distributed_session, wrap_ddp
from .state import load_state, save_state

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "log.jsonl"


@dataclass
class HeadResult:
    """What a run produced for one head."""

    name: str
    weights: Path | None
    sha256: str | None
    metrics: dict[str, float]
    final_loss: float


@dataclass
class TrainResult:
    """Outcome of a run: per-head results, the encoder it ran on, timings and where things went."""

    heads: dict[str, HeadResult]
    encoder_fingerprint: str
    encoder_weights: Path | None
    steps: int
    out_dir: Path
    log_file: Path
    registry: Path | None
    used_cache: str | None
    steps_per_s: float
    """Training steps per second of this run, first step (warm-up) and evaluations excluded."""
    step_times: list[float] = field(default_factory=list)
    """Seconds of each timed step (the same steps as steps_per_s)."""
    history: list[dict] = field(default_factory=list)


def train(config: TrainConfig, host: PluginHost | None = None) -> TrainResult:
    """Run `config` (single-process, or one rank under torchrun) and return the result."""
    with distributed_session(config.device) as ctx:
        return Trainer(config, host, ctx).run()


# -- per-head RNG and mixed precision -----------------------------------------------------------
@contextmanager
def head_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block on its own RNG stream seeded by `seed`; the global RNG state is restored after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        yield


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {
        k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


class TrainStep(nn.Module):
    """The trainable part of a run (the heads, plus the encoder when it trains): batch -> losses.

    This is the module DistributedDataParallel wraps, so only trainable parameters are synced.
    forward(batch, features, step, micro) runs every head on `features` (computed here when the
    encoder trains) on its own RNG stream and returns (total loss, {head: {term: detached}}).
    """

    def __init__(
        self,
        heads: nn.ModuleDict,
        specs: dict[str, HeadSpec],
        configs: dict[str, BaseModel],
        layers: dict[str, list[Layer]],
        *,
        seed: int,
        rank: int,
        device: torch.device,
        precision: str,
        loss_weights: dict[str, float],
        encoder: nn.Module | None = None,
    ):
        super().__init__()
        self.heads = heads
        self.encoder = encoder
        self.specs, self.configs, self.head_layers = specs, configs, layers
        self.all_layers = list(dict.fromkeys(x for v in layers.values() for x in v))
        self.seed, self.rank, self.device, self.precision = seed, rank, device, precision
        self.loss_weights = loss_weights

    def rng_seed(self, name: str, step: int, micro: int) -> int:
        return head_seed(f"{name}/step{step}/micro{micro}/rank{self.rank}", self.seed)

    def forward(
        self, batch: dict[str, Any], features: TokenFeatures | None, step: int = 0, micro: int = 0
    ) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
        with autocast(self.device, self.precision):
            if features is None:
                features = self.encoder(batch["video"], self.all_layers)
            total: torch.Tensor | None = None
            terms: dict[str, dict[str, torch.Tensor]] = {}
            for name, module in self.heads.items():
                with head_rng(self.rng_seed(name, step, micro), self.device):
                    outputs = module(features.select(self.head_layers[name]), batch)
                    outputs = _at_clip_resolution(self.specs[name], outputs, batch)
                    losses = self.specs[name].loss(outputs, batch, self.configs[name])
                loss = losses["loss"].float()
                weight = self.loss_weights.get(name, 1.0)
                if weight != 1.0:
                    loss = loss * weight
                total = loss if total is None else total + loss
                terms[name] = {
                    k: v.detach().float() for k, v in losses.items() if isinstance(v, torch.Tensor)
                }
        return total, terms


def _at_clip_resolution(spec: HeadSpec, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
    """A head's outputs at the training clip's resolution, where its targets are: outputs still on the
    model window's grid are mapped back through the window batch's letterbox (`outputs_to_input_pixels`,
    as `L4P.stream` does), so any head can train on clips larger than the encoder's window."""
    transform = batch.get("transform")
    return outputs_to_input_pixels(spec, outputs, transform) if transform is not None else outputs


class Trainer:
    """Set up from a TrainConfig, then `run()`; see the module docstring."""

    def __init__(self, config: TrainConfig, host: PluginHost | None = None, ctx: DistContext | None = None):
        self.config = config
        self.host = host or get_plugin_host()
        self.ctx = ctx or DistContext()
        self.device = self.ctx.device
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        self._setup_model()
        self._setup_data()
        self._setup_optim()

    # -- setup -----------------------------------------------------------------------------------
    def _setup_model(self) -> None:
        c = self.config
        reg_path = Path(c.registry)
        if not reg_path.is_file():
            raise RegistryError(
                f"registry {reg_path} does not exist; create it with at least `encoder: {{preset: tiny}}` "
                "(see `l4p registry schema`) or pass --registry PATH"
            )
        self.reg = load_registry(reg_path)
        self.names = resolve_head_names(c.head_names, self.host)
        self.specs = {n: self.host.get_head(n) for n in self.names}
        self.head_configs = {
            n: validate(self.specs[n].config_model, c.params.get(n, {}), "training config", f"params.{n}")
            for n in self.names
        }
        bad_weights = sorted(set(c.loss_weights) - set(self.names))
        if bad_weights:
            raise ConfigError(
                f"loss_weights names {bad_weights}, which are not trained; trained: {self.names}"
            )
        self.encoder = encoder_from_registry(self.reg, self.device)
        self.base_fingerprint = self.encoder.fingerprint
        self.model = L4P(
            self.encoder, window_stride=self.reg.registry.window.stride, matching=self.reg.registry.matching
        )
        for n in self.names:
            module = None
            entry = self.reg.registry.heads.get(n)
            if c.init_from_registry and entry is not None and entry.weights:
                module, _, _ = load_head(
                    self.reg.resolve(entry.weights),
                    self.specs[n],
                    self.encoder.info,
                    sha256=entry.sha256,
                    config=self.head_configs[n],
                )
            self.model.add_head(self.specs[n], self.head_configs[n], module=module, seed=c.seed)
        self.model.heads.to(self.device)
        self.layers = {n: self.model.layers_of(self.specs[n], self.head_configs[n]) for n in self.names}
        self.all_layers = self.model.layers
        self.train_encoder = c.train_encoder
        if self.train_encoder:
            depth = self.encoder.config.depth
            if c.train_last_blocks is not None and c.train_last_blocks > depth:
                raise ConfigError(
                    f"train_last_blocks={c.train_last_blocks} but the encoder has {depth} blocks"
                )
            self.encoder.unfreeze(c.train_last_blocks).float().train()
            deepest = depth if "final" in self.all_layers else max(x for x in self.all_layers if x != "final")
            first = depth - (c.train_last_blocks or depth) + 1
            idle = list(range(max(first, deepest + 1), depth + 1))
            if idle:
                self._say(
                    f"note: encoder blocks {idle} get no gradient: the heads read layers {self.all_layers}; "
                    "they stay unchanged"
                )

    def _setup_data(self) -> None:
        c = self.config
        self.data_spec = self.host.get_dataset(c.data.name)
        check_targets(self.data_spec, list(self.specs.values()))
        check_split(self.data_spec, c.data.train_split, "data.train_split")
        self.data_options = resolve_data_options(c.data.name, c.data.options, self.encoder.config)
        self.train_set = build_dataset(
            self.data_spec, c.data.train_split, self.data_options, c.data.train_clips
        )
        self.num_train = len(self.train_set)
        self.cache_root = Path(c.cache_dir) if c.cache_dir else self.reg.resolve(self.reg.registry.cache.dir)
        self.train_cache = self._find_cache(c.data.train_split, self.num_train, required=c.cache == "require")
        self.val_set = None
        self.val_cache = None
        if c.eval_batches:
            check_split(self.data_spec, c.data.val_split, "data.val_split")
            n_val = c.data.val_clips or c.eval_batches * c.batch_size
            self.val_set = build_dataset(self.data_spec, c.data.val_split, self.data_options, n_val)
            self.val_cache = self._find_cache(c.data.val_split, len(self.val_set), required=False)

    def _find_cache(self, split: str, clips: int, required: bool) -> FeatureCache | None:
        c = self.config
        if c.cache == "off":
            return None
        if self.train_encoder:
            if required:
                raise ConfigError(
                    "cache=require cannot be used while the encoder trains: its features change"
                )
            return None
        match, stale = find_cache(
            self.cache_root,
            fingerprint=self.encoder.fingerprint,
            data=c.data.name,
            options=self.data_options,
            split=split,
            layers=self.all_layers,
            num_clips=clips,
            dtype=self.reg.registry.cache.dtype,
            precision=encoder_precision(self.encoder),
        )
        if match is None and stale:
            message = (
                f"feature cache {stale[0].path} holds {c.data.name}/{split} features of encoder fingerprint "
                f"{stale[0].fingerprint[:16]}..., but the active encoder has fingerprint "
                f"{self.encoder.fingerprint[:16]}...; refusing it (rebuild with `l4p cache build`)"
            )
            if required:
                raise CacheError(message)
            self._say(f"warning: {message}; computing features live")
        if match is None and required:
            raise CacheError(
                f"cache=require but no feature cache in {self.cache_root} holds {clips} clips of "
                f"{c.data.name}/{split} with options {self.data_options} and layers {self.all_layers} for encoder "
                f"{self.encoder.fingerprint[:16]}... computing in {encoder_precision(self.encoder)}; build it: l4p cache build --registry {c.registry} "
                f"--data {c.data.name}{_options_spec(c.data.options)} --split {split} --num-clips {clips} "
                f"--heads {','.join(self.names)}"
            )
        return match

    def _setup_optim(self) -> None:
        c = self.config
        self.optimizers = {
            n: torch.optim.AdamW(
                self.model.heads[n].parameters(), lr=c.lr, betas=c.betas, weight_decay=c.weight_decay
            )
            for n in self.names
        }
        self.schedulers = {
            n: torch.optim.lr_scheduler.LambdaLR(o, self.lr_factor) for n, o in self.optimizers.items()
        }
        self.encoder_opt = self.encoder_sched = None
        if self.train_encoder:
            params = [p for p in self.encoder.parameters() if p.requires_grad]
            self.encoder_opt = torch.optim.AdamW(
                params, lr=c.encoder_lr or c.lr, betas=c.betas, weight_decay=c.weight_decay
            )
            self.encoder_sched = torch.optim.lr_scheduler.LambdaLR(self.encoder_opt, self.lr_factor)
        self.step_module = TrainStep(
            self.model.heads,
            self.specs,
            self.head_configs,
            self.layers,
            seed=c.seed,
            rank=self.ctx.rank,
            device=self.device,
            precision=c.precision,
            loss_weights=c.loss_weights,
            encoder=self.encoder if self.train_encoder else None,
        )
        self.ddp = wrap_ddp(self.step_module, self.ctx)
        names = "+".join(self.names)
        self.out_dir = Path(c.out_dir) if c.out_dir else self.reg.root / "runs" / names
        self.log_file = self.out_dir / LOG_NAME
        self.checkpoint_file = self.out_dir / CHECKPOINT_NAME

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at `step`: linear warm-up, then cosine (or constant)."""
        c = self.config
        if step < c.warmup_steps:
            return (step + 1) / c.warmup_steps
        if c.schedule == "constant":
            return 1.0
        span = max(1, c.steps - c.warmup_steps)
        progress = min(1.0, (step - c.warmup_steps) / span)
        return c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    # -- loaders ---------------------------------------------------------------------------------
    def _loader(self, start_step: int) -> torch.utils.data.DataLoader:
        c = self.config
        sampler = StepBatchSampler(
            self.num_train,
            c.seed,
            c.batch_size,
            c.grad_accum,
            start_step,
            c.steps,
            self.ctx.rank,
            self.ctx.world_size,
        )
        return self._make_loader(self.train_set, self.train_cache, sampler=sampler)

    def _make_loader(
        self, dataset, cache: FeatureCache | None, *, sampler=None, batch_size: int = 1
    ) -> torch.utils.data.DataLoader:
        from ..data.collate import collate

        if cache is not None:
            dataset, collate_fn = cache.dataset(self.all_layers, len(dataset)), collate_cached(cache)
        else:
            collate_fn = collate
        batching = {"batch_sampler": sampler} if sampler is not None else {"batch_size": batch_size}
        return torch.utils.data.DataLoader(
            dataset,
            collate_fn=collate_fn,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            **batching,
        )

    def _prepare(self, item, cached: bool) -> tuple[TokenFeatures | None, dict[str, Any]]:
        """(features or None when the encoder trains, batch) on the device.

        The batch is the window batch `L4P.stream` gives heads (`prepare_window`): clips larger than
        the encoder's window are fitted into it (targets stay at the clip's resolution; the heads'
        outputs are mapped back to it before the loss, `_at_clip_resolution`), and the shared frame
        matching is computed when a trained head reads it.
        """
        if cached:
            features, batch = item
            return features.to(self.device), self.model.window_batch(
                to_device(batch, self.device), self.names
            )
        batch = self.model.window_batch(to_device(item, self.device), self.names)
        if self.train_encoder:
            return None, batch
        with torch.no_grad():
            return self.encoder(batch["video"], self.all_layers), batch

    # -- output ----------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.ctx.is_main:
            print(text, file=sys.stderr, flush=True)

    def _log(self, record: dict) -> None:
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")

    def _truncate_log(self, step: int) -> None:
        """Drop log records after `step` (a resumed run redoes them) and any torn last line."""
        if not (self.ctx.is_main and self.log_file.is_file()):
            return
        kept = []
        for line in self.log_file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the interruption
            if record.get("step", 0) <= step:
                kept.append(line)
        self.log_file.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def _progress(self, step: int, loss: float, rate: float, final: bool = False) -> None:
        if not (self.ctx.is_main and self.config.progress):
            return
        c = self.config
        eta = (c.steps - step) / rate if rate > 0 else 0.0
        text = f"step {step}/{c.steps}  loss {loss:.4f}  {rate:.2f} it/s  eta {_hms(eta)}"
        if sys.stderr.isatty():
            print(f"\r{text}   ", end="\n" if final else "", file=sys.stderr, flush=True)
        elif final or step % c.log_every == 0:
            print(text, file=sys.stderr, flush=True)

    # -- checkpoints -----------------------------------------------------------------------------
    def _state(self, step: int) -> dict[str, Any]:
        state = {
            "step": step,
            "config": self.config.model_dump(mode="json"),
            "encoder_fingerprint": self.base_fingerprint,
            "heads": {n: self.model.heads[n].state_dict() for n in self.names},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "rng": {"torch": torch.get_rng_state()},
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.train_encoder:
            state["encoder"] = self.encoder.state_dict()
            state["encoder_optimizer"] = self.encoder_opt.state_dict()
            state["encoder_scheduler"] = self.encoder_sched.state_dict()
        return state

    def save_checkpoint(self, step: int) -> None:
        """Write out_dir/checkpoint.safetensors atomically (rank 0); the previous one survives a failure."""
        if not self.ctx.is_main:
            return
        try:
            save_state(self.checkpoint_file, self._state(step))
        except (OSError, WriteError) as exc:
            reason = exc.reason if isinstance(exc, WriteError) else exc
            raise L4PError(
                f"could not write the checkpoint {self.checkpoint_file} at step {step} ({reason}); the previous "
                "checkpoint is intact: free space and rerun with --resume"
            ) from None

    def load_checkpoint(self) -> int:
        """Restore the last checkpoint of out_dir; returns its step."""
        if not self.checkpoint_file.is_file():
            raise L4PError(
                f"--resume: no checkpoint {self.checkpoint_file} to resume from (checkpoint_every="
                f"{self.config.checkpoint_every}); run without --resume to start over"
            )
        state = load_state(self.checkpoint_file)
        saved = {k: v for k, v in state["config"].items() if k not in RUN_CONTROL_KEYS}
        current = {k: v for k, v in self.config.model_dump(mode="json").items() if k not in RUN_CONTROL_KEYS}
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if diff:
            shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diff)
            raise ConfigError(
                f"--resume: the configuration differs from the checkpoint's in {shown}; resume with the same "
                f"settings (only {sorted(RUN_CONTROL_KEYS)} may change) or start a new run"
            )
        if state["encoder_fingerprint"] != self.base_fingerprint:
            raise ConfigError(
                f"--resume: checkpoint was trained on encoder {state['encoder_fingerprint'][:16]}..., the registry's "
                f"encoder is {self.base_fingerprint[:16]}..."
            )
        for n in self.names:
            self.model.heads[n].load_state_dict(state["heads"][n])
            self.optimizers[n].load_state_dict(state["optimizers"][n])
            self.schedulers[n].load_state_dict(state["schedulers"][n])
        if self.train_encoder:
            self.encoder.load_state_dict(state["encoder"])
            self.encoder_opt.load_state_dict(state["encoder_optimizer"])
            self.encoder_sched.load_state_dict(state["encoder_scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        return int(state["step"])

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float]]:
        """Mean of each head's metrics (and loss) over eval_batches validation batches (rank 0)."""
        c = self.config
        if not (self.ctx.is_main and c.eval_batches and self.val_set is not None):
            return {}
        loader = self._make_loader(self.val_set, self.val_cache, batch_size=c.batch_size)
        sums: dict[str, dict[str, float]] = {n: {} for n in self.names}
        counts: dict[str, dict[str, int]] = {n: {} for n in self.names}
        training = {n: self.model.heads[n].training for n in self.names}
        for module in self.model.heads.values():
            module.eval()
        try:
            for b, item in enumerate(loader):
                if b >= c.eval_batches:
                    break
                features, batch = self._prepare(item, self.val_cache is not None)
                if features is None:
                    features = self.encoder(batch["video"], self.all_layers)
                for n in self.names:
                    with (
                        head_rng(head_seed(f"{n}/eval/{b}", c.seed), self.device),
                        autocast(self.device, c.precision),
                    ):
                        out = self.model.heads[n](features.select(self.layers[n]), batch)
                        out = _at_clip_resolution(self.specs[n], out, batch)
                        loss = self.specs[n].loss(out, batch, self.head_configs[n])["loss"]
                    out = {
                        k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                        for k, v in out.items()
                    }
                    values = {**self.specs[n].metrics(out, batch), "loss": float(loss)}
                    for k, v in values.items():
                        if isinstance(v, int | float) and math.isfinite(v):
                            sums[n][k] = sums[n].get(k, 0.0) + float(v)
                            counts[n][k] = counts[n].get(k, 0) + 1
        finally:
            for n, mode in training.items():
                self.model.heads[n].train(mode)
        return {n: {k: sums[n][k] / counts[n][k] for k in sorted(sums[n])} for n in self.names}

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        c = self.config
        start = self.load_checkpoint() if c.resume else 0
        if c.resume:
            self._say(f"resuming from {self.checkpoint_file} at step {start}")
            self._truncate_log(start)
        elif self.ctx.is_main and self.log_file.exists():
            self.log_file.unlink()
        for n in self.names:
            self.model.heads[n].train()
        cached = self.train_cache is not None
        self._log(
            {
                "step": start,
                "event": "resume" if c.resume else "start",
                "heads": self.names,
                "cache": str(self.train_cache.path) if cached else None,
                "world_size": self.ctx.world_size,
                "device": str(self.device),
            }
        )
        loader = iter(self._loader(start))
        loss_value, last_terms = float("nan"), {}
        step_times: list[float] = []
        rate_window: list[tuple[int, float]] = [(start, time.perf_counter())]
        history: list[dict] = []
        for step in range(start, c.steps):
            t0 = time.perf_counter()
            lr = self.optimizers[self.names[0]].param_groups[0]["lr"]
            loss_value, last_terms = self._train_step(loader, step, cached)
            if step > start or c.steps - start == 1:  # the first step warms up allocators and caches
                step_times.append(time.perf_counter() - t0)
            done = step + 1
            now = time.perf_counter()
            rate_window = [*rate_window[-20:], (done, now)]
            rate = (done - rate_window[0][0]) / max(now - rate_window[0][1], 1e-9)
            if done % c.log_every == 0 or done == c.steps:
                record = {
                    "step": done,
                    "loss": loss_value,
                    "lr": lr,
                    "heads": last_terms,
                    "steps_per_s": rate,
                }
                history.append(record)
                self._log(record)
            self._progress(done, loss_value, rate, final=done == c.steps)
            if c.eval_every and done % c.eval_every == 0 and done != c.steps:
                metrics = self.evaluate()
                if metrics:
                    self._log({"step": done, "eval": metrics})
            if c.checkpoint_every and done % c.checkpoint_every == 0:
                self.save_checkpoint(done)
            if c.debug_kill_after_step == done:
                os.kill(os.getpid(), signal.SIGKILL)
        if c.save_dtype != "float32":  # evaluate exactly the weights the files will hold
            for module in [*self.model.heads.values(), *([self.encoder] if self.train_encoder else [])]:
                round_weights(module, STORAGE_DTYPES[c.save_dtype])
        metrics = self.evaluate()
        if metrics:
            self._log({"step": c.steps, "eval": metrics, "final": True})
        steps_per_s = len(step_times) / sum(step_times) if step_times else float("nan")
        if self.train_encoder:
            self.encoder.freeze()
        outputs = self._write_outputs(metrics, last_terms) if self.ctx.is_main else None
        outputs = broadcast_object(outputs, self.ctx)
        result = TrainResult(
            heads=outputs["heads"],
            encoder_fingerprint=self.encoder.fingerprint,
            encoder_weights=outputs["encoder_weights"],
            steps=c.steps,
            out_dir=self.out_dir,
            log_file=self.log_file,
            registry=outputs["registry"],
            used_cache=str(self.train_cache.path) if cached else None,
            steps_per_s=steps_per_s,
            step_times=step_times,
            history=history,
        )
        if self.ctx.is_main and c.progress:
            print(summary_table(result), flush=True)
        return result

    def _train_step(
        self, loader: Iterator, step: int, cached: bool
    ) -> tuple[float, dict[str, dict[str, float]]]:
        c = self.config
        total_loss = 0.0
        terms_sum: dict[str, dict[str, float]] = {}
        for micro in range(c.grad_accum):
            try:
                item = next(loader)
            except StopIteration:  # pragma: no cover - the sampler covers every step
                raise L4PError(f"training data ran out at step {step}") from None
            features, batch = self._prepare(item, cached)
            sync = self.ddp.no_sync() if self.ctx.enabled and micro < c.grad_accum - 1 else nullcontext()
            with sync:
                total, terms = self.ddp(batch, features, step, micro)
                value = float(total.detach())
                if not math.isfinite(value):
                    bad = {n: float(t["loss"]) for n, t in terms.items()}
                    raise L4PError(
                        f"the loss is not finite at step {step} (per head: {bad}); lower lr, enable "
                        "clip_grad_norm or check the data; no weights were written"
                    )
                (total / c.grad_accum if c.grad_accum > 1 else total).backward()
            total_loss += value / c.grad_accum
            for n, t in terms.items():
                for k, v in t.items():
                    terms_sum.setdefault(n, {})
                    terms_sum[n][k] = terms_sum[n].get(k, 0.0) + float(v) / c.grad_accum
        for n in self.names:
            params = [p for p in self.model.heads[n].parameters() if p.grad is not None]
            if c.clip_grad_norm is not None and params:
                torch.nn.utils.clip_grad_norm_(params, c.clip_grad_norm)
            self.optimizers[n].step()
            self.optimizers[n].zero_grad(set_to_none=True)
            self.schedulers[n].step()
        if self.encoder_opt is not None:
            params = [p for p in self.encoder.parameters() if p.grad is not None]
            if c.clip_grad_norm is not None and params:
                torch.nn.utils.clip_grad_norm_(params, c.clip_grad_norm)
            self.encoder_opt.step()
            self.encoder_opt.zero_grad(set_to_none=True)
            self.encoder_sched.step()
        return total_loss, terms_sum

    # -- final outputs ---------------------------------------------------------------------------
    def _write_outputs(self, metrics: dict[str, dict[str, float]], terms: dict) -> dict[str, Any]:
        """Write head (and encoder) weights, then the registry, all-or-nothing (rank 0)."""
        c = self.config
        weights_dir = Path(c.weights_dir) if c.weights_dir else self.reg.root / "weights"
        targets = {n: Path(c.weights) if c.weights else weights_dir / f"{n}.safetensors" for n in self.names}
        staged: list[tuple[Path, Path]] = []
        shas: dict[str, str] = {}
        encoder_target = None
        info = self.encoder.info
        try:
            if self.train_encoder:
                from ..encoder import save_encoder

                fp = self.encoder.fingerprint
                encoder_target = (
                    Path(c.encoder_weights)
                    if c.encoder_weights
                    else weights_dir / f"encoder-{fp[:12]}.safetensors"
                )
                tmp = _staging(encoder_target)
                save_encoder(self.encoder, tmp, STORAGE_DTYPES[c.save_dtype])
                staged.append((tmp, encoder_target))
                shas["<encoder>"] = sha256_file(tmp)
            for n in self.names:
                training = {
                    "data": {
                        "name": c.data.name,
                        "options": self.data_options,
                        "split": c.data.train_split,
                        "clips": self.num_train,
                    },
                    "steps": c.steps,
                    "batch_size": c.batch_size,
                    "grad_accum": c.grad_accum,
                    "lr": c.lr,
                    "seed": c.seed,
                    "precision": c.precision,
                    "save_dtype": c.save_dtype,
                    "trained_with": [m for m in self.names if m != n],
                    "encoder_trained": self.train_encoder,
                    "final_loss": terms.get(n, {}).get("loss"),
                    "metrics": metrics.get(n, {}),
                }
                tmp = _staging(targets[n])
                shas[n] = save_head(
                    tmp,
                    self.model.heads[n],
                    self.specs[n],
                    self.head_configs[n],
                    info,
                    training,
                    STORAGE_DTYPES[c.save_dtype],
                )
                staged.append((tmp, targets[n]))
            registry_path = None
            if c.update_registry:
                update = self._registry_updater(targets, shas, encoder_target, metrics)
                commit_files(staged, update)
                registry_path = self.reg.path
            else:
                commit_files(staged, lambda: None)
        except (OSError, WriteError) as exc:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            reason = str(exc)
            if isinstance(exc, WriteError):  # name the target, not its hidden staging file
                final = {_staging(t): t for t in [*targets.values(), encoder_target] if t is not None}
                reason = f"{final.get(exc.path, exc.path)}: {exc.reason}"
            raise L4PError(
                f"could not write the trained weights or the registry ({reason}); the previous weights files and "
                "registry are unchanged; free disk space (or choose another weights_dir) and rerun (the run's last "
                "checkpoint is in "
                f"{self.out_dir if c.checkpoint_every else 'no checkpoint: checkpoint_every=0'})"
            ) from None
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        heads = {
            n: HeadResult(
                n, targets[n], shas[n], metrics.get(n, {}), float(terms.get(n, {}).get("loss", float("nan")))
            )
            for n in self.names
        }
        return {"heads": heads, "encoder_weights": encoder_target, "registry": registry_path}

    def _registry_updater(self, targets, shas, encoder_target, metrics) -> Callable[[], None]:
        def update() -> None:
            reg = load_registry(self.reg.path)  # re-read: keep whatever changed on disk meanwhile
            r = reg.registry
            fingerprint = self.encoder.fingerprint
            if encoder_target is not None:
                r.encoder.weights = _relative(encoder_target, reg)
                r.encoder.sha256 = shas["<encoder>"]
                r.encoder.fingerprint = fingerprint
                stale = [
                    h
                    for h, e in r.heads.items()
                    if h not in self.names and e.encoder_fingerprint != fingerprint
                ]
                if stale:
                    self._say(
                        f"note: heads {stale} were trained on the previous encoder; they will be refused until "
                        "retrained on the new one (l4p-train-head --plugin NAME)"
                    )
            elif r.encoder.fingerprint is None:
                r.encoder.fingerprint = fingerprint
            for n in self.names:
                spec = self.specs[n]
                r.heads[n] = HeadEntry(
                    plugin=spec.distribution,
                    version=spec.version,
                    params=self.head_configs[n].model_dump(mode="json"),
                    weights=_relative(targets[n], reg),
                    sha256=shas[n],
                    encoder_fingerprint=fingerprint,
                    metrics={k: float(v) for k, v in metrics.get(n, {}).items() if math.isfinite(v)},
                )
            reg.save()

        return update


# -- helpers ---------------------------------------------------------------------------------------
def _staging(target: Path) -> Path:
    return target.with_name(f".{target.name}.staged")


def commit_files(staged: list[tuple[Path, Path]], then: Callable[[], None]) -> None:
    """Move staged files onto their targets, then call `then()`; on any failure restore the old files.

    Old targets are renamed aside first and renamed back if a later move or `then` (the registry
    write) fails, so the registry never points at weights it does not describe.
    """
    backups: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for tmp, target in staged:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                backup = target.with_name(f".{target.name}.previous")
                os.replace(target, backup)
                backups.append((backup, target))
            os.replace(tmp, target)
            placed.append(target)
        then()
    except BaseException:
        for target in placed:
            target.unlink(missing_ok=True)
        for backup, target in reversed(backups):
            os.replace(backup, target)
        raise
    for backup, _ in backups:
        backup.unlink(missing_ok=True)


def _relative(path: Path, reg: RegistryFile) -> str:
    path = Path(os.path.abspath(path))
    root = Path(os.path.abspath(reg.root))
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _options_spec(options: dict) -> str:
    return (":" + ",".join(f"{k}={v}" for k, v in options.items())) if options else ""


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def summary_table(result: TrainResult) -> str:
    """A plain-text table: one row per head with its final loss, metrics, weights and sha256."""
    rows = []
    for h in result.heads.values():
        metrics = " ".join(f"{k}={v:.4g}" for k, v in h.metrics.items())
        rows.append(
            {
                "head": h.name,
                "final loss": f"{h.final_loss:.4g}",
                "eval": metrics or "-",
                "weights": str(h.weights) if h.weights else "-",
                "sha256": (h.sha256 or "")[:12],
            }
        )
    columns = ["head", "final loss", "eval", "weights", "sha256"]
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in columns}
    lines = ["  ".join(k.ljust(widths[k]) for k in columns)]
    lines += ["  ".join(r[k].ljust(widths[k]) for k in columns) for r in rows]
    tail = (
        f"{result.steps} steps, {result.steps_per_s:.3g} steps/s, encoder {result.encoder_fingerprint[:12]}"
    )
    if result.used_cache:
        tail += f", features from cache {result.used_cache}"
    if result.registry:
        tail += f"; registered in {result.registry}"
    return "\n".join([*lines, tail])
