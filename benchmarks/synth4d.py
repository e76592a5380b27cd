"""Throughput of the synth4d generator: clips/s with all labels, float32 on CPU.

Usage: python benchmarks/synth4d.py [--threads N] [--clips N] [--rounds R] [--frames T] [--sizes 128 224]

Each size is timed in R rounds of N clips (consecutive seeds, after one warm-up clip); the rate
of every round is printed with the best and median. On a shared machine the best round is the
closest to the uncontended speed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from l4p_framework.data.synth4d import Synth4DConfig, generate_clip


def clips_per_second(config: Synth4DConfig, clips: int, first_seed: int = 0) -> float:
    """Clips generated per second over `clips` consecutive seeds starting at `first_seed`."""
    start = time.perf_counter()
    for seed in range(first_seed, first_seed + clips):
        generate_clip(seed, config)
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clips", type=int, default=10, help="clips per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per size")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--queries", type=int, default=64, help="query points per clip")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224], help="square image sizes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, float32 CPU, torch threads {torch.get_num_threads()}")
    for size in args.sizes:
        cfg = Synth4DConfig(num_frames=args.frames, height=size, width=size, num_queries=args.queries)
        generate_clip(10_000, cfg)  # warm-up
        rates = [clips_per_second(cfg, args.clips, 1 + r * args.clips) for r in range(args.rounds)]
        best, median = max(rates), statistics.median(rates)
        listed = ", ".join(f"{r:.2f}" for r in rates)
        print(
            f"synth4d {args.frames}x{size}x{size}, {args.queries} queries: best {best:.2f} clips/s "
            f"({1000 / best:.0f} ms/clip), median {median:.2f} clips/s; rounds [{listed}]"
        )


if __name__ == "__main__":
    main()
