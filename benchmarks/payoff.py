"""Shared-encoder pay-off of the shipped model: all heads on one window vs each head on its own.

Prints, from one run on one machine, for one 16-frame window of a generated video at the given
input size through `L4P.forward` (the `l4p run` path: letterbox, shared matching, heads at input
resolution): the encoder alone, each head alone (its own encoder pass and, for heads that read it,
its own frame matching: what a single-task system pays), all heads at once (one encoder pass, one
matching), the ratio of all-at-once to the sum of the single-task runs, and the heads' cost as a
multiple of the encoder's. Times are the minimum over --repeats runs after one warm-up.

    python benchmarks/payoff.py [--registry registry.yaml] [--size 64x64] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from l4p_framework import L4P


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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(x) for x in args.size.split("x"))
    everything = L4P.from_registry(args.registry).eval()
    frames = everything.encoder.config.num_frames
    video = torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(0))
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        f"one window: {frames} frames at {h}x{w}, encoder {everything.encoder.config.name}, heads {', '.join(everything.heads)}"
    )

    with torch.no_grad():
        plain = [n for n in everything.heads if not everything.uses_matching(n)][:1]  # no matching
        window = everything.window_batch({"video": video}, plain)["video"]  # letterboxed into the window
        encoder = best_time(lambda: everything.encode(window), args.repeats)
        single = {}
        for name in everything.heads:
            alone = L4P.from_registry(args.registry, heads=[name]).eval()
            single[name] = best_time(lambda alone=alone: alone(video), args.repeats)
        together = best_time(lambda: everything(video), args.repeats)

    total = sum(single.values())
    print(f"\n{'run':28s} {'ms':>9s}")
    print(f"{'encoder alone':28s} {1000 * encoder:9.1f}")
    for name, seconds in single.items():
        print(
            f"{name + ' alone (own encoder)':28s} {1000 * seconds:9.1f}   head part ~{1000 * (seconds - encoder):.1f}"
        )
    print(f"{'sum of single-task runs':28s} {1000 * total:9.1f}")
    print(f"{'all heads at once':28s} {1000 * together:9.1f}")
    print(f"\nall at once / sum of single-task runs: {together / total:.2f}")
    print(
        f"all at once / encoder alone: {together / encoder:.1f}x (heads and matching = {(together - encoder) / encoder:.1f}x the encoder)"
    )


if __name__ == "__main__":
    main()
