"""Shared-encoder pay-off of the shipped model: all heads on one window vs each head on its own.

Prints, from one run on one machine, for one 16-frame window of a generated video at the given
input size through `L4P.forward` (the `l4p run` path: letterbox, shared matching, heads at input
resolution): the encoder alone, each head alone (its own encoder pass and, for heads that read it,
its own frame matching: what a single-task system pays), all heads at once (one encoder pass, one
matching), the ratio of all-at-once to the sum of the single-task runs, and the heads' cost as a
multiple of the encoder's. Times are the minimum over --repeats runs after one warm-up.

    python benchmarks/payoff.py [--registry registry.yaml] [--size 64x64] [--repeats 3] [--threads N]
    python benchmarks/payoff.py --full-size [--bf16] [--repeats 1]

--full-size: instead of the shipped model, the full-size L4P architecture with random weights: the
`l4p-vitg14` encoder and the five L4P tasks (depth, flow, tracking, motion, pose) with their
official head presets under the "official" profile, on one 16 x 224 x 224 window (issue 22's
pay-off check: all at once <= 0.4x the sum of the single-task runs). --bf16: under bfloat16
autocast (fast only on CPUs with bf16 units, see `lscpu`). --encoder PRESET swaps the encoder (a
small one keeps the check cheap in tests).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time

import torch

from l4p_framework import L4P
from l4p_framework.encoder import PRESETS, VideoEncoder
from l4p_framework.plugins import get_plugin_host

L4P_TASKS = ("depth", "flow", "tracking", "motion", "pose")
"""The five tasks of the L4P paper, each a head with an "official" preset."""


def full_size_model(encoder: str = "l4p-vitg14") -> L4P:
    """`encoder` (random weights) with the L4P tasks' heads at their official presets, "official"
    profile."""
    model = L4P(VideoEncoder(PRESETS[encoder]), profile="official")
    host = get_plugin_host()
    for name in L4P_TASKS:
        model.add_head(host.get_head(name), {"preset": "official"})
    return model.eval()


def sub_model(model: L4P, heads: list[str]) -> L4P:
    """A model of `model`'s encoder and the named heads (the same modules: no copies)."""
    part = L4P(
        model.encoder, window_stride=model.window_stride, matching=model.matching, profile=model.profile
    )
    for name in heads:
        part.add_head(model.specs[name], model.configs[name], module=model.heads[name])
    return part.eval()


def flop_counts(model: L4P, video: torch.Tensor) -> dict[str, float]:
    """FLOPs of one all-heads run of `video`, per part: "encoder" and each head (torch operations
    only: OpenCV matching and the pose head's NumPy/OpenCV geometry count as 0)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, depth=3) as counter:
        model(video)
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}

    def part(prefix: str) -> float:  # the module's count, or its outermost counted submodules'
        # (heads called through a method, e.g. forward_window, are not counted under their own name)
        if prefix in counts:
            return counts[prefix]
        inside = [k for k in counts if k.startswith(prefix + ".")]

        def outermost(key: str) -> bool:  # no counted ancestor below the prefix
            pieces, depth = key.split("."), prefix.count(".") + 1
            return not any(".".join(pieces[:i]) in counts for i in range(depth + 1, len(pieces)))

        return sum(counts[k] for k in inside if outermost(k))

    return {"encoder": part("L4P.encoder"), **{name: part(f"L4P.heads.{name}") for name in model.heads}}


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", default="registry.yaml")
    parser.add_argument("--size", default="64x64", help="input frames HxW")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--full-size", action="store_true", help="l4p-vitg14 + official heads, random")
    parser.add_argument("--encoder", default="l4p-vitg14", help="encoder preset of --full-size")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.full_size:
        args.size = "224x224"
        everything = full_size_model(args.encoder)
    else:
        everything = L4P.from_registry(args.registry).eval()
    h, w = (int(x) for x in args.size.split("x"))
    frames = everything.encoder.config.num_frames
    video = torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(0))
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        f"one window: {frames} frames at {h}x{w}, encoder {everything.encoder.config.name}, heads {', '.join(everything.heads)}"
    )

    precision = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    print(f"precision: {'bfloat16 autocast' if args.bf16 else 'float32'}")
    with torch.no_grad(), precision:
        plain = [n for n in everything.heads if not everything.uses_matching(n)][:1]  # no matching
        window = everything.window_batch({"video": video}, plain)["video"]  # letterboxed into the window
        encoder = best_time(lambda: everything.encode(window), args.repeats)
        single = {}
        for name in everything.heads:
            alone = sub_model(everything, [name])
            single[name] = best_time(lambda alone=alone: alone(video), args.repeats)
        together = best_time(lambda: everything(video), args.repeats)
        flops = flop_counts(everything, video)

    total = sum(single.values())
    rate = flops["encoder"] / encoder  # FLOP/s the encoder reaches (matrix products)
    print(f"\nencoder rate: {rate / 1e9:.1f} GFLOP/s; 'predicted' = a part's FLOPs at that rate")
    print(f"\n{'run':28s} {'ms':>9s} {'GFLOP':>9s} {'predicted ms':>13s}")
    print(f"{'encoder alone':28s} {1000 * encoder:9.1f} {flops['encoder'] / 1e9:9.2f} {1000 * encoder:13.1f}")
    for name, seconds in single.items():
        part = 1000 * (seconds - encoder)
        print(
            f"{name + ' alone (own encoder)':28s} {1000 * seconds:9.1f} {flops[name] / 1e9:9.2f} "
            f"{1000 * flops[name] / rate:13.1f}   head part ~{part:.1f} ms"
        )
    head_flops = sum(v for k, v in flops.items() if k != "encoder")
    print(f"heads' FLOPs / encoder's FLOPs: {head_flops / flops['encoder']:.1f}")
    print(f"{'sum of single-task runs':28s} {1000 * total:9.1f}")
    print(f"{'all heads at once':28s} {1000 * together:9.1f}")
    print(f"\nall at once / sum of single-task runs: {together / total:.2f}")
    print(
        f"all at once / encoder alone: {together / encoder:.1f}x (heads and matching = {(together - encoder) / encoder:.1f}x the encoder)"
    )


if __name__ == "__main__":
    main()
