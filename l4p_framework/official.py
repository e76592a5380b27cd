"""The official L4P checkpoint: its head names and key prefixes, and conversion to l4p files.

One place for the official layout (l4p-model.md §5):

- `OFFICIAL_HEADS`: official head module (`l4p_model.task_heads.<module>.`) -> l4p head name.
- `official_head_state` / `official_key_map_for`: the one rule every head's `official_key_map`
  follows. It accepts either the head's own sub-dict (keys relative to
  `l4p_model.task_heads.<module>.`) or any dict whose keys all carry the `l4p_model.` root, e.g. the
  whole official state dict; then only that head's keys are kept and the prefix is stripped.
- `plan_conversion`: an official state dict (real tensors or meta tensors) -> the l4p encoder and
  head state dicts, every key consumed, every l4p parameter filled, every shape checked against
  modules built on the meta device, aliases verified. No file is touched, so it runs on the full
  1.4-billion-parameter layout in a second.
- `convert_official`: a Lightning checkpoint file -> DIR/encoder.safetensors, DIR/<head>.safetensors
  and DIR/registry.yaml (`L4P.from_registry`, `l4p run --registry`), written tensor by tensor into a
  hidden folder that is renamed onto DIR only when complete (`l4p convert-official`).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import ConfigError, L4PError, WeightsError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .encoder.config import EncoderConfig
    from .plugins import PluginHost
    from .specs import EncoderInfo, HeadSpec

OFFICIAL_ROOT = "l4p_model."
"""Every key of the official state dict starts with this (the Lightning module's `l4p_model`)."""
ENCODER_PREFIX = "l4p_model.video_encoder."
HEADS_PREFIX = "l4p_model.task_heads."

OFFICIAL_HEADS: dict[str, str] = {
    "depth": "depth",
    "flow_2d_backward": "flow",
    "dyn_mask": "motion",
    "camray": "pose",
    "track_2d": "tracking",
}
"""Official head module name (`l4p_model.task_heads.<module>.`) -> l4p head name."""

OFFICIAL_KEY_COUNT = 916
"""Keys of the released checkpoint's state dict (l4p-model.md §5), aliases included."""

CONVERTER_VERSION = "1"
DEFAULT_ENCODER_PRESET = "l4p-vitg14"
STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# -- the key rule shared by every head ------------------------------------------------------------------


def official_prefix(module: str) -> str:
    """`l4p_model.task_heads.<module>.` of an official head module (see `OFFICIAL_HEADS`)."""
    if module not in OFFICIAL_HEADS:
        raise ConfigError(f"unknown official head module {module!r}; known: {list(OFFICIAL_HEADS)}")
    return f"{HEADS_PREFIX}{module}."


def official_module(head: str) -> str:
    """The official head module of l4p head `head` (e.g. "flow" -> "flow_2d_backward")."""
    for module, name in OFFICIAL_HEADS.items():
        if name == head:
            return module
    raise ConfigError(
        f"head {head!r} has no counterpart in the official L4P checkpoint; heads that have one: "
        f"{list(OFFICIAL_HEADS.values())}"
    )


def select_prefix(state_dict: Mapping[str, Any], prefix: str, what: str) -> dict[str, Any]:
    """The entries of `state_dict` under `prefix`, relative to it, by the official-key rule.

    - No key starts with `l4p_model.`: the dict is already relative; returned as it is (a copy).
    - Every key starts with `l4p_model.` (the whole official state dict, or part of it): the keys
      under `prefix` are kept with `prefix` removed; the others are ignored. WeightsError when none
      is under `prefix`.
    - Some keys do and some do not: WeightsError (the two forms cannot be mixed).
    """
    rooted = [k for k in state_dict if k.startswith(OFFICIAL_ROOT)]
    if not rooted:
        return dict(state_dict)
    if len(rooted) != len(state_dict):
        plain = [k for k in state_dict if not k.startswith(OFFICIAL_ROOT)]
        raise WeightsError(
            f"{what}: {len(rooted)} keys start with {OFFICIAL_ROOT!r} and {len(plain)} do not (first: "
            f"{plain[:3]}); pass either the whole official state dict or only the keys relative to {prefix!r}"
        )
    out = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not out:
        roots = sorted({".".join(k.split(".")[:3]) for k in rooted})
        raise WeightsError(f"{what}: no key starts with {prefix!r}; the dict has keys under {roots[:8]}")
    return out


def official_head_state(state_dict: Mapping[str, Any], module: str) -> dict[str, Any]:
    """The official head `module`'s keys, relative to `l4p_model.task_heads.<module>.` (`select_prefix`)."""
    return select_prefix(state_dict, official_prefix(module), f"official {module!r} head")


def official_key_map_for(
    head: str, inner: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """The `official_key_map` of l4p head `head`: `official_head_state`, then `inner` on the relative keys.

    `inner` maps the head's relative official keys to its l4p keys and checks them (aliases, ...).
    """
    module = official_module(head)

    def official_key_map(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return inner(official_head_state(state_dict, module))

    official_key_map.__doc__ = (
        f"Official L4P `{module}` head weights -> the `{head}` head's state dict.\n\n"
        f"Accepts the head's own keys (relative to `{official_prefix(module)}`) or any dict whose keys all "
        "start with `l4p_model.` (e.g. the whole official state dict: only this head's keys are taken)."
    )
    official_key_map.__qualname__ = f"official_key_map[{head}]"
    return official_key_map


def official_encoder_state(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The official encoder's keys relative to `l4p_model.video_encoder.`; their names are l4p's
    `VideoEncoder` keys 1:1 (VideoMAEv2 layout, `encoder/vit.py`)."""
    return select_prefix(state_dict, ENCODER_PREFIX, "official video encoder")


# -- head parameters from the checkpoint's shapes ---------------------------------------------------------


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    value = state.get(key)
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _dense_widths(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """layer_dims / feature_dim / last_dim of an official DPT head, where they differ from the official
    preset's (256, 512, 1024, 1024) / 256 / 128 (reduced-width checkpoints); {} for the released one."""
    dpt = "task_head.dpt."
    dims = [_shape(state, f"{dpt}act_postprocess.{i}.0.weight") for i in range(4)]
    feature = _shape(state, f"{dpt}scratch.layer1_rn.weight")
    last = _shape(state, f"{dpt}head1.0.weight")
    out: dict[str, Any] = {}
    if all(d is not None for d in dims):
        layer_dims = [d[0] for d in dims]  # type: ignore[index]
        if layer_dims != [256, 512, 1024, 1024]:
            out["layer_dims"] = layer_dims
    if feature is not None and feature[0] != 256:
        out["feature_dim"] = feature[0]
    if last is not None and last[0] != 128:
        out["last_dim"] = last[0]
    return out


def _tracking_sizes(state: Mapping[str, torch.Tensor], width: int) -> dict[str, Any]:
    """mlp_dim, depth, downsample_rate and out_dim_factor of an official tracking head from its shapes
    (attention heads cannot be read from shapes: the official 8 are kept)."""
    layers = "mask_decoder.transformer.layers."
    out: dict[str, Any] = {}
    depth = len({k[len(layers) :].split(".")[0] for k in state if k.startswith(layers)})
    if depth:
        out["depth"] = depth
    lin1 = _shape(state, f"{layers}0.mlp.lin1.weight")
    if lin1 is not None and lin1[0] != 2048:
        out["mlp_dim"] = lin1[0]
    cross = _shape(state, f"{layers}0.cross_attn_token_to_image.q_proj.weight")
    if cross is not None and cross[0] > 0 and width % cross[0] == 0:
        out["downsample_rate"] = width // cross[0]
    up = _shape(state, "mask_decoder.output_upscaling.3.weight")
    if up is not None and up[1] > 0 and width % up[1] == 0:
        out["out_dim_factor"] = width // up[1]
    return out


def official_head_params(head: str, state: Mapping[str, torch.Tensor], width: int) -> dict[str, Any]:
    """Registry params of l4p head `head` that reproduce the official head whose (relative) keys are
    `state`: the "official" preset and behaviour, plus any widths read from the shapes."""
    if head in ("depth", "flow", "motion"):
        params: dict[str, Any] = {"preset": "official", **_dense_widths(state)}
        if head == "flow":
            params["matching"] = "none"
        if head == "motion":
            params["pos_weight"] = None  # the official dyn_mask output is the raw logit
        return params
    if head == "pose":
        return {"preset": "official", "matching": "none", **_dense_widths(state)}
    if head == "tracking":
        return {"preset": "official", "matching": "none", **_tracking_sizes(state, width)}
    raise ConfigError(f"no official parameters for head {head!r}")


# -- planning: keys and shapes, no files ------------------------------------------------------------------


@dataclass
class HeadPlan:
    """One converted head: its spec, config (and the registry params that give it) and l4p state dict."""

    name: str
    module: str
    spec: HeadSpec
    params: dict[str, Any]
    config: BaseModel
    state: dict[str, torch.Tensor]


@dataclass
class ConversionPlan:
    """An official state dict mapped onto l4p modules: every key consumed, every parameter filled."""

    encoder_config: EncoderConfig
    encoder_state: dict[str, torch.Tensor]
    heads: dict[str, HeadPlan] = field(default_factory=dict)

    def info(self, fingerprint: str = "") -> EncoderInfo:
        from .specs import EncoderInfo

        c = self.encoder_config
        return EncoderInfo(
            c.name,
            c.width,
            c.depth,
            c.num_heads,
            c.patch_size,
            c.tubelet,
            c.num_frames,
            c.image_size,
            fingerprint,
        )

    def parameter_count(self) -> int:
        """Elements of every converted tensor (aliases counted once)."""
        tensors = [*self.encoder_state.values(), *(v for h in self.heads.values() for v in h.state.values())]
        return sum(t.numel() for t in tensors)


def _list(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _compare(
    own: Mapping[str, torch.Tensor],
    got: Mapping[str, torch.Tensor],
    where: str,
    official_name: Callable[[str], str],
) -> list[str]:
    """Problems of `got` (converted l4p keys) against a module's state dict `own`: missing,
    unexpected (named by their official key) and mis-shaped keys."""
    problems = []
    missing = [k for k in own if k not in got]
    unexpected = [official_name(k) for k in got if k not in own]
    shapes = [
        f"{official_name(k)}: checkpoint {tuple(got[k].shape)}, l4p expects {tuple(own[k].shape)}"
        for k in own
        if k in got and tuple(got[k].shape) != tuple(own[k].shape)
    ]
    if missing:
        problems.append(
            f"{where}: {len(missing)} l4p parameters not filled by the checkpoint: {_list(missing)}"
        )
    if unexpected:
        problems.append(f"{where}: {len(unexpected)} checkpoint keys not consumed: {_list(unexpected)}")
    if shapes:
        problems.append(f"{where}: {len(shapes)} wrong shapes: {_list(shapes, 4)}")
    return problems


def infer_encoder_config(state: Mapping[str, torch.Tensor], preset: str | None, source: str) -> EncoderConfig:
    """The encoder config of the official encoder keys `state` (relative): `preset` when given, else the
    preset whose width, depth, patch and tubelet match the shapes (as the VideoMAEv2 loader infers it)."""
    from .encoder.loading import _infer_preset, get_preset

    if preset is None:
        try:
            preset = _infer_preset(dict(state), Path(source))
        except WeightsError as exc:
            raise WeightsError(f"{exc} (give the encoder preset: --encoder-preset NAME)") from None
    return get_preset(preset)


def plan_conversion(
    state_dict: Mapping[str, torch.Tensor],
    *,
    encoder_preset: str | None = None,
    host: PluginHost | None = None,
    source: str = "official checkpoint",
) -> ConversionPlan:
    """Map an official L4P state dict (all keys under `l4p_model.`) onto l4p's encoder and heads.

    Works on real or meta tensors. The encoder preset is `encoder_preset`, or inferred from the
    shapes (l4p-vitg14 for the released checkpoint; a smaller preset for reduced-width test
    checkpoints); head widths are read from the shapes. Every key must be consumed and every l4p
    parameter filled with the right shape (modules built on the meta device); the dense heads'
    `scratch.layer_rn.*` aliases must equal their originals. All problems are reported together
    in one WeightsError naming the keys.
    """
    from .config import validate
    from .encoder import build_encoder_skeleton

    if host is None:
        from .plugins import get_plugin_host

        host = get_plugin_host()
    problems: list[str] = []
    known = [ENCODER_PREFIX, *(official_prefix(m) for m in OFFICIAL_HEADS)]
    stray = [k for k in state_dict if not k.startswith(tuple(known))]
    if stray:
        problems.append(
            f"{len(stray)} checkpoint keys belong to no official part (encoder {ENCODER_PREFIX!r} or heads "
            f"{HEADS_PREFIX}{{{','.join(OFFICIAL_HEADS)}}}.): {_list(stray)}"
        )
    rooted = {k: v for k, v in state_dict.items() if k.startswith(OFFICIAL_ROOT)}
    if not any(k.startswith(ENCODER_PREFIX) for k in rooted):
        raise WeightsError(
            f"{source}: no key starts with {ENCODER_PREFIX!r}; this is not an official L4P checkpoint "
            f"(first keys: {list(state_dict)[:5]})"
        )
    encoder_state = official_encoder_state(rooted)
    config = infer_encoder_config(encoder_state, encoder_preset, source)
    skeleton = build_encoder_skeleton(config)
    problems += _compare(
        skeleton.state_dict(),
        encoder_state,
        f"encoder ({ENCODER_PREFIX}*, preset {config.name})",
        lambda k: ENCODER_PREFIX + k,
    )
    plan = ConversionPlan(config, encoder_state)
    info = plan.info()
    for module, name in OFFICIAL_HEADS.items():
        prefix = official_prefix(module)
        where = f"head {name!r} ({prefix}*)"
        relative = {k[len(prefix) :]: v for k, v in rooted.items() if k.startswith(prefix)}
        if not relative:
            problems.append(f"{where}: the checkpoint has no keys for this head")
            continue
        spec = host.get_head(name)
        if spec.official_key_map is None:
            raise ConfigError(f"the installed {name!r} head ({spec.distribution}) has no official_key_map")
        params = official_head_params(name, relative, config.width)
        try:
            head_config = validate(
                spec.config_model, params, f"official {module!r} head", f"heads.{name}.params"
            )
            with torch.device("meta"):
                built = spec.build(info, head_config)
        except L4PError as exc:
            problems.append(f"{where}: cannot build the l4p head for the checkpoint's sizes: {exc}")
            continue
        try:
            mapped = spec.official_key_map(relative)
        except WeightsError as exc:
            problems.append(f"{where}: {exc}")
            continue
        origin: dict[int, str] = {}
        for key, value in relative.items():
            origin.setdefault(id(value), prefix + key)
        problems += _compare(
            built.state_dict(), mapped, where, lambda k, m=mapped, o=origin: o.get(id(m[k]), f"{k} (l4p key)")
        )
        plan.heads[name] = HeadPlan(name, module, spec, params, head_config, mapped)
    if problems:
        raise WeightsError(f"{source}: cannot convert the official checkpoint:\n  " + "\n  ".join(problems))
    return plan


# -- files ----------------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _stored(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


class _CastView(Mapping):
    """A read-only view of a state dict whose floating tensors are cast to `dtype` when read (one at a
    time), for fingerprints of the stored values without a second copy of the weights."""

    def __init__(self, state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> None:
        self.state, self.dtype = state, dtype

    def __getitem__(self, key: str) -> torch.Tensor:
        return _stored(self.state[key], self.dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self.state)

    def __len__(self) -> int:
        return len(self.state)


def write_safetensors_streamed(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    dtype: torch.dtype,
) -> Path:
    """Write `tensors` (floating ones cast to `dtype`) as a safetensors file, one tensor at a time.

    Only one cast tensor exists at a time, so a memory-mapped checkpoint is never copied whole. A
    tensor whose cast value is NaN/Inf (e.g. beyond float16's range) is a WeightsError naming it.
    The caller makes the write atomic (the converter writes into a hidden folder).
    """
    path = Path(path)
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for key, tensor in tensors.items():
        out_dtype = dtype if tensor.is_floating_point() else tensor.dtype
        if out_dtype not in _SAFETENSORS_DTYPES:
            raise WeightsError(f"tensor {key!r} has dtype {out_dtype}, which safetensors files cannot hold")
        size = tensor.numel() * torch.empty((), dtype=out_dtype).element_size()
        header[key] = {
            "dtype": _SAFETENSORS_DTYPES[out_dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for key, tensor in tensors.items():
            value = _stored(tensor, dtype).detach().to("cpu").contiguous()
            if value.is_floating_point() and value.numel():
                low, high = torch.aminmax(value)
                if not (torch.isfinite(low) and torch.isfinite(high)):
                    raise WeightsError(
                        f"tensor {key!r} has NaN/Inf values when stored as {dtype} (the checkpoint is corrupt, "
                        "or its values exceed the range of the dtype: use --dtype float32 or bfloat16)"
                    )
            if value.numel():
                f.write(memoryview(value.reshape(-1).view(torch.uint8).numpy()))
    return path


def _dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in STORAGE_DTYPES.items() if v == dtype)


def write_conversion(
    plan: ConversionPlan,
    folder: Path,
    *,
    dtype: torch.dtype,
    source_name: str,
    source_sha256: str,
) -> Path:
    """Write the planned encoder and head files and registry.yaml into `folder`; returns the registry path."""
    from .checkpoints import head_metadata
    from .encoder.loading import ENCODER_FORMAT
    from .encoder.vit import weights_fingerprint
    from .io import sha256_file
    from .registry import EncoderEntry, HeadEntry, Registry, RegistryFile, WindowSettings

    provenance = {
        "source": source_name,
        "source_sha256": source_sha256,
        "converter": "l4p convert-official",
        "converter_version": CONVERTER_VERSION,
        "dtype": _dtype_name(dtype),
    }
    config = plan.encoder_config
    fingerprint = weights_fingerprint(_CastView(plan.encoder_state, dtype), config)
    encoder_path = write_safetensors_streamed(
        folder / "encoder.safetensors",
        plan.encoder_state,
        {
            "format": ENCODER_FORMAT,
            "config": json.dumps(config.model_dump(mode="json"), sort_keys=True),
            "fingerprint": fingerprint,
            **provenance,
        },
        dtype,
    )
    info = plan.info(fingerprint)
    encoder_entry = EncoderEntry(
        preset=config.name,
        weights=encoder_path.name,
        sha256=sha256_file(encoder_path),
        fingerprint=fingerprint,
    )
    heads: dict[str, HeadEntry] = {}
    for name, head in plan.heads.items():
        spec = head.spec
        training = {
            "official_module": head.module,
            "official_prefix": official_prefix(head.module),
            **provenance,
        }
        metadata = {**head_metadata(spec, head.config, info, training), **provenance}
        path = write_safetensors_streamed(folder / f"{name}.safetensors", head.state, metadata, dtype)
        heads[name] = HeadEntry(
            plugin=spec.distribution,
            version=spec.version,
            params=head.config.model_dump(mode="json"),
            weights=path.name,
            sha256=sha256_file(path),
            encoder_fingerprint=fingerprint,
        )
    registry = Registry(
        profile="official",  # the official pre-processing, windows, stitching and autocast by default
        encoder=encoder_entry,
        heads=heads,
        window=WindowSettings(stride=max(1, config.num_frames // 2)),  # the official driver: half a window
    )
    registry_path = folder / "registry.yaml"
    RegistryFile(registry, registry_path, folder).save(registry_path)
    return registry_path


def convert_official(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: str = "float32",
    encoder_preset: str | None = None,
    overwrite: bool = False,
    host: PluginHost | None = None,
) -> Path:
    """Convert the official L4P Lightning checkpoint `checkpoint` into an l4p model folder `out_dir`.

    Reads the file with the restricted loader (`encoder.loading.load_torch_file`: weights only,
    memory-mapped; classes it does not admit become inert placeholders, nothing is imported or run),
    takes its `state_dict`, plans the conversion (`plan_conversion`) and writes encoder.safetensors,
    <head>.safetensors per head (metadata: source file, source sha256, converter version, dtype)
    and registry.yaml into a hidden folder renamed onto `out_dir` when complete: a failure leaves
    `out_dir` as it was. An existing non-empty `out_dir` is replaced only with `overwrite`.
    Returns the path of the registry.
    """
    from .encoder.loading import find_state_dict, load_torch_file
    from .io import atomic_folder, sha256_file

    if dtype not in STORAGE_DTYPES:
        raise ConfigError(f"dtype must be one of {list(STORAGE_DTYPES)}, got {dtype!r}")
    source = Path(checkpoint)
    out = Path(out_dir)
    if not source.is_file():
        raise WeightsError(f"checkpoint {source} does not exist")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} exists and is not empty; choose another folder or pass --force")
    state = find_state_dict(load_torch_file(source), source)
    plan = plan_conversion(state, encoder_preset=encoder_preset, host=host, source=str(source))
    digest = sha256_file(source)
    try:
        with atomic_folder(out, overwrite=overwrite) as tmp:
            write_conversion(
                plan, tmp, dtype=STORAGE_DTYPES[dtype], source_name=source.name, source_sha256=digest
            )
    except FileExistsError:
        raise ConfigError(
            f"--out {out} appeared meanwhile and is not empty; pass --force to replace it"
        ) from None
    except OSError as exc:
        raise L4PError(f"cannot write {out}: {exc.strerror or exc}; nothing was written") from None
    return out / "registry.yaml"


__all__ = [
    "CONVERTER_VERSION",
    "ENCODER_PREFIX",
    "HEADS_PREFIX",
    "OFFICIAL_HEADS",
    "OFFICIAL_KEY_COUNT",
    "ConversionPlan",
    "HeadPlan",
    "convert_official",
    "official_encoder_state",
    "official_head_params",
    "official_head_state",
    "official_key_map_for",
    "official_module",
    "official_prefix",
    "plan_conversion",
    "select_prefix",
    "write_conversion",
    "write_safetensors_streamed",
]
