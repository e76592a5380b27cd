"""Shared CLI helpers: finding the registry, building the model, progress output."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..compose import L4P, compose
from ..errors import L4PError
from ..plugins import PluginHost, get_plugin_host
from ..registry import load_registry

REPO_REGISTRY = Path(__file__).resolve().parents[2] / "registry.yaml"


def default_registry() -> str | None:
    """$L4P_REGISTRY, ./registry.yaml, or the repository's registry.yaml (editable installs)."""
    for candidate in (os.environ.get("L4P_REGISTRY"), "registry.yaml", REPO_REGISTRY):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def add_model_arguments(parser) -> None:
    parser.add_argument(
        "--registry", default=None, help="registry.yaml (default: $L4P_REGISTRY, ./registry.yaml, the repo's)"
    )
    parser.add_argument(
        "--heads",
        default=None,
        help="comma-separated heads (default: the registry's trained heads; without a registry, every installed head)",
    )


def parse_heads(text: str | None) -> list[str] | None:
    return [h.strip() for h in text.split(",") if h.strip()] if text else None


def load_model(
    registry: str | None,
    heads: list[str] | None,
    say=print,
    host: PluginHost | None = None,
    profile: str | None = None,
) -> tuple[L4P, dict[str, bool]]:
    """The composed model and, per head, whether it has trained weights.

    heads=None means the registry's installed heads that have trained weights, so installing a
    plugin (or scaffolding one with `l4p new-head`) never changes what a default run computes;
    named heads without registered weights are added untrained (and reported as such). Without a
    registry every installed head is untrained on the `tiny` encoder. profile: "l4p" or "official"
    instead of the registry's `profile` (None: the registry's; "l4p" without a registry).
    """
    host = host or get_plugin_host()
    registry = None if registry == "none" else (registry or default_registry())
    reg = load_registry(registry) if registry is not None else None
    if heads:
        wanted = heads
    elif reg is not None:
        installed = host.heads()
        wanted = [h for h, e in reg.registry.heads.items() if e.weights and h in installed]
    else:
        wanted = sorted(host.heads())
    if not wanted and reg is not None:
        raise L4PError(
            f"{registry} has no trained head whose plugin is installed; train one (l4p-train-head --plugin "
            "NAME) or name the heads to run untrained with --heads"
        )
    if not wanted:
        raise L4PError("no heads are installed; install a head plugin (e.g. pip install -e heads/depth)")
    for name in wanted:
        host.get_head(name)  # clear error for unknown heads
    if registry is None:
        say("l4p: no registry.yaml found: running untrained heads on the tiny test encoder")
        return compose(wanted, host=host, profile=profile), dict.fromkeys(wanted, False)
    trained = [h for h in wanted if h in reg.registry.heads and reg.registry.heads[h].weights]
    model = L4P.from_registry(reg, heads=trained, host=host, profile=profile)
    for name in wanted:
        if name not in trained:
            say(f"l4p: head {name!r} has no trained weights in {registry}: running it untrained")
            model.add_head(host.get_head(name))
    model.eval()
    return model, {h: h in trained for h in wanted}


class Progress:
    """A one-line progress indicator on stderr: `label window i/n`."""

    def __init__(self, label: str, total: int | None = None):
        self.label, self.total, self.count = label, total, 0

    def __call__(self, window) -> None:
        self.count += 1
        total = f"/{self.total}" if self.total else ""
        print(
            f"\r{self.label}: window {self.count}{total} (frames {window.start}-{window.start + window.size - 1})",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def done(self) -> None:
        if self.count:
            print(file=sys.stderr)
