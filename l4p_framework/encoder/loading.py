"""load_encoder: presets, l4p safetensors, Hugging Face VideoMAE folders, VideoMAEv2 .pth files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..errors import WeightsError
from ..safetensors_io import read_safetensors, strict_load, write_safetensors
from .config import IMAGENET_MEAN, IMAGENET_STD, PRESETS, EncoderConfig
from .vit import VideoEncoder, weights_fingerprint

Precision = Literal["auto", "bf16", "fp32"]
ENCODER_FORMAT = "l4p-encoder/1"


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """True where bf16 matmuls are fast: CUDA with bf16, or a CPU with bf16 units (AMX/AVX512-BF16)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: Precision, device: torch.device | str = "cpu") -> torch.dtype:
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if bf16_supported(device) else torch.float32


def get_preset(name: str) -> EncoderConfig:
    """The named encoder config, from the core presets or an encoder plugin."""
    if name in PRESETS:
        return PRESETS[name]
    from ..plugins import get_plugin_host  # encoder plugins

    specs = get_plugin_host().encoders()
    if name in specs:
        return specs[name].config
    known = sorted({*PRESETS, *specs})
    from ..errors import ConfigError
    from ..suggest import did_you_mean

    raise ConfigError(f"unknown encoder preset {name!r}{did_you_mean(name, known)}; known presets: {known}")


def init_weights(encoder: VideoEncoder, seed: int) -> VideoEncoder:
    """Deterministic ViT initialisation: trunc-normal(0.02) linears/conv, zero biases, unit norms."""
    gen = torch.Generator().manual_seed(seed)
    for module in encoder.modules():
        if isinstance(module, nn.Linear | nn.Conv3d):
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen).clamp_(-2, 2) * 0.02)
                if module.bias is not None:
                    module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return encoder


def build_encoder(config: EncoderConfig | str, seed: int = 0) -> VideoEncoder:
    """A randomly initialised (trainable) encoder of `config` (or a preset name)."""
    config = get_preset(config) if isinstance(config, str) else config
    return init_weights(VideoEncoder(config), seed)


def build_encoder_skeleton(config: EncoderConfig | str) -> VideoEncoder:
    """An encoder of `config` (or a preset name) on the meta device, for facts, not for running.

    Every parameter has its shape but no memory and no values, so even the 1-billion-parameter
    l4p-vitg14 builds in a fraction of a second: parameter counts and token grids
    (`check_video` on a meta tensor) are exact, weights and fingerprints do not exist.
    """
    config = get_preset(config) if isinstance(config, str) else config
    with torch.device("meta"):
        return VideoEncoder(config)


def is_preset_name(source: str | os.PathLike) -> bool:
    """True when `load_encoder` reads `source` as a preset name rather than a path."""
    return isinstance(source, str) and not Path(source).exists() and "/" not in source and "." not in source


