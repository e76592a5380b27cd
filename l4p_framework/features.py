"""TokenFeatures: the registry through which the frozen encoder exposes its layers to heads."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange

from .errors import IncompatibleHeadError
from .specs import Layer


@dataclass
class TokenFeatures:
    """Tokens of the requested encoder layers for one window.

    tokens[layer]: (B, N, C) with N = t*h*w in (t, h, w) order (time slowest, width fastest).
    grid_size: (t, h, w) token grid; patch: (tubelet, patch, patch) in frames / pixels;
    input_size: (T, H, W) of the window the tokens came from; fingerprint: the encoder's.
    """

    tokens: dict[Layer, torch.Tensor]
    grid_size: tuple[int, int, int]
    patch: tuple[int, int, int]
    input_size: tuple[int, int, int]
    fingerprint: str = ""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, layer: Layer) -> torch.Tensor:
        """Tokens (B, N, C) of `layer`; a clear error if the layer was not requested."""
        try:
            return self.tokens[layer]
        except KeyError:
            have = sorted(self.tokens, key=str)
            raise IncompatibleHeadError(
                f"layer {layer!r} was not computed (available: {have}); declare it in the head's layers()"
            ) from None

    def grid(self, layer: Layer) -> torch.Tensor:
        """Tokens of `layer` as a grid (B, C, t, h, w)."""
        t, h, w = self.grid_size
        return rearrange(self[layer], "b (t h w) c -> b c t h w", t=t, h=h, w=w)

    @property
    def layers(self) -> list[Layer]:
        return list(self.tokens)

    def select(self, layers) -> TokenFeatures:
        """A view holding only `layers` (what one head declared)."""
        return TokenFeatures(
            {layer: self[layer] for layer in layers},
            self.grid_size,
            self.patch,
            self.input_size,
            self.fingerprint,
            self.extras,
        )

    def to(self, *args, **kwargs) -> TokenFeatures:
        return TokenFeatures(
            {k: v.to(*args, **kwargs) for k, v in self.tokens.items()},
            self.grid_size,
            self.patch,
            self.input_size,
            self.fingerprint,
            self.extras,
        )

    @property
    def batch_size(self) -> int:
        return next(iter(self.tokens.values())).shape[0]
