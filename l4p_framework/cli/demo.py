"""`l4p demo`: every installed head on a held-out synth4d clip; visual sheets and a metrics table."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import L4PError
from .common import Progress, add_model_arguments, load_model, parse_heads


def register(sub) -> dict:
    p = sub.add_parser("demo", help="run every installed head on a generated clip; writes l4p-demo/")
    add_model_arguments(p)
    p.add_argument("--out", default="l4p-demo", help="output folder (default l4p-demo)")
    p.add_argument("--seed", type=int, default=0, help="index of the held-out synth4d test clip")
    p.add_argument("--frames", type=int, default=None, help="clip length (default: two windows)")
    return {"demo": run_demo}


def _frames_uint8(video) -> np.ndarray:
    """video (B, 3, T, H, W) float -> (T, H, W, 3) uint8 of the first batch element."""
    return (video[0].permute(1, 2, 3, 0).clamp(0, 1) * 255).round().byte().numpy()


def run_demo(args) -> int:
    from ..data.collate import collate
    from ..data.synth4d import Synth4D
    from ..evaluation import format_table, head_metrics, run_on_batch
    from ..viz import make_sheet, save_gif, save_png, side_by_side

    start = time.perf_counter()
    model, trained = load_model(args.registry, parse_heads(args.heads))
    config = model.encoder.config
    frames = args.frames or config.num_frames + model.window_stride
    h, w = config.image_size
    data = Synth4D("test", num_frames=frames, height=h, width=w, num_queries=48)
    batch = collate([data[args.seed]])
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise L4PError(f"cannot write the demo to {out_dir}: {exc}") from None
    print(
        f"l4p demo: encoder {config.name} ({model.encoder.fingerprint[:12]}), heads {', '.join(model.heads)}; "
        f"synth4d test clip {args.seed}: {frames} frames at {h}x{w}"
    )
    progress = Progress("running")
    outputs = run_on_batch(model, batch, on_window=progress)
    progress.done()
    results, clips = {}, {"input": _frames_uint8(batch["video"])}
    for name in model.heads:
        spec = model.specs[name]
        ours, base = head_metrics(model, name, outputs[name], batch)
        results[name + ("" if trained[name] else " (untrained)")] = {
            "model": ours,
            "baseline": base,
            "protocol": dict(spec.metric_protocols),
        }
        if spec.visualize is None:
            continue
        images = spec.visualize(outputs[name], batch)
        sheet = {}
        for key, image in images.items():
            seq = (
                list(image) if isinstance(image, list | tuple) or getattr(image, "ndim", 3) == 4 else [image]
            )
            picks = (
                seq
                if len(seq) <= 4
                else [seq[i] for i in np.linspace(0, len(seq) - 1, 4).round().astype(int)]
            )
            sheet.update(
                {f"{key} {i}": im for i, im in enumerate(picks)} if len(picks) > 1 else {key: picks[0]}
            )
            if len(seq) == frames:
                clips[f"{name}:{key}"] = np.stack(seq)
        save_png(out_dir / f"{name}.png", make_sheet(sheet, cols=4))
    save_gif(out_dir / "all.gif", side_by_side(clips), fps=6)
    print(format_table(results))
    print(
        f"wrote {out_dir}/ ({', '.join(sorted(p.name for p in out_dir.iterdir()))}) in {time.perf_counter() - start:.1f} s"
    )
    return 0
