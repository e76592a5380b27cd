"""Peak memory and time of `l4p convert-official` on a full-size checkpoint (random weights).

Usage: python benchmarks/convert_memory.py [--work DIR] [--dtype float32|bfloat16]

Writes DIR/official.ckpt: every one of the 916 official keys at its released shape (the spec tables
of tests/cli/test_convert_official.py; aliases share their original's storage, as in the released
file), normal(0, 0.02) float32 values, wrapped as a Lightning checkpoint (5.7 GB). Then runs the
converter in a fresh process and prints its peak RSS (`resource.getrusage` of the child), wall time
and the size of what it wrote. Needs about 12 GB of free disk and 7 GB of RAM for the generation.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def make_checkpoint(path: Path) -> int:
    """Save the full-size random checkpoint to path; returns its size in bytes."""
    sys.path.insert(0, str(ROOT / "tests" / "cli"))
    from test_convert_official import lightning_checkpoint, spec_official_shapes

    generator = torch.Generator().manual_seed(0)
    shapes = spec_official_shapes()
    state = {}
    for key, shape in shapes.items():
        alias = re.search(r"scratch\.layer_rn\.(\d)\.", key)
        if alias is None:
            state[key] = torch.randn(shape, generator=generator) * 0.02
    for key in shapes:
        alias = re.search(r"scratch\.layer_rn\.(\d)\.", key)
        if alias is not None:
            state[key] = state[key.replace(alias[0], f"scratch.layer{int(alias[1]) + 1}_rn.")]
    torch.save(lightning_checkpoint(state), path)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/l4p-convert-bench")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt, out = work / "official.ckpt", work / "converted"
    if not ckpt.is_file():
        start = time.perf_counter()
        size = make_checkpoint(ckpt)
        print(f"generated {ckpt} ({size / 2**30:.2f} GiB) in {time.perf_counter() - start:.0f} s")
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "l4p_framework.cli.main", "convert-official", str(ckpt)]
    start = time.perf_counter()
    subprocess.run(command + ["--out", str(out), "--dtype", args.dtype], check=True)
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    written = sum(p.stat().st_size for p in out.iterdir())
    print(
        f"convert-official --dtype {args.dtype}: peak RSS {peak_mib:.0f} MiB, {wall:.0f} s, "
        f"wrote {written / 2**30:.2f} GiB (checkpoint {ckpt.stat().st_size / 2**30:.2f} GiB)"
    )


if __name__ == "__main__":
    main()
