"""Encoder configurations (pydantic) and the named presets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderConfig(BaseModel):
    """Architecture and input contract of a VideoMAE-family ViT.

    qkv_bias: "qv" = VideoMAE style (fused qkv weight, separate q_bias and v_bias, key bias 0),
    "qkv" = plain bias on the fused projection, "none" = no bias.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    tubelet: int = 2
    num_frames: int = 16
    image_size: tuple[int, int] = (224, 224)
    qkv_bias: Literal["qv", "qkv", "none"] = "qv"
    norm_eps: float = 1e-6
    final_norm: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @model_validator(mode="after")
    def _check(self) -> EncoderConfig:
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        h, w = self.image_size
        if h % self.patch_size or w % self.patch_size or self.num_frames % self.tubelet:
            raise ValueError(
                f"window {self.num_frames}x{h}x{w} does not divide into tubelets "
                f"{self.tubelet}x{self.patch_size}x{self.patch_size}"
            )
        return self

    @property
    def token_grid(self) -> tuple[int, int, int]:
        h, w = self.image_size
        return self.num_frames // self.tubelet, h // self.patch_size, w // self.patch_size


PRESETS: dict[str, EncoderConfig] = {
    c.name: c
    for c in [
        # Test encoder: 4 blocks, 64 wide, 8 frames at 64x64 -> 4x8x8 tokens.
        EncoderConfig(
            name="tiny",
            width=64,
            depth=4,
            num_heads=2,
            mlp_dim=128,
            patch_size=8,
            num_frames=8,
            image_size=(64, 64),
        ),
        # The shipped CPU default model: 16 frames at 64x64, patch 8 -> 8x8x8 = 512 tokens, 2.7M params.
        EncoderConfig(
            name="l4p-cpu-small",
            width=192,
            depth=6,
            num_heads=3,
            mlp_dim=768,
            patch_size=8,
            image_size=(64, 64),
        ),
        # The same token budget over a 128x128 window: patch 16 -> 8x8x8 = 512 tokens (issue 17).
        EncoderConfig(
            name="l4p-cpu-128",
            width=192,
            depth=6,
            num_heads=3,
            mlp_dim=768,
            patch_size=16,
            image_size=(128, 128),
        ),
        EncoderConfig(name="videomae-small", width=384, depth=12, num_heads=6, mlp_dim=1536, patch_size=16),
        EncoderConfig(name="videomae-base", width=768, depth=12, num_heads=12, mlp_dim=3072, patch_size=16),
        EncoderConfig(name="videomae-large", width=1024, depth=24, num_heads=16, mlp_dim=4096, patch_size=16),
        # The official L4P encoder (VideoMAEv2 ViT-g/14), l4p-model.md §1.1.
        EncoderConfig(name="l4p-vitg14", width=1408, depth=40, num_heads=16, mlp_dim=6144, patch_size=14),
    ]
}
