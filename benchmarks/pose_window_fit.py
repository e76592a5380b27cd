"""Pose head's window fit (`odometry.window_motion`, `matching: shared`): ms per 16-frame window
against the shared matching of the same window (`compute_matches`, which every matching head pays
once), on held-out synth4d windows at the shipped 64x64 window and at 240x320.

    python benchmarks/pose_window_fit.py [--windows 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from l4p_head_pose.odometry import window_motion

from l4p_framework.data.synth4d.dataset import Synth4D
from l4p_framework.matching import MatchConfig, compute_matches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for h, w in ((64, 64), (240, 320)):
        data = Synth4D("test", num_frames=16, height=h, width=w, num_queries=0)
        matching_s = fit_s = 0.0
        for clip in range(args.windows):
            sample = data[clip]
            start = time.perf_counter()
            matches = compute_matches(sample["video"][None], MatchConfig())
            matching_s += time.perf_counter() - start
            start = time.perf_counter()
            window_motion(matches, sample["intrinsics"][None].double(), calibrate=min(h, w) >= 128)
            fit_s += time.perf_counter() - start
        n = args.windows
        print(
            f"{h}x{w}: window fit {1000 * fit_s / n:.0f} ms per window, matching {1000 * matching_s / n:.0f} ms,"
            f" fit / matching {fit_s / matching_s:.2f}"
        )


if __name__ == "__main__":
    main()
