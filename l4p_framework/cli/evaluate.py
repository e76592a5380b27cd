"""`l4p eval`: the metrics of data-and-metrics.md for composed heads on any dataset reader."""

from __future__ import annotations

import argparse
import json

from ..errors import InputError

EPILOG = """\
dataset options (key=value after the flags; values are YAML: size=[240,320] scenes=[alley_1]):
  synth4d (the default): num_frames, height, width, num_queries, length and the other synth4d
    config fields; by default clips are rendered at --size (or the model window) with
    num_frames = window + stride frames and 48 queries.
  file readers (sintel, kitti-depth, kitti-flow, davis, tum, tapvid, tapvid3d, kubric, pointodyssey):
    root=PATH                      the dataset folder (required)
    start= frame_stride= max_frames=
                                   which frames of each sequence to keep
    clip_len= clip_stride=         cut each sequence into clips (default: one clip per sequence)
    size=[H,W] resize_mode=squash|letterbox|crop
                                   resize the clips (default: their native size; --size HxW sets
                                   size); the model fits any size into its window
    and each reader's own options, e.g. sintel: render_pass=clean|final scenes=[...]
    pixel_offset=0.5 reverse_time=true (reversed clips: Sintel's forward flow becomes the backward
    `flow` the flow head is scored on). A dataset refuses an option it does not take and lists
    the ones it does.

examples:
  l4p eval --heads depth --num-clips 4 num_frames=24
  l4p eval --data sintel --split train --heads depth,flow root=/data/sintel reverse_time=true clip_len=24
"""


def register(sub) -> dict:
    from .common import add_model_arguments

    p = sub.add_parser(
        "eval",
        help="evaluate heads on a dataset (metrics vs trivial baselines)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        "(default: synth4d renders at the model window's size, dataset readers keep their native size)",
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("options", nargs="*", help="dataset options as key=value (see below)")
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
    """spec.build(split, **options), with a one-line error naming the options a dataset refuses.

    The built-in readers and synth4d refuse unknown options themselves (listing those they take);
    the TypeError case covers plugin datasets whose build() has a plain keyword signature.
    """
    from pydantic import ValidationError

    try:
        return spec.build(split, **options)
    except TypeError as exc:
        if "keyword argument" not in str(exc):
            raise  # a bug inside the reader, not a refused option
        raise InputError(
            f"dataset {spec.name!r} does not take the options {sorted(options)} ({exc}); pass only the "
            "options its reader documents (`l4p plugins --json` lists the datasets)"
        ) from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InputError(f"dataset {spec.name!r} options: {problems}") from None


def dataset_options(args, config, window_stride: int) -> dict:
    """The options `--data` is built with: the user's key=value options over the defaults.

    synth4d renders clips at --size (default: the model window) with window + stride frames; a
    reader resizes its clips only when --size is given (default: its native size).
    """
    from ..config import apply_overrides

    options = apply_overrides({}, [f"+{o}" for o in args.options], source="l4p eval options")
    if args.data == "synth4d":
        height, width = parse_size(args.size) if args.size else config.image_size
        defaults = {
            "num_frames": config.num_frames + window_stride,
            "height": height,
            "width": width,
            "num_queries": 48,
        }
        return {**defaults, **options}
    if args.size:
        return {"size": list(parse_size(args.size)), **options}
    return options


def run_eval(args) -> int:
    from ..evaluation import evaluate, format_table
    from ..plugins import get_plugin_host
    from .common import load_model, parse_heads

    if args.size:
        parse_size(args.size)  # a bad --size fails before the model is built
    spec = get_plugin_host().get_dataset(args.data)
    model, trained = load_model(args.registry, parse_heads(args.heads))
    config = model.encoder.config
    options = dataset_options(args, config, model.window_stride)
    dataset = build_dataset(spec, args.split, options)
    heads = list(model.heads)
    sizes: list[str] = []  # the clips' H x W as evaluated, in order of first appearance

    def record_size(batch) -> None:
        size = "x".join(str(n) for n in batch["video"].shape[-2:])
        if size not in sizes:
            sizes.append(size)

    results = evaluate(model, dataset, heads, args.num_clips, args.known_intrinsics, on_batch=record_size)
    labelled = {name + ("" if trained[name] else " (untrained)"): r for name, r in results.items()}
    at = f" at {', '.join(sizes)}" if sizes else ""
    if sizes and args.data != "synth4d" and "size" not in options:
        at += " (native size)"
    print(
        f"{args.data}/{args.split}: {min(args.num_clips, len(dataset))} clips{at}, "
        f"encoder {config.name} ({config.image_size[0]}x{config.image_size[1]} window)"
    )
    print(format_table(labelled))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0
