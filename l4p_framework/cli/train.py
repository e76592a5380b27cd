"""`l4p-train-head` (one head on the frozen encoder) and `l4p-train` (several heads, optionally the encoder).

    l4p-train-head --plugin depth [--registry registry.yaml] [--config run.yaml] [--print-config]
                   [--resume] [key=value | +key=value ...]
    l4p-train --heads depth,flow [--train-encoder | --train-last-blocks N] [same options]

Every option of `l4p_framework.training.TrainConfig` can be set in the YAML file or as key=value
(steps=2000 lr=1e-3 data.options.num_queries=32 params.depth.preset=official); everything is
validated before anything runs, and typos get a did-you-mean. Both run unchanged under
``torchrun --nproc-per-node N``. User errors print one message on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..errors import L4PError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry", default=None, help="registry.yaml to read and update (default ./registry.yaml)"
    )
    parser.add_argument("--config", default=None, metavar="FILE.yaml", help="training config YAML")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration and exit"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides (+key=value adds a key)"
    )


def head_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l4p-train-head",
        description="Train one head plugin on the frozen encoder; write its weights and registry entry.",
    )
    parser.add_argument("--plugin", required=True, metavar="NAME", help="the head to train (e.g. depth)")
    _common(parser)
    return parser


def joint_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l4p-train",
        description=(
            "Train several heads jointly, optionally with the encoder (L4P's first stage); a trained "
            "encoder is saved with a new fingerprint and the registry updated."
        ),
    )
    parser.add_argument("--heads", required=True, metavar="A,B,C", help="comma-separated heads to train")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--train-encoder", action="store_true", help="train the whole encoder too")
    group.add_argument(
        "--train-last-blocks", type=int, metavar="N", help="train only the encoder's last N blocks"
    )
    _common(parser)
    return parser


def _run(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except L4PError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (resume with --resume from the last checkpoint)", file=sys.stderr)
        return 130


def _train(args, plugin: str | None, heads: list[str] | None, extra: list[str]) -> int:
    from omegaconf import OmegaConf

    from ..training import load_train_config, train

    overrides = [*extra, *args.overrides]
    if args.resume:
        overrides.append("resume=true")
    config = load_train_config(args.config, overrides, plugin=plugin, heads=heads, registry=args.registry)
    if args.print_config:
        print(OmegaConf.to_yaml(OmegaConf.create(config.model_dump(mode="json"))), end="")
        return 0
    train(config)
    return 0


def train_head_main(argv: Sequence[str] | None = None) -> int:
    """Console script `l4p-train-head`."""
    args = head_parser().parse_intermixed_args(argv)
    return _run("l4p-train-head", lambda: _train(args, args.plugin, None, []))


def train_main(argv: Sequence[str] | None = None) -> int:
    """Console script `l4p-train`."""
    args = joint_parser().parse_intermixed_args(argv)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    extra = []
    if args.train_encoder:
        extra.append("train_encoder=true")
    if args.train_last_blocks is not None:
        extra.append(f"train_last_blocks={args.train_last_blocks}")
    return _run("l4p-train", lambda: _train(args, None, heads, extra))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m l4p_framework.cli.train`: l4p-train-head with --plugin, else l4p-train."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--plugin" or a.startswith("--plugin=") for a in argv):
        return train_head_main(argv)
    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
