"""What frame matching (Lucas-Kanade, `matching: lucas-kanade`) costs the flow and tracking heads.

Usage: python benchmarks/matching.py [--registry registry.yaml] [--queries 64] [--reps 5] [--threads N]

On one window of the registry's encoder (a synth4d clip at its input size), times each head's
forward on precomputed token features twice: as the registry configures it (frame matching on in
the shipped model) and with `matching: none` (the token-only official read-out, same weights
minus the refiner), and prints both times and their ratio; also the Lucas-Kanade flow alone and
the encoder forward for scale. Minimum of --reps timings after a warm-up.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def best_time(fn, reps: int) -> float:
    """Minimum wall time of fn() over `reps` runs, after one warm-up (seconds)."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default="registry.yaml")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from l4p_framework import L4P
    from l4p_framework.blocks.matching import forward_backward_flow
    from l4p_framework.data.synth4d import Synth4D

    shipped = L4P.from_registry(args.registry, heads=["flow", "tracking"]).eval()
    frames, h, w = shipped.encoder.config.num_frames, *shipped.encoder.config.image_size
    sample = Synth4D("test", num_frames=frames, height=h, width=w, num_queries=args.queries)[0]
    video, queries = sample["video"][None], sample["queries"][None]
    batch = {"video": video, "queries": queries}
    print(
        f"registry {args.registry}: encoder {shipped.encoder.config.name}, window {frames}x{h}x{w}, "
        f"{args.queries} queries, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    with torch.no_grad():
        features = shipped.encode(video)
        encoder_s = best_time(lambda: shipped.encode(video), args.reps)
        print(f"encoder forward: {encoder_s * 1e3:8.1f} ms")
        lk_s = best_time(lambda: forward_backward_flow(video), args.reps)
        print(f"Lucas-Kanade flow, both directions: {lk_s * 1e3:8.1f} ms")
        for name in ("flow", "tracking"):
            config = shipped.configs[name]
            if config.matching == "none":
                print(f"{name}: matching is off in {args.registry}; nothing to compare")
                continue
            plain = L4P(shipped.encoder)
            plain.add_head(shipped.specs[name], config.model_copy(update={"matching": "none"}))
            plain.eval()
            on, off = (
                best_time(lambda m=model, n=name: m.run_heads(features, batch, [n]), args.reps)
                for model in (shipped, plain)
            )
            print(
                f"{name:9s} head: matching {on * 1e3:8.1f} ms, none {off * 1e3:8.1f} ms, ratio {on / off:5.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
