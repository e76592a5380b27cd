"""The `l4p` command: plugins, heads, registry, encoder info, cache, demo, run, eval, new-head."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from ..errors import L4PError

DEFAULT_REGISTRY = "registry.yaml"


def _print_table(rows: list[dict], columns: Sequence[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


# -- l4p plugins ---------------------------------------------------------------------------------
def cmd_plugins(args) -> int:
    from ..plugins import get_plugin_host

    rows = [
        {
            "plugin": r.name,
            "distribution": r.distribution,
            "version": r.version,
            "status": r.status,
            "hooks": list(r.hooks),
            "provides": {k: list(v) for k, v in r.provides.items()},
            "error": r.error,
        }
        for r in get_plugin_host().records()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(
            [
                {
                    **r,
                    "hooks": ",".join(r["hooks"]),
                    "provides": " ".join(f"{k}:{','.join(v)}" for k, v in r["provides"].items()),
                }
                for r in rows
            ],
            ["plugin", "distribution", "version", "status", "provides", "error"],
        )
    return 0


# -- l4p heads -----------------------------------------------------------------------------------
def head_rows(registry_path: str | None) -> list[dict]:
    """Installed heads x registry entries x weights present x encoder-compatible."""
    from pathlib import Path

    from ..checkpoints import read_head_metadata
    from ..plugins import get_plugin_host
    from ..registry import load_registry

    host = get_plugin_host()
    installed = host.heads()
    reg = load_registry(registry_path) if registry_path and Path(registry_path).is_file() else None
    registered = reg.registry.heads if reg else {}
    fingerprint = reg.registry.encoder.fingerprint if reg else None
    rows = []
    for name in sorted({*installed, *registered}):
        spec, entry = installed.get(name), registered.get(name)
        weights = reg.resolve(entry.weights) if (reg and entry) else None
        present = bool(weights and weights.is_file())
        compatible = None
        if present:
            try:
                recorded = read_head_metadata(weights).get("encoder_fingerprint")
                compatible = bool(fingerprint) and recorded == fingerprint
            except L4PError:
                compatible = False
        rows.append(
            {
                "head": name,
                "installed": spec is not None,
                "plugin": spec.distribution if spec else (entry.plugin if entry else ""),
                "version": spec.version if spec else "",
                "registered": entry is not None,
                "weights_present": present,
                "encoder_compatible": compatible,
            }
        )
    return rows


def cmd_heads(args) -> int:
    rows = head_rows(args.registry)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(
            rows,
            ["head", "installed", "plugin", "version", "registered", "weights_present", "encoder_compatible"],
        )
    return 0


# -- l4p registry --------------------------------------------------------------------------------
def cmd_registry(args) -> int:
    from omegaconf import OmegaConf

    from ..errors import RegistryError
    from ..plugins import get_plugin_host
    from ..registry import (
        check_encoder_preset,
        check_files,
        check_weights,
        check_window,
        load_registry,
        lock_registry,
        schema,
    )

    if args.action == "schema":
        print(json.dumps(schema(), indent=2))
        return 0
    reg = load_registry(args.registry, args.overrides)
    if args.action == "show":
        print(OmegaConf.to_yaml(OmegaConf.create(reg.registry.model_dump(mode="json"))), end="")
        return 0
    if args.action == "lock":
        lock_registry(reg).save()
        print(f"locked {reg.path}: sha256 and encoder fingerprint recorded")
        return 0
    problems = check_files(reg)
    host = get_plugin_host()
    try:
        check_window(reg, check_encoder_preset(reg, host).num_frames)
    except L4PError as exc:
        problems.append(str(exc))
    for name in reg.registry.heads:
        try:
            reg.head_config(name, reg.check_plugin(name, host))
        except L4PError as exc:
            problems.append(str(exc))
    if args.deep:
        problems += check_weights(reg, host)
    if problems:
        raise RegistryError("\n".join(problems))
    checked = "every weights file loaded, " if args.deep else ""
    print(
        f"{reg.path}: valid ({checked}{len(reg.registry.heads)} heads, encoder {reg.registry.encoder.preset})"
    )
    return 0


# -- l4p encoder info ----------------------------------------------------------------------------
NO_FINGERPRINT = "not computed for a preset (random weights from seed 0): --fingerprint builds them"


def cmd_encoder(args) -> int:
    """Facts of an encoder. A preset is described from a meta-device skeleton (shapes, no weights,
    instant even for l4p-vitg14); files are loaded, and --fingerprint builds a preset for real."""
    import torch

    from ..encoder import build_encoder_skeleton, is_preset_name, load_encoder

    skeleton = is_preset_name(args.source) and not args.fingerprint
    if skeleton:
        encoder = build_encoder_skeleton(args.source)
    else:
        encoder = load_encoder(args.source, preset=args.preset)
    c = encoder.config
    frames, height, width = (
        args.frames or c.num_frames,
        args.height or c.image_size[0],
        args.width or c.image_size[1],
    )
    grid = encoder.check_video(torch.empty(1, 3, frames, height, width, device="meta"))
    info = {
        "source": str(args.source),
        "preset": c.name,
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "width": c.width,
        "depth": c.depth,
        "heads": c.num_heads,
        "patch": [c.tubelet, c.patch_size, c.patch_size],
        "input": [frames, height, width],
        "token_grid": list(grid),
        "tokens": grid[0] * grid[1] * grid[2],
        "mean": list(c.mean),
        "std": list(c.std),
        "fingerprint": None if skeleton else encoder.fingerprint,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:12s} {NO_FINGERPRINT if v is None else v}")
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    parser = argparse.ArgumentParser(
        prog="l4p", description="l4p: low-level 4D perception from monocular video"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Callable] = {}

    p = sub.add_parser("plugins", help="list installed plugins, their status and what they provide")
    p.add_argument("--json", action="store_true")
    handlers["plugins"] = cmd_plugins

    p = sub.add_parser("heads", help="installed heads x registry entries x weights x encoder compatibility")
    p.add_argument("--json", action="store_true")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    handlers["heads"] = cmd_heads

    p = sub.add_parser("registry", help="validate, show, lock or print the schema of registry.yaml")
    p.add_argument("action", choices=["validate", "show", "schema", "lock"])
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p.add_argument(
        "--deep",
        action="store_true",
        help="validate: also load every weights file (shapes, NaN/Inf values, encoder fingerprints), "
        "not just its sha256",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    handlers["registry"] = cmd_registry

    p = sub.add_parser("encoder", help="encoder tools")
    p.add_argument("action", choices=["info"])
    p.add_argument("source", help="preset name, .safetensors, HF VideoMAE folder or VideoMAEv2 .pth")
    p.add_argument("--preset", default=None)
    p.add_argument("--frames", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument(
        "--fingerprint",
        action="store_true",
        help="for a preset, build its seed-0 random weights to print their fingerprint (slow for big presets; "
        "without it a preset is described from its shapes alone)",
    )
    p.add_argument("--json", action="store_true")
    handlers["encoder"] = cmd_encoder

    for module_name in ("demo", "run", "view", "evaluate", "cache", "scaffold", "convert"):
        try:
            module = __import__(f"{__package__}.{module_name}", fromlist=["register"])
        except ImportError:
            continue
        handlers.update(module.register(sub))

    from ..plugins import get_plugin_host

    host = get_plugin_host()
    for name, spec in host.subcommands().items():
        if name in handlers:
            continue
        p = sub.add_parser(name, help=f"{spec.help} [plugin {spec.distribution}]")
        try:
            spec.add_arguments(p)
        except Exception as exc:  # one broken plugin must not take down every other command
            _drop_subparser(sub, name)
            message = f"add_arguments() failed: {type(exc).__name__}: {exc}"
            plugin = host.fail_provider("l4p_subcommands", name, message, exc)  # raises if strict
            print(
                f"l4p: warning: skipped command {name!r} of plugin {plugin!r} ({spec.distribution}): {message}",
                file=sys.stderr,
            )
            continue
        handlers[name] = spec.run
    return parser, handlers


def _drop_subparser(sub: argparse._SubParsersAction, name: str) -> None:
    """Remove subcommand `name` from the choices and the help listing (argparse has no public way)."""
    del sub.choices[name]
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != name]


def run_cli(func: Callable[[], int]) -> int:
    """Run a CLI body: L4PError -> one line on stderr and exit code 2, no traceback."""
    try:
        return func()
    except L4PError as exc:
        print(f"l4p: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("l4p: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `l4p heads --json | head`: the reader went away
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        parser, handlers = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return handlers[args.command](args) or 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
