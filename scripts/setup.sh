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
# The viewer's browser test (tests/viz/test_viewer_browser.py) drives Debian's chromium + chromium-driver;
# installed here when missing and apt-get can run (as root), never downloaded by the tests.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver (apt-get) for the viewer's browser test"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver \
      >/dev/null; }; then
      echo "note: apt-get could not install chromium chromium-driver: the browser test will be skipped" \
        "(or fail where L4P_REQUIRE_BROWSER is set)"
    fi
  else
    echo "note: /usr/bin/chromium or /usr/bin/chromedriver is missing: the viewer's browser test is skipped" \
      "(fails where L4P_REQUIRE_BROWSER is set); install them with: sudo apt-get install chromium chromium-driver"
  fi
fi
.venv/bin/python -c "import torch, l4p_framework; print(f'l4p {l4p_framework.__version__} ready (torch {torch.__version__})')"
