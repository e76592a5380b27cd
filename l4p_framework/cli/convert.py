"""`l4p convert-official CKPT --out DIR`: the official L4P Lightning checkpoint -> an l4p model folder.

    l4p convert-official l4p_depth_flow_2d3dtrack_camray_dynseg_v1.ckpt --out weights/official
                         [--dtype float32|bfloat16|float16] [--encoder-preset l4p-vitg14] [--force]

Writes DIR/encoder.safetensors, DIR/<head>.safetensors for depth, flow, motion, pose and tracking,
and DIR/registry.yaml; then `l4p run --registry DIR/registry.yaml VIDEO`. The checkpoint is read
without running any code from it, every key must be consumed and every l4p parameter filled
(l4p_framework.official). The folder appears only when complete.
"""

from __future__ import annotations

from collections.abc import Callable


def register(sub) -> dict[str, Callable]:
    """Add the `convert-official` subcommand; returns {"convert-official": handler}."""
    p = sub.add_parser(
        "convert-official",
        help="convert the official L4P checkpoint (.ckpt) into l4p weights files and a registry",
        description=(
            "Convert the official L4P Lightning checkpoint into DIR/encoder.safetensors, one "
            "DIR/<head>.safetensors per head (depth, flow, motion, pose, tracking) and DIR/registry.yaml "
            "(use it with `l4p run --registry DIR/registry.yaml`). Nothing in the checkpoint is executed."
        ),
    )
    p.add_argument("checkpoint", metavar="CKPT", help="the official .ckpt file (a Lightning checkpoint)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; must be empty)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="storage dtype of the weights files (default float32, as released)",
    )
    p.add_argument(
        "--encoder-preset",
        default=None,
        metavar="NAME",
        help="encoder preset of the checkpoint (default: inferred from its shapes; l4p-vitg14 for the release)",
    )
    p.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
    return {"convert-official": run_convert_official}


def run_convert_official(args) -> int:
    from ..official import convert_official

    registry = convert_official(
        args.checkpoint,
        args.out,
        dtype=args.dtype,
        encoder_preset=args.encoder_preset,
        overwrite=args.force,
    )
    folder = registry.parent
    files = sorted(p.name for p in folder.iterdir())
    print(f"converted {args.checkpoint} -> {folder} ({', '.join(files)})")
    print(f"next: l4p run --registry {registry} VIDEO")
    return 0
