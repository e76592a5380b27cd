"""Fixtures of the training tests (defined in training_helpers.py, importable by the tests)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training_helpers import cli_env, deterministic, host, registry, toy_site  # noqa: E402,F401
