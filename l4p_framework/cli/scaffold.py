"""`l4p new-head NAME`: scaffold a new head plugin package (see `l4p_framework.scaffold`)."""

from __future__ import annotations


def register(sub) -> dict:
    """Add the `new-head` subcommand to the `l4p` subparsers; returns {"new-head": handler}."""
    p = sub.add_parser(
        "new-head",
        help="generate a new head plugin package (pyproject, config, decoder, loss, metrics, README, tests)",
        description=(
            "Generate DEST/NAME: the package l4p-head-NAME (import l4p_head_NAME) with an `l4p` entry point, "
            "a dense head on l4p_framework.blocks.DenseHead that trains as generated, a README and a "
            "contract test. Then: pip install -e DEST/NAME; pytest DEST/NAME; l4p-train-head --plugin NAME."
        ),
    )
    p.add_argument("name", metavar="NAME", help="the head's name: a lower_snake identifier, e.g. my_task")
    p.add_argument("--dest", default=".", help="parent folder of the new package folder NAME (default: .)")
    p.add_argument("--description", default=None, help="one line saying what the head predicts")
    return {"new-head": run_new_head}


def run_new_head(args) -> int:
    from ..scaffold import names, new_head

    root = new_head(args.name, args.dest, description=args.description)
    v = names(args.name)
    print(f"created {root}: distribution {v['distribution']}, import {v['package']}, head {args.name!r}")
    print("next steps:")
    print(f"  pip install -e {root}")
    print(f"  pytest {root}")
    print(f"  l4p-train-head --plugin {args.name} --registry registry.yaml")
    return 0
