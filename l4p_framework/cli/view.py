"""`l4p view RESULTS_DIR`: the 4D viewer of an `l4p run` output folder, one self-contained viewer.html.

See `l4p_framework.viz.viewer.build_viewer` (what is embedded, how the size budget is shared out) and
the README section "See it in 4D".
"""

from __future__ import annotations

from ..viz.viewer import DEFAULT_BUDGET_MB


def register(sub) -> dict:
    p = sub.add_parser(
        "view",
        help="write viewer.html: an l4p run output folder in 4D (points, cameras, tracks, frames), one "
        "file that opens offline in a browser",
    )
    p.add_argument("results", help="an output folder of l4p run, OUT/NAME/ (holds meta.json)")
    p.add_argument("--out", default=None, help="where to write the page (default RESULTS/viewer.html)")
    p.add_argument(
        "--budget-mb",
        type=float,
        default=DEFAULT_BUDGET_MB,
        help=f"largest file size in MB (10^6 bytes; default {DEFAULT_BUDGET_MB:g}): points, then frames are "
        "subsampled to fit",
    )
    p.add_argument(
        "--video",
        default=None,
        help="the input video, when it is no longer where meta.json's `input` says (its frames are shown)",
    )
    return {"view": view_command}


def view_command(args) -> int:
    from ..viz.viewer import build_viewer

    build_viewer(args.results, args.out, args.budget_mb, video=args.video, say=print)
    return 0
