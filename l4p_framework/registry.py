"""registry.yaml: the model bundle (encoder + heads + weights + fingerprints), validated by pydantic."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

from .config import merge_configs, validate
from .errors import L4PError, PluginError, RegistryError, WeightsError
from .io import atomic_write_text, sha256_file
from .matching import MatchConfig
from .profiles import DEFAULT_PROFILE, Profile
from .specs import HeadSpec

if TYPE_CHECKING:
    from .encoder.config import EncoderConfig
    from .plugins import PluginHost

SCHEMA_VERSION = 1


class EncoderEntry(BaseModel):
    """The shared encoder: a preset, optionally with weights (else random init from `seed`)."""

    model_config = ConfigDict(extra="forbid")
    preset: str
    weights: str | None = None
    sha256: str | None = None
    fingerprint: str | None = None
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 where the hardware runs bf16 matmuls fast (AMX, AVX512-BF16, CUDA), else fp32."""

    @field_validator("weights")
    @classmethod
    def _hub_id(cls, weights: str | None) -> str | None:
        """A hub id (hf://OWNER/NAME[@REVISION][/FILE.pth]) must be well-formed; nothing is fetched here."""
        if weights is not None and weights.startswith("hf://"):
            from .encoder.hub import parse_hub_id

            try:
                parse_hub_id(weights)
            except WeightsError as exc:
                raise PydanticCustomError("hub_id", "{reason}", {"reason": str(exc)}) from None
        return weights


class HeadEntry(BaseModel):
    """One head: its plugin distribution, config params, weights and the encoder it was trained on."""

    model_config = ConfigDict(extra="forbid")
    plugin: str
    version: str | None = None
    params: dict = {}
    weights: str | None = None
    sha256: str | None = None
    encoder_fingerprint: str | None = None
    metrics: dict[str, float] = {}


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: str = "cache"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class WindowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stride: int = 8
    """Frames between the starts of consecutive windows: 1 .. the encoder's window length."""

    @field_validator("stride")
    @classmethod
    def _positive(cls, stride: int) -> int:
        if stride < 1:
            raise PydanticCustomError("stride", "must be >= 1 (frames between window starts)")
        return stride


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION
    profile: Profile = DEFAULT_PROFILE
    """"l4p" (default) or "official": the official L4P pre-processing, windowing, stitching and
    autocast where l4p's defaults differ (`l4p_framework.profiles`); `l4p run --profile` overrides it."""
    encoder: EncoderEntry
    heads: dict[str, HeadEntry] = {}
    cache: CacheSettings = CacheSettings()
    window: WindowSettings = WindowSettings()
    matching: MatchConfig = MatchConfig()
    """The shared frame matching of heads whose config reads it (`l4p_framework.matching`)."""