def load_encoder(
    source: str | os.PathLike,
    preset: str | None = None,
    *,
    precision: Precision = "auto",
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> VideoEncoder:
    """The frozen encoder from `source`.

    source: a preset name (random init from `seed`), an l4p encoder ``.safetensors`` file, a
    Hugging Face VideoMAE folder (config.json + model.safetensors or pytorch_model.bin), or an
    official VideoMAEv2 ``.pth`` state dict (`preset` picks the architecture when it cannot be
    inferred), or a Hugging Face hub id ``hf://OWNER/NAME[@REVISION][/FILE.pth]`` (fetched into
    the hub cache by the optional huggingface_hub, see `l4p_framework.encoder.hub`). Every load is
    strict. precision "auto" picks bf16 where the hardware runs it fast.
    """
    if isinstance(source, str) and source.startswith("hf://"):
        from .hub import resolve_hub_source

        source = resolve_hub_source(source)
    path = Path(source)
    if path.is_dir():
        encoder = _load_hf_folder(path)
    elif path.suffix == ".safetensors":
        encoder = _load_l4p_file(path)
    elif path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        encoder = _load_videomaev2(path, preset)
    elif is_preset_name(source):
        encoder = build_encoder(source, seed)
    else:
        raise WeightsError(
            f"cannot load an encoder from {source!r}: expected a preset name, a .safetensors file, "
            "a Hugging Face VideoMAE folder, a VideoMAEv2 .pth file or a hub id hf://OWNER/NAME"
            + ("" if path.exists() else " (the path does not exist)")
        )
    encoder.freeze()
    return encoder.to(device=device, dtype=resolve_precision(precision, device))


def save_encoder(encoder: VideoEncoder, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
    """Write the encoder's weights, config and fingerprint to a safetensors file (atomically).

    Weights are stored as `dtype`. The file must load back with the encoder's fingerprint, so an
    encoder whose weights no longer hold it is refused: one cast to bfloat16 for inference (load
    it with precision="fp32" to save it), or one not rounded to `dtype` first (`round_weights`).
    """
    state = {k: v.to(dtype) for k, v in encoder.state_dict().items()}
    if weights_fingerprint(state, encoder.config) != encoder.fingerprint:
        raise WeightsError(
            f"cannot save the encoder to {path} as {dtype}: the stored weights would not match its "
            f"fingerprint {encoder.fingerprint[:12]}... (its weights are {encoder.dtype}); save an encoder "
            "loaded with precision='fp32', and round it to the storage dtype first "
            "(l4p_framework.checkpoints.round_weights, then freeze())"
        )
    metadata = {
        "format": ENCODER_FORMAT,
        "config": encoder.config.model_dump(mode="json"),
        "fingerprint": encoder.fingerprint,
    }
    return write_safetensors(path, state, metadata)


def _load_l4p_file(path: Path) -> VideoEncoder:
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != ENCODER_FORMAT:
        raise WeightsError(
            f"{path} is not an l4p encoder file (metadata format {metadata.get('format')!r}, "
            f"expected {ENCODER_FORMAT!r}); head files load with load_head, foreign files need conversion"
        )
    try:
        config = EncoderConfig.model_validate_json(metadata["config"])
    except Exception as exc:
        raise WeightsError(f"{path}: encoder config in the metadata is invalid: {exc}") from None
    encoder = VideoEncoder(config)
    strict_load(encoder, tensors, str(path))
    recorded = metadata.get("fingerprint", "").strip('"')
    if recorded and recorded != encoder.fingerprint:
        raise WeightsError(
            f"{path}: weights do not match the fingerprint recorded in the file "
            f"({recorded[:12]}... vs computed {encoder.fingerprint[:12]}...); the file was altered"
        )
    return encoder


# -- Hugging Face transformers VideoMAE ---------------------------------------------------------
_HF_DROP = re.compile(r"^(decoder\.|encoder_to_decoder\.|mask_token$|fc_norm\.|classifier\.)")


def _hf_name(path: Path) -> str:
    """hf:OWNER/NAME for a snapshot folder of the hub cache (models--OWNER--NAME/snapshots/<commit>)."""
    repo = path.parent.parent.name
    if path.parent.name == "snapshots" and repo.startswith("models--"):
        return "hf:" + repo.removeprefix("models--").replace("--", "/")
    return f"hf:{path.name}"


def _load_hf_folder(path: Path) -> VideoEncoder:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise WeightsError(
            f"{path} is a folder but has no config.json; expected a Hugging Face VideoMAE folder"
        )
    try:
        hf = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{config_file} is not valid JSON: {exc}") from None
    if hf.get("model_type") != "videomae":
        raise WeightsError(f"{config_file}: model_type is {hf.get('model_type')!r}, expected 'videomae'")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise WeightsError(
            f"{config_file}: hidden_act {hf['hidden_act']!r} is not supported (only exact 'gelu')"
        )
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        pp = json.loads(pre.read_text())
        mean, std = tuple(pp.get("image_mean", mean)), tuple(pp.get("image_std", std))
    image = hf.get("image_size", 224)
    qv = hf.get("qkv_bias", hf.get("qv_bias", True))
    config = EncoderConfig(
        name=_hf_name(path),
        width=hf.get("hidden_size", 768),
        depth=hf.get("num_hidden_layers", 12),
        num_heads=hf.get("num_attention_heads", 12),
        mlp_dim=hf.get("intermediate_size", 3072),
        patch_size=hf.get("patch_size", 16),
        tubelet=hf.get("tubelet_size", 2),
        num_frames=hf.get("num_frames", 16),
        image_size=(image, image) if isinstance(image, int) else tuple(image),
        qkv_bias="qv" if qv else "none",
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        final_norm=not hf.get("use_mean_pooling", True),
        mean=mean,
        std=std,
    )
    if (path / "model.safetensors").is_file():
        state, _ = read_safetensors(path / "model.safetensors")
    elif (path / "pytorch_model.bin").is_file():
        state = _torch_load(path / "pytorch_model.bin")
    else:
        raise WeightsError(f"{path} has neither model.safetensors nor pytorch_model.bin")
    encoder = VideoEncoder(config)
    strict_load(encoder, convert_hf_state_dict(state, config), f"{path} (Hugging Face VideoMAE)")
    return encoder


def convert_hf_state_dict(state: dict[str, torch.Tensor], config: EncoderConfig) -> dict[str, torch.Tensor]:
    """Map transformers VideoMAE keys (v4 q_bias/v_bias or v5 query.bias/value.bias) to l4p's."""
    state = {k.removeprefix("videomae."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not _HF_DROP.match(k)}
    out: dict[str, torch.Tensor] = {}
    rest = dict(state)

    def take(key: str) -> torch.Tensor | None:
        return rest.pop(key, None)

    for name in ("weight", "bias"):
        tensor = take(f"embeddings.patch_embeddings.projection.{name}")
        if tensor is not None:
            out[f"patch_embed.proj.{name}"] = tensor
        tensor = take(f"layernorm.{name}")
        if tensor is not None:
            out[f"norm.{name}"] = tensor
    for i in range(config.depth):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        a = src + "attention.attention."
        q, k, v = (take(f"{a}{n}.weight") for n in ("query", "key", "value"))
        if q is not None and k is not None and v is not None:
            out[dst + "attn.qkv.weight"] = torch.cat([q, k, v])
        for bias_name, new in (
            ("query.bias", "q_bias"),
            ("q_bias", "q_bias"),
            ("value.bias", "v_bias"),
            ("v_bias", "v_bias"),
        ):
            tensor = take(a + bias_name)
            if tensor is not None:
                out[dst + "attn." + new] = tensor
        for old, new in (
            ("attention.output.dense", "attn.proj"),
            ("intermediate.dense", "mlp.fc1"),
            ("output.dense", "mlp.fc2"),
            ("layernorm_before", "norm1"),
            ("layernorm_after", "norm2"),
        ):
            for name in ("weight", "bias"):
                tensor = take(f"{src}{old}.{name}")
                if tensor is not None:
                    out[f"{dst}{new}.{name}"] = tensor
    out.update({f"<unconverted>{k}": v for k, v in rest.items()})  # reported as unexpected keys
    return out


# -- official VideoMAEv2 / L4P state dicts -----------------------------------------------------
_V2_PREFIXES = ("module.", "model.", "l4p_model.video_encoder.", "video_encoder.", "encoder.", "backbone.")


_BLOCKED_MODULES = ("sys", "os", "posix", "nt")
"""Modules whose globals torch's weights-only unpickler refuses outright (they can only mean code)."""


class InertObject:
    """What a pickled object of a class the weights-only unpickler does not admit becomes.

    It records the arguments and state it was given and nothing else: no import, no call, no
    attribute lookup of the original class ever happens. `global_name` says what it stands for.
    """

    global_name = "<unknown>"

    def __new__(cls, *args: object, **kwargs: object) -> InertObject:
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.args, self.kwargs, self.state, self.items = args, kwargs, None, []

    def __setstate__(self, state: object) -> None:
        self.state = state

    def __setitem__(self, key: object, value: object) -> None:
        self.items.append((key, value))

    def append(self, value: object) -> None:
        self.items.append(value)

    def extend(self, values) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.global_name}>"


def _placeholder(name: str) -> type[InertObject]:
    return type(f"Inert[{name}]", (InertObject,), {"global_name": name, "__module__": __name__})


def _weights_only_load(path: Path, safe_globals: list | None = None) -> object:
    """torch.load weights-only, memory-mapped (zip format; legacy files are read without mmap)."""
    import contextlib

    ctx = torch.serialization.safe_globals(safe_globals) if safe_globals else contextlib.nullcontext()
    with ctx:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) or "zipfile" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)


