"""Head training from the feature cache vs the live encoder: steps/s, speedup and its ideal.

Usage: python benchmarks/train_head.py [--frames 8] [--size 112] [--batch-size 1] [--steps 6]
                                       [--clips 4] [--reps 3] [--threads N] [--device cpu] [--full]

Trains the depth head (small DPT decoder, l4p-head-depth) on a randomly initialised
videomae-base encoder (ViT-B: 12 blocks, 768 wide, patch 16, tubelet 2) twice with the real
trainer (`l4p_framework.training.train`): once with the live frozen encoder (cache=off) and once
from a feature cache (cache=require). The clips are rendered once into memory so that both runs
pay (almost) nothing for data and the comparison isolates the encoder.

The ideal speedup is (encoder forward + head forward/backward) / (head forward/backward), from
timing one encoder forward and one head forward+backward on the same batch (--reps after a warm-up);
the achieved one is the ratio of the two runs' step times (first step excluded). Repeated timings
are summarised by their minimum (--stat min, the least disturbed by other processes on a shared
machine) or their median.
Optimiser steps, clipping and data movement are in both runs and not in the ideal, so they cost
a few percent of it.

--frames / --size set the encoder window (default 8 x 112 x 112 so that it runs in a few minutes on
two CPU cores; --full uses videomae-base's own 16 x 224 x 224 window, better on a GPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def times_of(fn, reps: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--full", action="store_true", help="16 x 224 x 224 (videomae-base's window)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8, help="training steps per run (first one excluded)")
    parser.add_argument("--clips", type=int, default=4, help="distinct clips rendered and cached")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions of the ideal's parts")
    parser.add_argument(
        "--stat",
        choices=["min", "median"],
        default="min",
        help="summary of repeated timings (min: least disturbed by other processes on a shared machine)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.full:
        args.frames, args.size = 16, 224
    if args.threads:
        torch.set_num_threads(args.threads)

    from l4p_framework import DatasetSpec, EncoderSpec, hookimpl
    from l4p_framework.data.synth4d import Synth4DConfig, generate_clip
    from l4p_framework.data.synth4d.dataset import PROVIDES
    from l4p_framework.encoder import PRESETS
    from l4p_framework.plugins import set_plugin_host
    from l4p_framework.testing import fresh_host
    from l4p_framework.training import build_cache, load_train_config, train

    preset = "videomae-base-bench"
    encoder_config = PRESETS["videomae-base"].model_copy(
        update={"name": preset, "num_frames": args.frames, "image_size": (args.size, args.size)}
    )
    options = {"num_frames": args.frames, "height": args.size, "width": args.size, "num_queries": 8}
    start = time.perf_counter()
    clips = [generate_clip(seed, Synth4DConfig(**options)) for seed in range(args.clips)]
    render_s = time.perf_counter() - start

    class InMemory(torch.utils.data.Dataset):
        def __init__(self, split: str, **opts):
            self.items = clips

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> dict:
            return self.items[i]

    class BenchPlugin:
        @hookimpl
        def l4p_encoders(self):
            return [EncoderSpec(name=preset, config=encoder_config, description="benchmark window")]

        @hookimpl
        def l4p_datasets(self):
            return [
                DatasetSpec(name="synth4d-memory", build=InMemory, provides=PROVIDES, splits=("train", "val"))
            ]

    host = fresh_host(BenchPlugin(), entrypoints=True)
    set_plugin_host(host)
    try:
        spec = host.get_head("depth")
    except Exception as exc:
        print(
            f"this benchmark needs the depth head plugin (pip install -e heads/depth): {exc}", file=sys.stderr
        )
        return 2

    from l4p_framework.compose import L4P, encoder_from_registry
    from l4p_framework.registry import load_registry

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "registry.yaml").write_text(f"encoder:\n  preset: {preset}\n")
        reg = load_registry(root / "registry.yaml")
        device = torch.device(
            "cuda"
            if args.device == "auto" and torch.cuda.is_available()
            else ("cpu" if args.device == "auto" else args.device)
        )
        encoder = encoder_from_registry(reg, device)
        model = L4P(encoder)
        head = model.add_head(spec, {"preset": "small"}).to(device)
        layers = model.layers
        from l4p_framework.data.collate import collate

        batch = {
            k: v.to(device) if torch.is_tensor(v) else v for k, v in collate(clips[: args.batch_size]).items()
        }
        config = model.configs["depth"]

        def encoder_forward():
            with torch.no_grad():
                return encoder(batch["video"], layers)

        features = encoder_forward()

        def head_step():
            head.zero_grad(set_to_none=True)
            loss = spec.loss(head(features, batch), batch, config)["loss"]
            loss.backward()

        stat = min if args.stat == "min" else statistics.median
        encoder_s = stat(times_of(encoder_forward, args.reps))
        head_s = stat(times_of(head_step, args.reps))
        ideal = (encoder_s + head_s) / head_s
        print(
            f"videomae-base (random init) window {args.frames}x{args.size}x{args.size}, tokens "
            f"{features.grid_size}, layers {layers}; depth head preset small; batch {args.batch_size}; "
            f"{device}, torch threads {torch.get_num_threads()}"
        )
        print(f"rendered {args.clips} clips in {render_s:.1f} s (kept in memory for both runs)")
        print(
            f"encoder forward {encoder_s * 1e3:.0f} ms, head forward+backward {head_s * 1e3:.0f} ms "
            f"({args.stat} of {args.reps})"
        )

        start = time.perf_counter()
        build_cache(
            encoder,
            InMemory("train"),
            layers,
            root / "cache",
            "train",
            args.clips,
            data="synth4d-memory",
            options={},
            batch_size=args.batch_size,
        )
        print(f"cache built: {args.clips} clips in {time.perf_counter() - start:.1f} s")

        common = [
            f"steps={args.steps}",
            f"batch_size={args.batch_size}",
            "data.name=synth4d-memory",
            f"data.train_clips={args.clips}",
            "eval_batches=0",
            "checkpoint_every=0",
            "warmup_steps=1",
            "progress=false",
            "update_registry=false",
            f"device={device}",
            "params.depth.preset=small",
        ]
        rates = {}
        for mode in ("off", "require"):
            config = load_train_config(
                None,
                [*common, f"cache={mode}", f"weights={root / mode}.safetensors"],
                plugin="depth",
                registry=str(root / "registry.yaml"),
                host=host,
            )
            result = train(config, host=host)
            assert (result.used_cache is not None) == (mode == "require")
            rates[mode] = 1 / stat(result.step_times)
        speedup = rates["require"] / rates["off"]
        print(
            f"live encoder: {rates['off']:.3f} steps/s; from cache: {rates['require']:.3f} steps/s "
            f"({args.stat} step time of {args.steps - 1})"
        )
        print(f"speedup {speedup:.2f} (ideal {ideal:.2f}, {100 * speedup / ideal:.0f}% of ideal)")
    set_plugin_host(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
