#!/usr/bin/env python3
"""Install the normals head plugin *by name* into a fresh virtual environment, as a user would, and train it.

    .venv/bin/python scripts/install_by_name.py [--work DIR] [--steps N] [--torch VERSION]

Run it with the repository's development environment (`.venv/bin/python`, see scripts/setup.sh). Steps:

1. Wheels: `pip wheel --no-deps` of `l4p-framework` (the repository root) and `l4p-head-normals`
   (plugins/normals) into WORK/wheelhouse, built from clean copies of the sources (so no stale
   `build/` folder or egg-info of the checkout can leak into a wheel, and nothing is written into it).
2. Third-party wheels: `pip download` of l4p-framework's dependencies except torch (pluggy, pydantic,
   omegaconf, safetensors, einops, numpy, pillow, av and what they need), pinned to the versions of this
   environment, into the same wheelhouse. pip takes them from its cache or the package registry.
3. A fresh virtual environment WORK/venv (no system site-packages, nothing of the checkout on its path).
4. torch: `pip install torch==VERSION` into it from the package registry (on l4p's machines the CPU
   build is a local file, so this is quick and offline). The alternative, a `.pth` file pointing at this
   environment's site-packages, was not chosen: that folder also holds the editable l4p-framework and
   every head's metadata, whose entry points would leak into the fresh environment and defeat the check.
5. `pip install --no-index --find-links WORK/wheelhouse l4p-head-normals`: the plugin by name, its
   dependency l4p-framework and their dependencies, from the wheelhouse only.
6. `l4p plugins --json` in the fresh environment: normals must be listed as active.
7. `l4p-train-head --plugin normals` for a few steps on synth4d with a registry on the tiny test encoder
   (WORK/bundle/registry.yaml), then `l4p heads --json`: normals registered, weights present,
   encoder-compatible.

Writes WORK/report.json (paths, wheels, the `l4p plugins` / `l4p heads` JSON, where l4p_framework was
imported from, timings) and exits non-zero with the failing step's output if anything fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugins" / "normals"
IGNORE_NAMES = ("__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".pytest_cache")
"""Never copied into the wheel sources: caches and build leftovers of the checkout."""


def run(step: str, cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> str:
    """Run `cmd`, print it, return its stdout; exit with its output if it fails."""
    print(f"[{step}] $ {' '.join(map(str, cmd))}", flush=True)
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        noise = re.compile(r"^WARNING: Location .* is ignored")
        err = "\n".join(line for line in proc.stderr.splitlines() if not noise.match(line))
        sys.exit(
            f"install_by_name: step {step!r} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{err[-4000:]}"
        )
    return proc.stdout


def third_party_requirements() -> list[str]:
    """`name==version` of l4p-framework's dependencies (not torch) as installed in this environment."""
    pins = []
    for requirement in metadata.requires("l4p-framework") or []:
        if ";" in requirement and "extra" in requirement.split(";", 1)[1]:
            continue  # optional (dev) extras
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        if name.lower() == "torch":
            continue
        pins.append(f"{name}=={metadata.version(name)}")
    return pins


