"""Small in-memory head plugins used by the core's tests (real HeadSpecs, tiny decoders)."""

from __future__ import annotations

from einops import rearrange
from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict
from torch import nn

from l4p_framework import OutputSpec, OverwriteStitcher, compose, hookimpl, save_encoder, save_head
from l4p_framework.io import sha256_file
from l4p_framework.specs import HeadSpec
from l4p_framework.testing import fresh_host, tiny_encoder


class ToyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: int = 2
    hidden: int = 16


class ToyDecoder(nn.Module):
    """Per-token MLP -> one value per pixel (nearest upsampling of the token grid)."""

    def __init__(self, width: int, hidden: int, layer, patch: int, tubelet: int):
        super().__init__()
        self.layer, self.patch, self.tubelet = layer, patch, tubelet
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, tubelet * patch * patch)
        )

    def forward(self, features, batch):
        t, h, w = features.grid_size
        x = self.mlp(features[self.layer])
        x = rearrange(
            x,
            "b (t h w) (pt ph pw) -> b 1 (t pt) (h ph) (w pw)",
            t=t,
            h=h,
            w=w,
            pt=self.tubelet,
            ph=self.patch,
            pw=self.patch,
        )
        return {"value": x}


def toy_spec(name: str, layer: int = 2, target: str = "depth") -> HeadSpec:
    def build(info, config):
        return ToyDecoder(info.width, config.hidden, config.layer, info.patch_size, info.tubelet)

    def loss(outputs, batch, config):
        diff = (outputs["value"] - batch[target][:, :1]).abs().mean()
        return {"loss": diff, "l1": diff.detach()}

    def metrics(outputs, batch):
        return {"l1": float((outputs["value"] - batch[target][:, :1]).abs().mean())}

    return HeadSpec(
        name=name,
        version="0.0.1",
        config_model=type(
            f"{name.title()}Config", (ToyConfig,), {"__annotations__": {"layer": int}, "layer": layer}
        ),
        layers=lambda info, config: [config.layer],
        build=build,
        loss=loss,
        metrics=metrics,
        targets=(target,),
        outputs=(OutputSpec("value", "(B, 1, T, H, W)", "toy per-pixel value"),),
        stitcher=lambda config: OverwriteStitcher({"value": 2}),
    )


class ToyPlugin:
    """A plugin object providing the given head specs."""

    def __init__(self, *specs: HeadSpec):
        self.specs = specs

    @hookimpl
    def l4p_heads(self):
        return list(self.specs)


def toy_registry(tmp_path):
    """(registry.yaml path, host, model): a saved tiny encoder and one trained-looking toy head 'alpha'
    in tmp_path (the registry the registry and reliability tests edit)."""
    host = fresh_host(ToyPlugin(toy_spec("alpha")))
    model = compose(["alpha"], host=host, encoder=tiny_encoder())  # float32: saved as is
    enc_path = save_encoder(model.encoder, tmp_path / "weights" / "encoder.safetensors")
    spec = host.get_head("alpha")
    sha = save_head(
        tmp_path / "weights" / "alpha.safetensors",
        model.heads["alpha"],
        spec,
        model.configs["alpha"],
        model.encoder.info,
    )
    registry = {
        "schema_version": 1,
        "encoder": {
            "preset": "tiny",
            "weights": "weights/encoder.safetensors",
            "sha256": sha256_file(enc_path),
            "fingerprint": model.encoder.fingerprint,
            "precision": "fp32",  # outputs are compared exactly (bf16 is the default where fast)
        },
        "heads": {
            "alpha": {
                "plugin": "<in-memory>",
                "params": {"hidden": 16},
                "weights": "weights/alpha.safetensors",
                "sha256": sha,
                "encoder_fingerprint": model.encoder.fingerprint,
            }
        },
    }
    path = tmp_path / "registry.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(registry)))
    return path, host, model