def _unreadable(path: Path, exc: BaseException) -> WeightsError:
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    # torch's weights-only errors start with generic advice; the reason is the line naming the GLOBAL
    reason = next((x for x in lines if "GLOBAL" in x or "WeightsUnpickler" in x), lines[0] if lines else "")
    return WeightsError(
        f"{path} could not be read as a weights-only torch file ({type(exc).__name__}: {reason}); the file "
        "is corrupt, truncated or not a torch checkpoint (l4p never unpickles arbitrary objects)"
    )


def load_torch_file(path: str | os.PathLike) -> object:
    """The object of a torch.save file, read without running any code from it.

    First `torch.load(weights_only=True, mmap=True)` (tensors are memory-mapped, not copied). When
    that fails only because the pickle names classes or functions weights_only does not admit (a
    Lightning checkpoint's hyper-parameters, callbacks or loops objects), it is read again by the
    same torch unpickler with each such name mapped to an inert placeholder (`InertObject`):
    nothing is imported and no function of the file is called, so a payload built to run code
    stays an inert record. Names of `os`/`sys`/`posix`/`nt` (torch refuses those outright) are a
    WeightsError. Corrupt or truncated files are a WeightsError.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        return _weights_only_load(path)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        if "Weights only load failed" not in str(exc):
            raise _unreadable(path, exc) from None
        first = exc
    try:
        names = sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)))
    except Exception:
        raise _unreadable(path, first) from None
    if not names:
        raise _unreadable(path, first)
    blocked = [n for n in names if n.rsplit(".", 1)[0] in _BLOCKED_MODULES]
    if blocked:
        raise WeightsError(
            f"{path}: refusing to read it: its pickle calls {blocked}, i.e. it was built to run code when "
            "loaded; l4p never runs code from a weights file (nothing was executed)"
        )
    try:
        return _weights_only_load(path, [(_placeholder(n), n) for n in names])
    except Exception as exc:
        raise _unreadable(path, exc) from None


_torch_load = load_torch_file


def _kind(obj: object) -> str:
    if isinstance(obj, InertObject):
        return f"an object of class {obj.global_name}, which l4p does not load (kept as an inert placeholder)"
    return f"a {type(obj).__name__}"


def find_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict of tensors inside a loaded checkpoint object.

    A Lightning checkpoint (epoch, global_step, state_dict, loops, callbacks, optimizer_states,
    hyper_parameters, ...) gives its `state_dict`, however many other entries it has; small
    wrappers {"module": ...} / {"model": ...} (at most 4 entries) are unwrapped. Keys are kept.
    """
    for _ in range(8):
        if not isinstance(obj, dict):
            break
        if isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
            continue
        inner = next((obj[k] for k in ("module", "model") if isinstance(obj.get(k), dict)), None)
        if inner is None or len(obj) > 4:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} does not hold a state dict of tensors (it holds {_kind(obj)})")
    bad = [f"{k!r} ({_kind(v)})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"{path} does not hold a state dict of tensors: {len(bad)} entries are not tensors "
            f"(first: {bad[:5]}); expected a state dict or a checkpoint with a 'state_dict' entry"
        )
    return dict(obj)


