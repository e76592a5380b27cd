"""Accuracy and speed of the frame-matching backends of `l4p_framework.matching` on synth4d test clips.

Usage: python benchmarks/matching.py [--clips 8] [--frames 12] [--sizes 240x320,480x640]
       [--threads 2] [--reps 1]

For each size, renders --clips held-out synth4d test clips and, for DIS (ultrafast / fast / medium,
each with and without variational refinement) and Lucas-Kanade (default options), measures:
- the end-point error of the backward flow against the ground truth over `flow_valid` (EPE, EPE < 1 px
  and KITTI Fl from `l4p_framework.metrics.flow_metrics`, averaged over clips);
- backward flow alone, ms per frame pair (clip time / (T - 1));
- `compute_matches` (both directions, occlusion maps, confidence), ms per frame pair.
Times are the minimum over --reps runs per clip after one warm-up, summed over clips. Zero flow's
EPE is printed for reference. torch and OpenCV both get --threads threads.
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import torch

from l4p_framework.data.synth4d.dataset import Synth4D
from l4p_framework.matching import MatchConfig, backward_flow, compute_matches
from l4p_framework.metrics import flow_metrics

CONFIGS: list[tuple[str, MatchConfig]] = [
    *(
        (
            f"dis {preset}, refinement {'on' if refine else 'off'}",
            MatchConfig(preset=preset, variational_refinement=refine),
        )
        for preset in ("ultrafast", "fast", "medium")
        for refine in (True, False)
    ),
    ("lucas-kanade (levels 2, window 7, 3 iterations)", MatchConfig(backend="lucas-kanade")),
]


def min_time(fn, reps: int):
    """(minimum wall time of fn() over `reps` runs in seconds, the last result)."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def run_size(height: int, width: int, args: argparse.Namespace) -> None:
    """Render the clips at height x width and print one markdown table row per configuration."""
    dataset = Synth4D("test", num_frames=args.frames, height=height, width=width, num_queries=0)
    clips = [dataset[i] for i in range(args.clips)]
    pairs = args.clips * (args.frames - 1)
    zero = [flow_metrics(torch.zeros_like(c["flow"]), c["flow"], c["flow_valid"])["epe"] for c in clips]
    print(
        f"\n### {height}x{width}, {args.clips} clips x {args.frames} frames ({pairs} frame pairs), "
        f"zero-flow EPE {sum(zero) / len(zero):.3f} px\n"
    )
    print("| configuration | EPE (px) | EPE < 1 px | Fl | backward ms / pair | compute_matches ms / pair |")
    print("|---|---|---|---|---|---|")
    for name, config in CONFIGS:
        compute_matches(clips[0]["video"][None, :, :2], config)  # warm-up (thread pools, allocations)
        metrics = {"epe": 0.0, "epe<1": 0.0, "fl": 0.0}
        backward_s = full_s = 0.0
        for clip in clips:
            video = clip["video"][None]
            backward_s += min_time(lambda v=video, c=config: backward_flow(v, c), args.reps)[0]
            seconds, matches = min_time(lambda v=video, c=config: compute_matches(v, c), args.reps)
            full_s += seconds
            found = matches.backward[0]
            for key, value in flow_metrics(found, clip["flow"], clip["flow_valid"]).items():
                metrics[key] += value / len(clips)
        print(
            f"| {name} | {metrics['epe']:.3f} | {metrics['epe<1']:.3f} | {metrics['fl']:.3f} | "
            f"{backward_s / pairs * 1e3:.1f} | {full_s / pairs * 1e3:.1f} |",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--sizes", default="240x320,480x640", help="comma-separated HxW")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), OpenCV {cv2.__version__} "
        f"({cv2.getNumThreads()} threads)"
    )
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.lower().split("x"))
        run_size(height, width, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
