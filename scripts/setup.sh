#!/usr/bin/env bash
# Set up a development environment from scratch: .venv with the CPU torch build, the core and
# every head/plugin package of this repo (editable), and the test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
# torch pinned: an unpinned torch pulls a multi-GB CUDA build on these machines.
$PIP install "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
packages=(-e ".[dev,hub]")
for dir in heads/*/ plugins/*/; do
  [ -f "$dir/pyproject.toml" ] && packages+=(-e "$dir")
done
$PIP install "${packages[@]}" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, l4p_framework; print(f'l4p {l4p_framework.__version__} ready (torch {torch.__version__})')"
