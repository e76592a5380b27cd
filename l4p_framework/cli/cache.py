"""`l4p cache build` / `l4p cache info`: the frozen encoder's features of a dataset, stored once.

    l4p cache build --data synth4d[:num_queries=32,...] [--split train] [--num-clips 256]
                    [--heads depth,flow | --layers 3,6,9,12] [--dtype float32] [--registry registry.yaml]
    l4p cache info [--registry registry.yaml] [--dir DIR] [--json]

The cache goes into the registry's cache.dir (or --dir) under a folder named by a hash of the
encoder fingerprint, the data (name, options, split), the layers and the dtype. `l4p-train-head`
uses it automatically (cache=auto) when it matches the run. Under torchrun the clips are encoded
in shards across ranks.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def parse_data_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """ "name" or "name:key=value,key=value" -> (name, options); values parsed as YAML scalars."""
    name, _, rest = spec.partition(":")
    if not name:
        raise ConfigError(f"--data {spec!r}: expected NAME or NAME:key=value,...")
    options: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in _split_top_level(rest))):
        if "=" not in item:
            raise ConfigError(f"--data {spec!r}: option {item!r} must look like key=value")
        key, value = item.split("=", 1)
        options[key.strip()] = _scalar(value)
    return name, options


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside [...] / {...} (so list values like [40,60] stay whole)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def _scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def add_cache_arguments(subparsers) -> argparse.ArgumentParser:
    """Add `cache` with `build` and `info` actions to an argparse subparsers object."""
    parser = subparsers.add_parser("cache", help="build or list feature caches of the frozen encoder")
    actions = parser.add_subparsers(dest="cache_action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="encode a dataset once and store its token features")
    build.add_argument("--data", default="synth4d", help="NAME[:key=value,...] (default synth4d)")
    build.add_argument("--split", default="train", help="comma-separated splits (default train)")
    build.add_argument("--num-clips", type=int, default=None, help="first N clips of each split (default 64)")
    build.add_argument(
        "--heads", default=None, help="cache the layers these heads read (default: all registered)"
    )
    build.add_argument("--layers", default=None, help="explicit layers, e.g. 3,6,9,final")
    build.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    build.add_argument("--registry", default="registry.yaml")
    build.add_argument("--dir", default=None, help="cache root (default: the registry's cache.dir)")
    build.add_argument("--batch-size", type=int, default=4)
    build.add_argument("--num-workers", type=int, default=0)
    build.add_argument("--device", default="auto")
    info = actions.add_parser("info", help="list the caches and whether they match the registry's encoder")
    info.add_argument("--registry", default="registry.yaml")
    info.add_argument("--dir", default=None)
    info.add_argument("--json", action="store_true")
    return parser


def _layers_for(args, reg, encoder) -> list:
    from ..compose import L4P
    from ..plugins import get_plugin_host

    if args.layers:
        return [x if x == "final" else int(x) for x in (s.strip() for s in args.layers.split(",")) if x]
    host = get_plugin_host()
    names = (
        [h.strip() for h in args.heads.split(",")]
        if args.heads
        else list(reg.registry.heads) or sorted(host.heads())
    )
    if not names:
        raise ConfigError("no heads to cache layers for: pass --heads a,b or --layers 3,6,9,final")
    model = L4P(encoder)
    layers: dict = {}
    for name in names:
        spec = host.get_head(name)
        config = reg.head_config(name, spec) if name in reg.registry.heads else spec.config_model()
        layers.update(dict.fromkeys(model.layers_of(spec, config)))
    return list(layers)


def cmd_cache(args) -> int:
    from ..compose import encoder_from_registry
    from ..plugins import get_plugin_host
    from ..registry import load_registry
    from ..training.cache import build_cache, list_caches
    from ..training.data import build_dataset, check_split, resolve_data_options
    from ..training.distributed import distributed_session

    reg = load_registry(args.registry)
    root = Path(args.dir) if args.dir else reg.resolve(reg.registry.cache.dir)
    if args.cache_action == "info":
        fingerprint = reg.registry.encoder.fingerprint
        rows = [
            {**c.summary(), "matches_registry": fingerprint is None or c.fingerprint == fingerprint}
            for c in list_caches(root)
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print(f"no feature caches in {root}")
        else:
            for r in rows:
                mark = "ok" if r["matches_registry"] else "STALE (other encoder)"
                print(
                    f"{r['id']}  {r['data']}/{r['split']}  {r['num_clips']} clips  layers {r['layers']}  {r['dtype']}  "
                    f"{r['bytes'] / 2**20:.1f} MiB  encoder {r['encoder_fingerprint'][:12]} {mark}  options {r['options']}"
                )
        return 0
    name, options = parse_data_spec(args.data)
    with distributed_session(args.device) as ctx:
        encoder = encoder_from_registry(reg, ctx.device)
        spec = get_plugin_host().get_dataset(name)
        options = resolve_data_options(name, options, encoder.config)
        layers = _layers_for(args, reg, encoder)
        dtype = args.dtype or reg.registry.cache.dtype
        for split in [s.strip() for s in args.split.split(",") if s.strip()]:
            check_split(spec, split, "--split")
            dataset = build_dataset(spec, split, options, None)
            cache = build_cache(
                encoder,
                dataset,
                layers,
                root,
                split,
                args.num_clips or min(64, len(dataset)),
                dtype,
                data=name,
                options=options,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                ctx=ctx,
                progress=True,
            )
            if ctx.is_main:
                print(
                    f"cached {len(cache)} clips of {name}/{split} (layers {cache.layers}, {dtype}) in {cache.path}"
                )
    return 0


def register(subparsers) -> dict[str, Callable]:
    """Hook for `l4p` main: adds `cache` and returns its handler."""
    add_cache_arguments(subparsers)
    return {"cache": cmd_cache}
