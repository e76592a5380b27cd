"""What the heads that read the shared matching add per 16-frame window, against the matching itself
(`compute_matches`, paid once per window whoever reads it): the pose head's window fit
(`odometry.window_motion`, self-calibration at >= 128 px) and the motion head's rigid-motion residual
(`geometry.rigid_residual`, gaps 2 and 4), on held-out synth4d windows at the shipped 64x64 window and
at 240x320.

    python benchmarks/matching_heads.py [--windows 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from l4p_head_motion.geometry import rigid_residual
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
        seconds = {"matching": 0.0, "pose window fit": 0.0, "motion residual": 0.0}
        for clip in range(args.windows):
            sample = data[clip]
            start = time.perf_counter()
            matches = compute_matches(sample["video"][None], MatchConfig())
            seconds["matching"] += time.perf_counter() - start
            start = time.perf_counter()
            window_motion(matches, sample["intrinsics"][None].double(), calibrate=min(h, w) >= 128)
            seconds["pose window fit"] += time.perf_counter() - start
            start = time.perf_counter()
            rigid_residual(matches, (2, 4))
            seconds["motion residual"] += time.perf_counter() - start
        base = seconds["matching"]
        print(
            f"{h}x{w}: "
            + ", ".join(
                f"{k} {1000 * v / args.windows:.0f} ms ({v / base:.2f}x the matching)"
                for k, v in seconds.items()
            )
        )


if __name__ == "__main__":
    main()
