"""VideoMAE / VideoMAEv2 ViT: tubelet embedding, fixed sinusoidal positions, pre-norm blocks.

Module names follow the VideoMAEv2 layout (patch_embed.proj, blocks.{i}.attn.qkv / q_bias / v_bias,
attn.proj, mlp.fc1 / fc2, norm1 / norm2, norm), so official state dicts load 1:1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..errors import InputError, check_tensor
from ..features import TokenFeatures
from ..specs import EncoderInfo, Layer
from .config import EncoderConfig
from .posembed import sinusoid_table


class PatchEmbed(nn.Module):
    """Tubelet embedding: Conv3d with kernel = stride = (tubelet, patch, patch)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        k = (config.tubelet, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(3, config.width, kernel_size=k, stride=k)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) normalised -> tokens (B, t*h*w, C) in (t, h, w) order."""
        return rearrange(self.proj(video), "b c t h w -> b (t h w) c")


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection and VideoMAE-style biases."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=config.qkv_bias == "qkv")
        if config.qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(config.width))
            self.v_bias = nn.Parameter(torch.zeros(config.width))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(config.width, config.width)

    def qkv_bias(self) -> torch.Tensor | None:
        if self.q_bias is None:
            return self.qkv.bias
        return torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, C) -> (B, N, C)."""
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias())
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Mlp(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.width, config.mlp_dim)
        self.act = nn.GELU()  # exact erf form
        self.fc2 = nn.Linear(config.mlp_dim, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)); no layer scale."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.width, eps=config.norm_eps)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.width, eps=config.norm_eps)
        self.mlp = Mlp(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VideoEncoder(nn.Module):
    """A VideoMAE-family video ViT that returns the token features of requested layers.

    Input contract: video (B, 3, T, H, W) float in [0, 1]; it normalises with `config.mean/std`
    itself. T must be a multiple of the tubelet and H, W multiples of the patch size. A frozen
    encoder (`freeze()`) never requires grad, stays in eval mode and computes under no_grad.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width, eps=config.norm_eps) if config.final_norm else None
        self._frozen = False
        self._fingerprint: str | None = None

    # -- freezing -------------------------------------------------------------------------
    def freeze(self) -> VideoEncoder:
        """Make the encoder frozen: no grads, eval mode forever, fingerprint fixed."""
        self._fingerprint = None
        self._fingerprint = self.fingerprint
        for p in self.parameters():
            p.requires_grad_(False)
        self._frozen = True
        return super().train(False)

    def unfreeze(self, last_blocks: int | None = None) -> VideoEncoder:
        """Make the encoder (or only its last `last_blocks` blocks and final norm) trainable."""
        self._frozen = False
        self._fingerprint = None
        trainable: Iterable[nn.Module] = [self]
        if last_blocks is not None:
            trainable = [*self.blocks[len(self.blocks) - last_blocks :], *([self.norm] if self.norm else [])]
            for p in self.parameters():
                p.requires_grad_(False)
        for module in trainable:
            for p in module.parameters():
                p.requires_grad_(True)
        return self

    @property
    def frozen(self) -> bool:
        return self._frozen

    def train(self, mode: bool = True) -> VideoEncoder:
        return super().train(mode and not self._frozen)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the encoder computes in (its weights' dtype: float32, or bfloat16 for inference)."""
        return self.patch_embed.proj.weight.dtype

    @property
    def fingerprint(self) -> str:
        """sha256 over the architecture and every weight (float32 bytes, sorted key order)."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.state_dict(), self.config)
        return self._fingerprint

    @property
    def info(self) -> EncoderInfo:
        c = self.config
        return EncoderInfo(
            preset=c.name,
            width=c.width,
            depth=c.depth,
            num_heads=c.num_heads,
            patch_size=c.patch_size,
            tubelet=c.tubelet,
            num_frames=c.num_frames,
            image_size=c.image_size,
            fingerprint=self.fingerprint if self._frozen else "",
        )

    # -- forward --------------------------------------------------------------------------
    def check_video(self, video: torch.Tensor) -> tuple[int, int, int]:
        """Validate the input contract; returns the token grid (t, h, w)."""
        check_tensor("video", video, "(B, 3, T, H, W) float in [0, 1]", ndim=5)
        b, c, t, h, w = video.shape
        p, tub = self.config.patch_size, self.config.tubelet
        if c != 3:
            raise InputError(f"video must have 3 colour channels at dim 1 of (B, 3, T, H, W), got {c}")
        if t < tub or t % tub:
            raise InputError(
                f"video has {t} frames; the encoder needs a positive multiple of its tubelet ({tub}). "
                "Use l4p_framework.windows to pad or split long videos."
            )
        if h % p or w % p:
            raise InputError(
                f"video size {h}x{w} does not divide into {p}x{p} patches; resize it "
                f"(l4p_framework.data.video.fit_to_size) to a multiple of {p}"
            )
        return t // tub, h // p, w // p

    def forward(self, video: torch.Tensor, layers: Iterable[Layer] = ("final",)) -> TokenFeatures:
        """Token features of `layers` for video (B, 3, T, H, W) float in [0, 1].

        Layer 0 = patch embedding + positions, k = output of block k (un-normalised),
        "final" = final LayerNorm of the last block. Stops after the deepest block requested.
        Returned tokens are float32 (B, N, C) whatever the compute dtype.
        """
        layers = list(dict.fromkeys(layers))
        grid = self.check_video(video)
        blocks_needed = self._blocks_needed(layers)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self._frozen):
            tokens = self._run(video, layers, blocks_needed)
        c = self.config
        return TokenFeatures(
            tokens=tokens,
            grid_size=grid,
            patch=(c.tubelet, c.patch_size, c.patch_size),
            input_size=tuple(video.shape[2:]),
            fingerprint=self.fingerprint if self._frozen else "",
        )

    def _blocks_needed(self, layers: list[Layer]) -> int:
        depth = self.config.depth
        needed = 0
        for layer in layers:
            if layer == "final":
                if self.norm is None:
                    raise InputError(
                        f"encoder {self.config.name!r} has no final LayerNorm; request block indices instead"
                    )
                needed = depth
            elif isinstance(layer, int) and 0 <= layer <= depth:
                needed = max(needed, layer)
            else:
                raise InputError(f"layer {layer!r} does not exist: use 0..{depth} or 'final'")
        return needed

    def _run(self, video: torch.Tensor, layers: list[Layer], blocks_needed: int) -> dict:
        dtype = self.dtype
        mean = video.new_tensor(self.config.mean, dtype=torch.float32).view(1, 3, 1, 1, 1)
        std = video.new_tensor(self.config.std, dtype=torch.float32).view(1, 3, 1, 1, 1)
        x = ((video.float() - mean) / std).to(dtype)
        x = self.patch_embed(x)
        x = x + sinusoid_table(x.shape[1], x.shape[2]).to(device=x.device, dtype=dtype)
        out: dict[Layer, torch.Tensor] = {}
        if 0 in layers:
            out[0] = x
        for index in range(1, blocks_needed + 1):
            x = self.blocks[index - 1](x)
            if index in layers:
                out[index] = x
        if "final" in layers:
            out["final"] = self.norm(x)
        return {layer: out[layer].float() for layer in layers}


def weights_fingerprint(state_dict: dict[str, torch.Tensor], config: EncoderConfig | None = None) -> str:
    """sha256 over (architecture JSON, then each key, dtype-normalised float32 bytes) in sorted key order."""
    digest = hashlib.sha256()
    if config is not None:
        arch = config.model_dump(exclude={"name"})
        digest.update(json.dumps(arch, sort_keys=True).encode())
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu", torch.float32).contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()