@dataclass
class RegistryFile:
    """A validated registry plus where it came from (relative paths resolve against `root`)."""

    registry: Registry
    path: Path | None
    root: Path

    def resolve(self, relative: str | None) -> Path | None:
        if relative is None:
            return None
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "<in-memory registry>"

    def head_config(self, name: str, spec: HeadSpec) -> BaseModel:
        """Second-pass validation of heads.<name>.params by the head's config model."""
        entry = self.head_entry(name)
        return validate(spec.config_model, entry.params, self.source, f"heads.{name}.params", RegistryError)

    def head_entry(self, name: str) -> HeadEntry:
        try:
            return self.registry.heads[name]
        except KeyError:
            from .suggest import did_you_mean

            known = list(self.registry.heads)
            raise RegistryError(
                f"{self.source}: no head {name!r} in heads{did_you_mean(name, known)}; registered: {known}"
            ) from None

    def check_plugin(self, name: str, host) -> HeadSpec:
        """The HeadSpec for registry head `name`, with a clear error if its plugin is missing."""
        entry = self.head_entry(name)
        try:
            spec = host.get_head(name)
        except PluginError as exc:
            raise PluginError(
                f"{self.source}: heads.{name} needs plugin {entry.plugin!r}, which is not installed or "
                f"failed to load (pip install {entry.plugin}). {exc}"
            ) from None
        if entry.plugin != spec.distribution and not spec.distribution.startswith("<"):
            raise PluginError(
                f"{self.source}: heads.{name}.plugin is {entry.plugin!r} but head {name!r} is provided by "
                f"{spec.distribution!r}; fix the registry or install the right plugin"
            )
        return spec

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the registry as YAML atomically (to `path`, default where it came from)."""
        path = Path(path or self.path)
        data = self.registry.model_dump(mode="json", exclude_defaults=False)
        return atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(data)))


def load_registry(
    path: str | os.PathLike,
    overrides: Sequence[str] = (),
    extra_files: Sequence[str | os.PathLike] = (),
) -> RegistryFile:
    """Merge `path`, `extra_files` and key=value overrides (OmegaConf), then validate (pydantic).

    The files hold plain values: ``${...}`` interpolations (``${oc.env:VAR}`` reads the
    environment), YAML tags and alias bombs are refused with a one-line RegistryError.
    """
    path = Path(path)
    data = merge_configs(
        [path, *extra_files], overrides, error=RegistryError, model=Registry, interpolation=False
    )
    registry = validate(Registry, data, str(path), error=RegistryError)
    return RegistryFile(registry, path, path.resolve().parent)


def _is_hub(weights: str | None) -> bool:
    return weights is not None and weights.startswith("hf://")


def _encoder_path(reg: RegistryFile) -> Path | None:
    """encoder.weights on disk: relative to the registry, or for a hub id (hf://...) the hub cache's
    snapshot folder or file, fetched when not cached (WeightsError naming the registry if it cannot be)."""
    weights = reg.registry.encoder.weights
    if not _is_hub(weights):
        return reg.resolve(weights)
    from .encoder.hub import resolve_hub_source

    try:
        return resolve_hub_source(weights)
    except WeightsError as exc:
        raise WeightsError(f"{reg.source}: encoder.weights: {exc}") from None


def resolve_encoder_weights(reg: RegistryFile) -> Path | None:
    """The local path of encoder.weights (None: none set), checked against encoder.sha256.

    A hub id is fetched into (or read from) the hub cache; its sha256 is that of the weights file
    (model.safetensors / pytorch_model.bin of a transformers repo, else the file itself).
    RegistryError for a missing file or a sha256 mismatch, WeightsError for a hub id that cannot
    be fetched.
    """
    from .encoder.hub import weights_file

    entry = reg.registry.encoder
    path = _encoder_path(reg)
    if path is None:
        return None
    if not _is_hub(entry.weights) and not path.is_file():
        raise RegistryError(f"{reg.source}: encoder.weights: file {path} does not exist")
    if entry.sha256 and sha256_file(weights_file(path)) != entry.sha256:
        hint = ""
        if _is_hub(entry.weights):
            hint = (
                f" ({entry.weights} now resolves to another file than the locked one; pin a commit, "
                "hf://OWNER/NAME@COMMIT, or run `l4p registry lock` if the change is intended)"
            )
        raise RegistryError(
            f"{reg.source}: encoder.weights: sha256 of {weights_file(path)} differs from encoder.sha256{hint}"
        )
    return path


def check_files(reg: RegistryFile) -> list[str]:
    """Problems with the files the registry names: missing weights, sha256 mismatches.

    A hub id (hf://...) as encoder.weights is checked only when encoder.sha256 is set (fetched into,
    or read from, the hub cache, then compared); without a sha256 there is nothing to compare, as for
    a local file. `check_weights` (validate --deep) fetches and loads it in any case.
    """
    problems = []
    if _is_hub(reg.registry.encoder.weights) and reg.registry.encoder.sha256:
        try:
            resolve_encoder_weights(reg)
        except L4PError as exc:
            problems.append(str(exc))
    entries = [("encoder", reg.registry.encoder)] + [(f"heads.{n}", e) for n, e in reg.registry.heads.items()]
    for where, entry in entries:
        if where == "encoder" and _is_hub(entry.weights):
            continue
        path = reg.resolve(entry.weights)
        if path is None:
            continue
        if not path.is_file():
            problems.append(f"{reg.source}: {where}.weights: file {path} does not exist")
        elif entry.sha256 and sha256_file(path) != entry.sha256:
            problems.append(f"{reg.source}: {where}.weights: sha256 of {path} differs from {where}.sha256")
    return problems


def check_encoder_preset(reg: RegistryFile, host: PluginHost | None = None) -> EncoderConfig:
    """The EncoderConfig of encoder.preset (core preset or encoder plugin of `host`).

    RegistryError, with the closest name, for an unknown preset: also when encoder.weights is set,
    so a misspelled preset next to a weights file is not silently ignored.
    """
    from .encoder.config import PRESETS

    name = reg.registry.encoder.preset
    if name in PRESETS:
        return PRESETS[name]
    if host is None:
        from .plugins import get_plugin_host

        host = get_plugin_host()
    plugin_presets = host.encoders()
    if name in plugin_presets:
        return plugin_presets[name].config
    from .suggest import did_you_mean

    known = sorted({*PRESETS, *plugin_presets})
    raise RegistryError(
        f"{reg.source}: encoder.preset: unknown encoder preset {name!r}{did_you_mean(name, known)}; "
        f"known presets: {known}"
    )


def check_window(reg: RegistryFile, window_frames: int) -> None:
    """RegistryError unless window.stride fits an encoder window of `window_frames` frames."""
    stride = reg.registry.window.stride
    if stride > window_frames:
        raise RegistryError(
            f"{reg.source}: window.stride must be <= {window_frames} (the encoder's window length), "
            f"got {stride}; a larger stride skips frames (half the window is the usual choice)"
        )


def check_weights(reg: RegistryFile, host: PluginHost | None = None) -> list[str]:
    """Problems found by loading every weights file the registry names, as `L4P.from_registry` does.

    Finds what sha256 checks cannot: files that are corrupt or truncated but registered as they
    are, NaN/Inf values, tensors whose shapes do not fit the module the head's spec and config
    build, head files trained on another encoder and an encoder whose fingerprint differs from
    encoder.fingerprint. One line per problem, naming the head and the file. Missing files, sha256
    mismatches, missing plugins and invalid params are left to `check_files` and plain validation.
    """
    from .checkpoints import load_head
    from .encoder import load_encoder
    from .errors import L4PError

    if host is None:
        from .plugins import get_plugin_host

        host = get_plugin_host()
    entry = reg.registry.encoder
    hub = _is_hub(entry.weights)
    try:
        weights = _encoder_path(reg)  # a hub id: fetched into (or read from) the hub cache
    except WeightsError as exc:
        return [f"{exc} (heads not checked: they need the encoder)"]
    if weights is not None and not hub and not weights.is_file():
        return []  # reported by check_files; the heads cannot be checked without the encoder
    try:
        encoder = load_encoder(weights or entry.preset, seed=entry.seed, precision="fp32")
    except L4PError as exc:
        return [f"{reg.source}: encoder.weights: {exc} (heads not checked: they need the encoder)"]
    problems = []
    if entry.fingerprint and encoder.fingerprint != entry.fingerprint:
        problems.append(
            f"{reg.source}: encoder.weights: {entry.weights if hub else weights or entry.preset} has fingerprint "
            f"{encoder.fingerprint[:16]}..., encoder.fingerprint says {entry.fingerprint[:16]}...; "
            "run `l4p registry lock` if the change is intended"
        )
    for name, head in reg.registry.heads.items():
        path = reg.resolve(head.weights)
        if path is None or not path.is_file():
            continue
        try:
            spec = reg.check_plugin(name, host)
            config = reg.head_config(name, spec)
        except L4PError:
            continue  # reported by plain validation
        if head.encoder_fingerprint and head.encoder_fingerprint != encoder.fingerprint:
            problems.append(
                f"{reg.source}: heads.{name}.encoder_fingerprint {head.encoder_fingerprint[:16]}... is not "
                f"the encoder's {encoder.fingerprint[:16]}... ({path}); retrain the head on this encoder"
            )
        try:
            load_head(path, spec, encoder.info, config=config)
        except L4PError as exc:
            problems.append(f"{reg.source}: heads.{name}.weights: {exc}")
    return problems


def lock_registry(reg: RegistryFile) -> RegistryFile:
    """Record the current sha256 of every weights file (and the encoder fingerprint) in place.

    A hub id as encoder.weights is fetched into (or read from) the hub cache; its sha256 is that of
    the weights file it resolves to (`l4p_framework.encoder.hub.weights_file`).
    """
    from .encoder import load_encoder
    from .encoder.hub import weights_file

    r = reg.registry
    encoder_path = _encoder_path(reg)
    for entry in [r.encoder, *r.heads.values()]:
        path = encoder_path if entry is r.encoder else reg.resolve(entry.weights)
        if path is not None:
            if not path.is_file() and not (entry is r.encoder and _is_hub(entry.weights)):
                raise RegistryError(f"{reg.source}: cannot lock, weights file {path} does not exist")
            entry.sha256 = sha256_file(weights_file(path))
    source = encoder_path or r.encoder.preset
    r.encoder.fingerprint = load_encoder(source, seed=r.encoder.seed).fingerprint
    return reg


def schema() -> dict:
    """JSON schema of registry.yaml."""
    return Registry.model_json_schema()