def default_torch() -> str:
    """This environment's torch version without its local label (2.13.0+cpu -> 2.13.0)."""
    return metadata.version("torch").split("+")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temp folder)")
    parser.add_argument("--steps", type=int, default=2, help="training steps of the normals head (default 2)")
    parser.add_argument(
        "--torch", default=None, help="torch version for the fresh environment (default: this one's)"
    )
    args = parser.parse_args(argv)
    work = (args.work or Path(tempfile.mkdtemp(prefix="l4p-install-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    wheelhouse, venv, bundle = work / "wheelhouse", work / "venv", work / "bundle"
    if venv.exists():
        sys.exit(f"install_by_name: {venv} already exists; pass an empty --work folder")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    # 1. wheels of the two l4p distributions, from clean copies of their sources
    sources = work / "sources"
    shutil.rmtree(sources, ignore_errors=True)
    core = sources / "l4p-framework"
    core.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, core / name)
    shutil.copytree(
        REPO / "l4p_framework", core / "l4p_framework", ignore=shutil.ignore_patterns(*IGNORE_NAMES)
    )
    shutil.copytree(
        PLUGIN, sources / "l4p-head-normals", ignore=shutil.ignore_patterns(*IGNORE_NAMES, "tests")
    )
    run("wheels", [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheelhouse, core,
                   sources / "l4p-head-normals"])  # fmt: skip
    lap("wheels")

    # 2. the third-party dependencies (torch aside) as wheels, pinned to this environment's versions
    requirements = third_party_requirements()
    run("dependencies", [*pip, "download", "-q", "-d", wheelhouse, *requirements])
    lap("dependencies")

    # 3. + 4. a fresh virtual environment with torch from the package registry
    run("venv", [sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    vpip = [python, "-m", "pip", "--disable-pip-version-check"]
    torch_version = args.torch or default_torch()
    run("torch", [*vpip, "install", "-q", f"torch=={torch_version}"])
    lap("venv+torch")

    # 5. the plugin by name, from the wheelhouse only
    run("install", [*vpip, "install", "-q", "--no-index", "--find-links", wheelhouse, "l4p-head-normals"])
    lap("install")

    # 6. l4p plugins --json in the fresh environment (run from the work folder: nothing of the checkout)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "L4P_LOAD_PLUGINS", "L4P_DISABLE_PLUGINS")
    }
    env.update(OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"), VIRTUAL_ENV=str(venv))
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    plugins = json.loads(run("plugins", [venv / "bin" / "l4p", "plugins", "--json"], env=env, cwd=work))
    normals = [p for p in plugins if "normals" in p.get("provides", {}).get("heads", [])]
    if not normals or normals[0]["status"] != "active":
        sys.exit(
            f"install_by_name: `l4p plugins` does not list normals as active:\n{json.dumps(plugins, indent=2)}"
        )
    where = run("where", [python, "-c", "import l4p_framework, l4p_head_normals as n; "
                                        "print(l4p_framework.__file__); print(n.__file__)"], env=env, cwd=work)  # fmt: skip
    lap("plugins")

    # 7. train the head on synth4d into a registry on the tiny encoder, then check the registry
    bundle.mkdir(exist_ok=True)
    registry = bundle / "registry.yaml"
    registry.write_text("encoder:\n  preset: tiny\n")
    train = [venv / "bin" / "l4p-train-head", "--plugin", "normals", "--registry", registry,
             f"steps={args.steps}", "batch_size=1", "warmup_steps=1", "checkpoint_every=0", "eval_batches=1",
             "log_every=1", "progress=false", "data.train_clips=2", "data.options.num_queries=4"]  # fmt: skip
    run("train", train, env=env, cwd=bundle)
    heads = json.loads(
        run("heads", [venv / "bin" / "l4p", "heads", "--registry", registry, "--json"], env=env, cwd=work)
    )
    row = next((h for h in heads if h["head"] == "normals"), None)
    if not row or not (row["registered"] and row["weights_present"] and row["encoder_compatible"]):
        sys.exit(f"install_by_name: normals was not trained and registered:\n{json.dumps(heads, indent=2)}")
    lap("train")

    report = {
        "work": str(work),
        "wheelhouse": str(wheelhouse),
        "venv": str(venv),
        "registry": str(registry),
        "torch": torch_version,
        "torch_source": "pip install from the package registry (no .pth link to the development environment)",
        "wheels": sorted(p.name for p in wheelhouse.glob("*.whl")),
        "requirements": requirements,
        "plugins": plugins,
        "heads": heads,
        "imported_from": where.split(),
        "timings_s": timings,
    }
    (work / "report.json").write_text(json.dumps(report, indent=2))
    print(f"normals installed by name into {venv}, trained and registered in {registry}")
    print(f"report: {work / 'report.json'}; timings (s): {timings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