def unwrap_state_dict(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    """`find_state_dict`, then strip the encoder key prefixes of a VideoMAEv2 / L4P file."""
    obj = find_state_dict(obj, path)
    for prefix in _V2_PREFIXES:
        if any(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items() if k.startswith(prefix)}
    return dict(obj)


def _load_videomaev2(path: Path, preset: str | None) -> VideoEncoder:
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    state = unwrap_state_dict(_torch_load(path), path)
    for key in ("head.weight", "head.bias"):
        state.pop(key, None)
    has_norm = "norm.weight" in state
    if not has_norm:
        state.pop("fc_norm.weight", None), state.pop("fc_norm.bias", None)
    if preset is None:
        preset = _infer_preset(state, path)
    config = get_preset(preset)
    if not has_norm and config.final_norm:
        config = config.model_copy(update={"final_norm": False})
    pos = state.pop("pos_embed", None)
    if pos is not None:
        from .posembed import sinusoid_table

        if not torch.allclose(
            pos.float().reshape(1, -1, config.width),
            sinusoid_table(pos.numel() // config.width, config.width),
            atol=1e-5,
        ):
            raise WeightsError(
                f"{path}: stores a learned pos_embed; only the fixed sinusoidal table is supported"
            )
    encoder = VideoEncoder(config)
    strict_load(encoder, state, f"{path} (VideoMAEv2 state dict, preset {preset!r})")
    return encoder


def _infer_preset(state: dict[str, torch.Tensor], path: Path) -> str:
    weight = state.get("patch_embed.proj.weight")
    if weight is None:
        raise WeightsError(f"{path}: no patch_embed.proj.weight key; first keys: {list(state)[:5]}")
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    width, _, tub, p, _ = weight.shape
    for name, config in PRESETS.items():
        if (config.width, config.depth, config.patch_size, config.tubelet) == (width, depth, p, tub):
            return name
    raise WeightsError(
        f"{path}: no preset has width {width}, depth {depth}, patch {p}, tubelet {tub}; pass preset=..."
    )
