"""`l4p eval`: the metrics of data-and-metrics.md for composed heads on any dataset reader."""

from __future__ import annotations

import json

from ..config import apply_overrides
from ..plugins import get_plugin_host
from .common import add_model_arguments, load_model, parse_heads


def register(sub) -> dict:
    p = sub.add_parser("eval", help="evaluate heads on a dataset (metrics vs trivial baselines)")
    add_model_arguments(p)
    p.add_argument("--data", default="synth4d", help="dataset name (see `l4p plugins`), default synth4d")
    p.add_argument("--split", default="test")
    p.add_argument("--num-clips", type=int, default=8)
    p.add_argument("--known-intrinsics", action="store_true", help="give the GT intrinsics to the heads")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument(
        "options", nargs="*", help="dataset options as key=value (e.g. root=/data/sintel num_frames=24)"
    )
    return {"eval": run_eval}


def run_eval(args) -> int:
    from ..evaluation import evaluate, format_table

    model, trained = load_model(args.registry, parse_heads(args.heads))
    spec = get_plugin_host().get_dataset(args.data)
    options = apply_overrides({}, [f"+{o}" for o in args.options], source="l4p eval options")
    config = model.encoder.config
    if args.data == "synth4d":
        defaults = {
            "num_frames": config.num_frames + model.window_stride,
            "height": config.image_size[0],
            "width": config.image_size[1],
            "num_queries": 48,
        }
        options = {**defaults, **options}
    dataset = spec.build(args.split, **options)
    heads = list(model.heads)
    results = evaluate(model, dataset, heads, args.num_clips, args.known_intrinsics)
    labelled = {name + ("" if trained[name] else " (untrained)"): r for name, r in results.items()}
    print(f"{args.data}/{args.split}: {min(args.num_clips, len(dataset))} clips, encoder {config.name}")
    print(format_table(labelled))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0
