"""Composition: one frozen encoder + any set of head plugins as a single nn.Module."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from einops import rearrange
from pydantic import BaseModel
from torch import nn

from .checkpoints import build_head, load_head
from .data.video import FrameTransform
from .encoder import VideoEncoder, load_encoder
from .errors import InputError, PluginError, RegistryError, check_tensor
from .features import TokenFeatures
from .matching import MatchConfig, prepare_window
from .plugins import PluginHost, get_plugin_host
from .profiles import autocast, autocast_dtype, check_profile, default_resize, profile_config
from .profiles import window_stride as profile_window_stride
from .registry import (
    RegistryFile,
    check_encoder_preset,
    check_window,
    load_registry,
    resolve_encoder_weights,
)
from .specs import HeadSpec, Layer
from .windows import Window, iter_windows, plan_windows


def time_dim(shape: str) -> int | None:
    """Index of the "T" axis in an OutputSpec shape string such as "(B, 1, T, H, W)"."""
    axes = [a.strip() for a in re.sub(r"[()]", "", shape).split(",")]
    return axes.index("T") if "T" in axes else None


class L4P(nn.Module):
    """A frozen encoder plus named heads; `model(video)` runs the encoder once per window.

    Heads never see each other's outputs. Results are namespaced: out["depth"]["depth"].
    `model.heads["normals"]` is a plain nn.Module; add_head / remove_head touch no other head.

    `profile` ("l4p" or "official", `l4p_framework.profiles`) is fixed at construction: under
    "official", heads added get their spec's official config overrides, `forward` / `stream` squash
    frames into the window unless told another `resize`, and on CUDA the encoder and heads run under
    float16 autocast. The window stride is the argument (None: half the window) in either profile;
    `from_registry` passes half the window under "official".
    """

    def __init__(
        self,
        encoder: VideoEncoder,
        window_stride: int | None = None,
        matching: MatchConfig | dict | None = None,
        profile: str = "l4p",
    ):
        super().__init__()
        if not encoder.frozen:
            encoder.freeze()
        self.encoder = encoder
        self.heads = nn.ModuleDict()
        self.specs: dict[str, HeadSpec] = {}
        self.configs: dict[str, BaseModel] = {}
        size = encoder.config.num_frames
        if window_stride is not None and not 1 <= window_stride <= size:
            raise InputError(
                f"window_stride must be in 1..{size} (the encoder's window), got {window_stride}"
            )
        self.window_stride = window_stride or max(1, size // 2)
        self.matching = matching if isinstance(matching, MatchConfig) else MatchConfig(**(matching or {}))
        """The shared frame matching (backend, preset) of the heads that read `batch["matches"]`."""
        self.profile = check_profile(profile)
        """"l4p" or "official" (`l4p_framework.profiles`)."""

    # -- heads ---------------------------------------------------------------------------------
    def add_head(
        self,
        spec: HeadSpec,
        config: BaseModel | dict | None = None,
        module: nn.Module | None = None,
        seed: int = 0,
    ) -> nn.Module:
        """Add a head (built with its own RNG stream from its name and `seed` unless `module`).

        The config gets the overrides `spec.profiles[self.profile]` declares (`profile_config`); a
        given `module` must have been built with them (only the stitching options differ today)."""
        if spec.name in self.heads:
            raise PluginError(f"head {spec.name!r} is already composed; remove_head it first")
        if not isinstance(config, BaseModel):
            from .config import validate

            config = validate(spec.config_model, config or {}, f"config of head {spec.name!r}", spec.name)
        config = profile_config(spec, config, self.profile)
        self.layers_of(spec, config)  # validates the layers against this encoder
        module = module if module is not None else build_head(spec, self.encoder.info, config, seed)
        self.heads[spec.name] = module
        self.specs[spec.name] = spec
        self.configs[spec.name] = config
        return module

    def remove_head(self, name: str) -> nn.Module:
        if name not in self.heads:
            raise PluginError(f"no head {name!r} composed; composed heads: {list(self.heads)}")
        self.specs.pop(name), self.configs.pop(name)
        return self.heads.pop(name)

    def layers_of(self, spec: HeadSpec, config: BaseModel) -> list[Layer]:
        layers = list(spec.layers(self.encoder.info, config))
        depth = self.encoder.config.depth
        bad = [x for x in layers if not (x == "final" or (isinstance(x, int) and 0 <= x <= depth))]
        if bad:
            raise InputError(
                f"head {spec.name!r} reads layers {bad} that encoder {self.encoder.config.name!r} "
                f"(depth {depth}) does not have; configure the head's layers for this encoder"
            )
        return layers

    def uses_matching(self, name: str) -> bool:
        """Whether head `name` reads the shared frame matching (its spec's `uses_matching`)."""
        spec = self.specs[name]
        return spec.uses_matching is not None and bool(spec.uses_matching(self.configs[name]))

    def window_batch(
        self, batch: dict[str, Any], heads: Iterable[str] | None = None, resize: str | None = None
    ) -> dict[str, Any]:
        """The batch heads get for one window (`prepare_window`): batch["video"] (B, 3, T, H, W) at
        any size becomes "frames", fitted into the encoder's window as "video" (by `resize`, default
        the profile's: letterbox, or squash under "official"), with "transform" and, when one of
        `heads` (default all) reads it, the shared matching "matches"."""
        matching = any(self.uses_matching(h) for h in (heads or self.heads))
        return prepare_window(
            batch,
            self.encoder.config.image_size,
            self.matching if matching else None,
            resize or default_resize(self.profile),
        )

    @property
    def layers(self) -> list[Layer]:
        """Union of every composed head's layers (order of first appearance)."""
        union: dict[Layer, None] = {}
        for name, spec in self.specs.items():
            union.update(dict.fromkeys(self.layers_of(spec, self.configs[name])))
        return list(union)

    def train(self, mode: bool = True) -> L4P:
        super().train(mode)
        self.encoder.train(False)
        return self

    # -- running ------------------------------------------------------------------------------
    def encode(self, video: torch.Tensor) -> TokenFeatures:
        """Encoder features of one window for the union of the heads' layers."""
        return self.encoder(video, self.layers)

    def run_heads(
        self, features: TokenFeatures, batch: dict[str, Any], heads: Iterable[str] | None = None
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Every (or the named) head on one window's features."""
        out = {}
        for name in heads or self.heads:
            spec, config = self.specs[name], self.configs[name]
            out[name] = self.heads[name](features.select(self.layers_of(spec, config)), batch)
        return out

    def forward(
        self,
        video: torch.Tensor,
        queries: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
        heads: Sequence[str] | None = None,
        on_window: Any = None,
        resize: str | None = None,
    ) -> dict[str, dict]:
        """Run the composed heads on video (B, 3, T, H, W) float in [0, 1] of any length and size.

        queries: (B, N, 3) as (t, x, y) in frames / pixels (tracking); intrinsics: (B, 3, 3) or
        (B, T, 3, 3) pixel-unit K. Windows of the encoder's length with `window_stride`; clips
        shorter than a window are ping-pong padded and the padding removed from the outputs. Frames
        of another size than the encoder's window are fitted into it by `resize` ("letterbox",
        "crop" or "squash"; None: the profile's, letterbox or squash under "official"); every output
        comes back in the input video's pixels (see `stream`).
        """
        check_video(video)
        b, _, t = video.shape[:3]
        intr = _per_frame_intrinsics(intrinsics, b, t)
        frames = (video[:, :, i] for i in range(t))
        return self.stream(
            frames,
            queries=queries,
            intrinsics=intr,
            heads=heads,
            on_window=on_window,
            num_frames=t,
            resize=resize,
        )

    def stream(
        self,
        frames: Iterable[torch.Tensor],
        queries: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
        heads: Sequence[str] | None = None,
        on_window: Any = None,
        num_frames: int | None = None,
        resize: str | None = None,
        on_frames: Callable[[str, dict[str, torch.Tensor], int], None] | None = None,
    ) -> dict[str, dict]:
        """Like forward, from an iterable of frames (B, 3, H, W) float in [0, 1]: bounded memory.

        Only one window of input frames is held at a time. intrinsics: (B, T, 3, 3) for every
        frame, or (B, 3, 3) shared. on_window(window) is called after each window (progress).
        num_frames: the video length if known; heads then also get batch["num_frames"] and
        batch["next_window"] (the next `Window`, None for the last) to check inputs and size state.

        Input and model pixels: frames of any size (H, W) are fitted into the encoder's window
        (H', W') by `resize`; queries and intrinsics are given, and every output is returned, in
        input pixels (dense maps at (H, W), flow in input pixels, tracks and K mapped back, as each
        output's `OutputSpec.kind` says). Heads get batch["video"] (the window at (H', W')),
        batch["frames"] (the window at (H, W)), batch["transform"] (the `FrameTransform` between
        them) and, when a running head `uses_matching`, batch["matches"]: the shared frame matching
        of batch["frames"] (`compute_matches`, once per window whatever the number of such heads).

        Streaming: with `on_frames`, the time-indexed outputs of every head whose stitcher can
        `release` frames (`Stitcher`) are handed over as soon as they are final, in order, as
        on_frames(head, outputs, first_frame) with outputs covering frames [first_frame, first_frame
        + L) (the outputs' own layout, e.g. (B, 1, L, H, W)), and are left out of the returned
        dict, which keeps the rest (e.g. poses, tracks). At most about two windows of such outputs
        are held in memory, whatever the video's length.
        """
        _check_head_list(heads)
        heads = list(heads or self.heads)
        missing = [h for h in heads if h not in self.heads]
        if missing:
            raise PluginError(f"heads {missing} are not composed; composed: {list(self.heads)}")
        size = self.encoder.config.num_frames
        states: dict[str, Any] = dict.fromkeys(heads)
        memory: dict[str, Any] = dict.fromkeys(heads)
        stitchers = {h: self.specs[h].stitcher(self.configs[h]) for h in heads}
        t = 0
        transform = None
        device = next(self.encoder.parameters()).device
        amp = autocast_dtype(self.profile, device)  # float16 for "official" on CUDA, else None
        plan = plan_windows(max(num_frames, size), size, self.window_stride) if num_frames else None
        streamed = {h for h in heads if on_frames is not None and hasattr(stitchers[h], "release")}
        delivered = dict.fromkeys(streamed, 0)

        def hand_over(name: str, outputs: dict[str, torch.Tensor]) -> None:
            dims = self._time_dims(name)
            outputs = {k: v for k, v in outputs.items() if dims.get(k) is not None}
            if outputs:
                on_frames(name, outputs, delivered[name])
                key, value = next(iter(outputs.items()))
                delivered[name] += value.shape[dims[key]]

        for window, frames_in, index in iter_windows(frames, size, self.window_stride):
            for name in streamed:
                hand_over(name, stitchers[name].release(states[name], window.start))
            t = max(t, int(index.max()) + 1)
            batch = self.window_batch({"video": frames_in, "window": window}, heads, resize)
            if transform is None:
                transform = batch["transform"]
                queries = None if queries is None else _queries_to_model(queries, transform)
                if intrinsics is not None:
                    intrinsics = transform.apply_to_intrinsics(check_intrinsics(intrinsics).float())
            with autocast(device, amp):
                features = self.encode(batch["video"])
            if plan is not None:
                if window.index >= len(plan) or plan[window.index].start != window.start:
                    raise InputError(f"the video has more frames than num_frames={num_frames} declared")
                batch["num_frames"] = num_frames
                batch["next_window"] = plan[window.index + 1] if window.index + 1 < len(plan) else None
            if queries is not None:
                batch["queries"] = queries
            if intrinsics is not None:
                k = (
                    intrinsics
                    if intrinsics.ndim == 3
                    else intrinsics.index_select(1, index.to(intrinsics.device))
                )
                batch["intrinsics"] = k[:, None].expand(-1, size, 3, 3) if k.ndim == 3 else k
            for name in heads:
                with autocast(device, amp):
                    outputs, memory[name] = self._run_window(name, features, batch, memory[name])
                if amp is not None:  # stitchers and writers get float32 as without autocast
                    outputs = {k: v.float() if v.is_floating_point() else v for k, v in outputs.items()}
                outputs = self._to_input_pixels(name, outputs, transform)
                states[name] = stitchers[name].merge(states[name], outputs, window.start, window.overlap)
            if on_window is not None:
                on_window(window)
            del batch, features, frames_in  # not alive while the next window is matched
        results = {}
        for name in heads:
            outputs = self._crop(name, stitchers[name].finalize(states[name]), t - delivered.get(name, 0))
            if name in streamed:
                hand_over(name, outputs)
                outputs = {k: v for k, v in outputs.items() if self._time_dims(name).get(k) is None}
            results[name] = outputs
        return results

    def _run_window(self, name: str, features: TokenFeatures, batch: dict, memory: Any):
        module = self.heads[name]
        feats = features.select(self.layers_of(self.specs[name], self.configs[name]))
        if hasattr(module, "forward_window"):
            return module.forward_window(feats, batch, memory)
        return module(feats, batch), None

    def _to_input_pixels(
        self, name: str, outputs: dict[str, torch.Tensor], transform: FrameTransform
    ) -> dict[str, torch.Tensor]:
        """One window's outputs of head `name` from model-window pixels to input pixels."""
        return outputs_to_input_pixels(self.specs[name], outputs, transform)

    def _time_dims(self, name: str) -> dict[str, int | None]:
        """Output name -> index of its time axis (None when it has none), from head `name`'s spec."""
        return {o.name: time_dim(o.shape) for o in self.specs[name].outputs}

    def _crop(self, name: str, outputs: dict[str, torch.Tensor], t: int) -> dict[str, torch.Tensor]:
        """`outputs` cut to their first `t` frames (drops ping-pong padding)."""
        dims = self._time_dims(name)
        return {
            k: v.narrow(dims[k], 0, t) if dims.get(k) is not None and v.shape[dims[k]] > t else v
            for k, v in outputs.items()
        }

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_registry(
        cls,
        path: str | os.PathLike | RegistryFile,
        heads: Sequence[str] | None = None,
        overrides: Sequence[str] = (),
        host: PluginHost | None = None,
        device: str | torch.device = "cpu",
        allow_untrained: bool = False,
        profile: str | None = None,
    ) -> L4P:
        """Build the encoder and the named (default: all registered) heads from registry.yaml.

        profile: "l4p" or "official" instead of the registry's `profile` (None: the registry's). Under
        "official" the window stride is half the encoder's window whatever `window.stride` says, and
        each head's params get its spec's official overrides before its weights are loaded."""
        _check_head_list(heads)
        reg = path if isinstance(path, RegistryFile) else load_registry(path, overrides)
        profile = check_profile(profile or reg.registry.profile)
        host = host or get_plugin_host()
        check_encoder_preset(reg, host)  # also when encoder.weights is set: a typo is not ignored
        encoder = encoder_from_registry(reg, device)
        check_window(reg, encoder.config.num_frames)
        stride = profile_window_stride(profile, reg.registry.window.stride, encoder.config.num_frames)
        model = cls(encoder, window_stride=stride, matching=reg.registry.matching, profile=profile)
        for name in heads if heads is not None else list(reg.registry.heads):
            spec = reg.check_plugin(name, host)
            config = profile_config(spec, reg.head_config(name, spec), profile)
            entry = reg.registry.heads[name]
            weights = reg.resolve(entry.weights)
            if weights is None:
                if not allow_untrained:
                    raise RegistryError(
                        f"{reg.source}: heads.{name}.weights is not set; train the head first"
                    )
                model.add_head(spec, config)
                continue
            module, _, _ = load_head(weights, spec, model.encoder.info, sha256=entry.sha256, config=config)
            model.add_head(spec, config, module=module.to(device))
        return model.to(device)


def encoder_from_registry(reg: RegistryFile, device: str | torch.device = "cpu") -> VideoEncoder:
    """The frozen encoder a registry names, with sha256 and fingerprint verified."""
    entry = reg.registry.encoder
    weights = resolve_encoder_weights(reg)  # a file next to the registry, or a hub id's cached files
    encoder = load_encoder(weights or entry.preset, seed=entry.seed, precision=entry.precision, device=device)
    if entry.fingerprint and encoder.fingerprint != entry.fingerprint:
        raise RegistryError(
            f"{reg.source}: encoder fingerprint {encoder.fingerprint[:16]}... differs from encoder.fingerprint "
            f"{entry.fingerprint[:16]}...; run `l4p registry lock` if the change is intended"
        )
    return encoder


def compose(
    heads: Sequence[str] | None = None,
    registry: str | os.PathLike | None = None,
    encoder: str | VideoEncoder = "tiny",
    host: PluginHost | None = None,
    seed: int = 0,
    configs: dict[str, dict] | None = None,
    profile: str | None = None,
) -> L4P:
    """Compose heads: from `registry` (trained weights) or fresh on `encoder` (preset or module).

    heads=None means every head in the registry, or every installed head. profile: see
    `L4P.from_registry` (None: the registry's, or "l4p" without a registry).
    """
    _check_head_list(heads)
    host = host or get_plugin_host()
    if registry is not None:
        return L4P.from_registry(registry, heads=heads, host=host, profile=profile)
    enc = load_encoder(encoder) if isinstance(encoder, str) else encoder
    model = L4P(enc, profile=check_profile(profile))
    for name in heads if heads is not None else sorted(host.heads()):
        model.add_head(host.get_head(name), (configs or {}).get(name), seed=seed)
    return model


def check_video(video: torch.Tensor) -> None:
    """(B, 3, T, H, W) float in [0, 1], finite; clear errors otherwise."""
    check_tensor("video", video, "(B, 3, T, H, W) float in [0, 1]", ndim=5)
    if not video.is_floating_point():
        raise InputError(
            f"video must be float in [0, 1], got dtype {video.dtype}; divide uint8 frames by 255"
        )
    if video.shape[1] != 3:
        raise InputError(
            f"video must be (B, 3, T, H, W) with 3 colour channels, got shape {tuple(video.shape)}"
        )
    if video.shape[2] < 1:
        raise InputError("video has no frames")
    lo, hi = video.min().item(), video.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(
            f"video values must be in [0, 1], found [{lo:.3g}, {hi:.3g}]; divide 0-255 frames by 255"
        )


def _queries_to_model(queries: torch.Tensor, transform: FrameTransform) -> torch.Tensor:
    """Queries (B, N, 3) (t, x, y) in input pixels -> the same in model-window pixels.

    Unchanged when the input is the model window's size (the head checks them); otherwise they
    must lie inside the input frame (0 <= x <= W, 0 <= y <= H).
    """
    if transform.in_size == transform.out_size:
        return queries
    h, w = transform.in_size
    if not isinstance(queries, torch.Tensor) or queries.ndim != 3 or queries.shape[-1] != 3:
        got = tuple(queries.shape) if isinstance(queries, torch.Tensor) else type(queries).__name__
        raise InputError(f"queries must be (B, N, 3) as (t, x, y) in frames and input pixels, got {got}")
    check_tensor("queries", queries, "(B, N, 3) as (t, x, y)")
    xy = queries[..., 1:]
    outside = (xy < 0).any(-1) | (xy[..., 0] > w) | (xy[..., 1] > h)
    if bool(outside.any()):
        b, n = (int(i) for i in outside.nonzero()[0])
        raise InputError(
            f"query {n} of video {b} at (x, y) = {tuple(xy[b, n].tolist())} is not inside the frame "
            f"(0 <= x <= {w}, 0 <= y <= {h} input pixels)"
        )
    return torch.cat((queries[..., :1], transform.map_points(xy)), dim=-1)


def _check_head_list(heads: Any) -> None:
    """InputError for heads="depth" (a string would be read as the heads "d", "e", "p", ...)."""
    if isinstance(heads, str):
        raise InputError(f"heads must be a list of head names, e.g. [{heads!r}], got {heads!r}")


def check_intrinsics(K: torch.Tensor) -> torch.Tensor:
    """K (..., 3, 3) pixel intrinsics: finite, positive focal lengths, last row (0, 0, 1); else InputError."""
    check_tensor("intrinsics", K, "(..., 3, 3) pixel K", finite=False)
    if K.shape[-2:] != (3, 3):
        raise InputError(f"intrinsics must be 3x3 matrices (..., 3, 3), got {tuple(K.shape)}")
    bad = ~torch.isfinite(K)
    if bool(bad.any()):
        *matrix, row, col = (int(i) for i in bad.nonzero()[0])
        names = {(0, 0): "fx", (1, 1): "fy", (0, 2): "cx", (1, 2): "cy", (0, 1): "skew"}
        entry = names.get((row, col), f"row {row}, column {col}")
        where = f"{entry} of intrinsics[{', '.join(map(str, matrix))}]" if matrix else entry
        raise InputError(
            f"intrinsics K must be finite (got {int(bad.sum())} NaN/Inf values, the first at {where}); "
            "pass fx, fy, cx, cy in pixels"
        )
    fx, fy = K[..., 0, 0], K[..., 1, 1]
    if bool((fx <= 0).any()) or bool((fy <= 0).any()):
        raise InputError(
            f"intrinsics need positive focal lengths fx, fy in pixels, got fx in [{float(fx.min()):.4g}, "
            f"{float(fx.max()):.4g}], fy in [{float(fy.min()):.4g}, {float(fy.max()):.4g}]"
        )
    last = K[..., 2, :].double()
    if not torch.allclose(last, last.new_tensor([0.0, 0.0, 1.0]).expand_as(last), atol=1e-6):
        raise InputError(
            "intrinsics must have the last row (0, 0, 1) (pixel K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]])"
        )
    return K


def _per_frame_intrinsics(intrinsics: torch.Tensor | None, b: int, t: int) -> torch.Tensor | None:
    """intrinsics (B, 3, 3) or (B, T, 3, 3) -> (B, T, 3, 3), with clear errors."""
    if intrinsics is None:
        return None
    check_tensor("intrinsics", intrinsics, "(B, 3, 3) or (B, T, 3, 3)", finite=False)
    if intrinsics.shape[-2:] != (3, 3) or intrinsics.ndim not in (3, 4) or intrinsics.shape[0] != b:
        raise InputError(
            f"intrinsics must be (B, 3, 3) or (B, T, 3, 3) with B={b}, got {tuple(intrinsics.shape)}"
        )
    check_intrinsics(intrinsics)  # finite, positive focal lengths, last row (0, 0, 1)
    if intrinsics.ndim == 3:
        return intrinsics[:, None].expand(b, t, 3, 3)
    if intrinsics.shape[1] != t:
        raise InputError(f"intrinsics has {intrinsics.shape[1]} frames, the video {t}")
    return intrinsics


def outputs_to_input_pixels(
    spec: HeadSpec, outputs: dict[str, torch.Tensor], transform: FrameTransform
) -> dict[str, torch.Tensor]:
    """One window's outputs of the head of `spec` from model-window pixels to input pixels, by each
    output's kind: dense maps and flow still at the model window's size are resampled to the input
    grid (`FrameTransform.invert_map` / `invert_flow`), points and queries moved back, intrinsics
    inverted; anything else (and everything when the transform is the identity) is kept."""
    if transform.in_size == transform.out_size:
        return outputs
    kinds = {o.name: o.resolved_kind for o in spec.outputs}
    model_size = tuple(transform.out_size)
    mapped = {}
    for key, v in outputs.items():
        kind = kinds.get(key, "other")
        if kind == "map" and tuple(v.shape[-2:]) == model_size:
            v = transform.invert_map(v)
        elif kind == "flow" and tuple(v.shape[-2:]) == model_size:
            v = rearrange(
                transform.invert_flow(rearrange(v, "b c t h w -> b t c h w")), "b t c h w -> b c t h w"
            )
        elif kind == "points":
            v = transform.map_points_back(v)
        elif kind == "queries":
            v = torch.cat((v[..., :1], transform.map_points_back(v[..., 1:])), dim=-1)
        elif kind == "intrinsics":
            v = transform.invert_intrinsics(v)
        mapped[key] = v
    return mapped


__all__ = ["L4P", "Window", "compose", "encoder_from_registry", "time_dim"]
