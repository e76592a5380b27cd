"""`l4p eval`: the metrics of data-and-metrics.md for composed heads on any dataset reader."""

from __future__ import annotations

import json

from ..config import apply_overrides
from ..errors import InputError
from ..plugins import get_plugin_host
from .common import add_model_arguments, load_model, parse_heads


def register(sub) -> dict:
    p = sub.add_parser("eval", help="evaluate heads on a dataset (metrics vs trivial baselines)")
    add_model_arguments(p)
    p.add_argument("--data", default="synth4d", help="dataset name (see `l4p plugins`), default synth4d")
    p.add_argument("--split", default="test")
    p.add_argument("--num-clips", type=int, default=8)
    p.add_argument("--known-intrinsics", action="store_true", help="give the GT intrinsics to the heads")
    p.add_argument(
        "--size",
        default=None,
        help="evaluate at this input size HxW (e.g. 240x320): clips are rendered (synth4d) or resized to it, "
        "the model letterboxes them into its window as `l4p run` does and every metric is computed at HxW "
        "(default: the model window's size)",
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument(
        "options", nargs="*", help="dataset options as key=value (e.g. root=/data/sintel num_frames=24)"
    )
    return {"eval": run_eval}


def parse_size(text: str) -> tuple[int, int]:
    """ "240x320" -> (240, 320) (height x width in pixels), with a clear error otherwise."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must be HxW in pixels such as 240x320, got {text!r}") from None
    if h < 8 or w < 8:
        raise InputError(f"--size must be at least 8x8 pixels, got {text!r}")
    return h, w


def build_dataset(spec, split: str, options: dict):
    """spec.build(split, **options), with a one-line error naming the options a dataset refuses."""
    from pydantic import ValidationError

    try:
        return spec.build(split, **options)
    except TypeError as exc:
        raise InputError(
            f"dataset {spec.name!r} does not take the options {sorted(options)} ({exc}); pass only the "
            "options its reader documents (`l4p plugins --json` lists the datasets)"
        ) from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InputError(f"dataset {spec.name!r} options: {problems}") from None


def run_eval(args) -> int:
    from ..evaluation import evaluate, format_table

    model, trained = load_model(args.registry, parse_heads(args.heads))
    spec = get_plugin_host().get_dataset(args.data)
    options = apply_overrides({}, [f"+{o}" for o in args.options], source="l4p eval options")
    config = model.encoder.config
    height, width = parse_size(args.size) if args.size else config.image_size
    if args.data == "synth4d":
        defaults = {
            "num_frames": config.num_frames + model.window_stride,
            "height": height,
            "width": width,
            "num_queries": 48,
        }
        options = {**defaults, **options}
    elif args.size:
        options = {"size": [height, width], **options}
    dataset = build_dataset(spec, args.split, options)
    heads = list(model.heads)
    results = evaluate(model, dataset, heads, args.num_clips, args.known_intrinsics)
    labelled = {name + ("" if trained[name] else " (untrained)"): r for name, r in results.items()}
    print(
        f"{args.data}/{args.split}: {min(args.num_clips, len(dataset))} clips at {height}x{width}, "
        f"encoder {config.name} ({config.image_size[0]}x{config.image_size[1]} window)"
    )
    print(format_table(labelled))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0
