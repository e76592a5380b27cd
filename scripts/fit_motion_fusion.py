"""Fit the motion head's fusion of decoder logits and rigid-motion residuals (`MotionConfig.fusion`).

Usage: python scripts/fit_motion_fusion.py [--photos DIR] [--clips 24] [--gaps 2,4] [--registry R]

On synth4d *training* clips (16 frames = one window, 240x320; `--clips` procedural ones and, with
`--photos` (made by scripts/fetch_photos.py), as many photo-textured ones from the training photos
of data/photos/split.json with real-camera effects, pans and dollies), runs the registry's motion
decoder alone (`matching: none`; logits at the input resolution, as `l4p run` gives them) and
`geometry.rigid_residual` over each gap on the registry's matching, then fits (w_decoder, w_gap...,
bias) of logit = w_decoder * decoder logit + sum_g w_g * log(1 + residual_g) + bias by logistic
regression (L-BFGS on the mean BCE of every 4th pixel in both directions). A calibrated
probability under-marks a weak mask at p > 0.5, so the bias is then moved (in steps of 0.25, at
most +2) to the best mean foreground IoU over the *validation* clips (a third as many per kind).
Prints the weights (with --write also sets them, `matching: shared` and the gaps in the registry) and
the validation IoU of the decoder alone and fused.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from l4p_head_motion.geometry import rigid_residual

from l4p_framework import L4P, load_registry
from l4p_framework.cli.common import REPO_REGISTRY
from l4p_framework.data.synth4d.dataset import Synth4D
from l4p_framework.matching import compute_matches

SIZE = dict(num_frames=16, height=240, width=320, num_queries=0)


def gather(model: L4P, data: Synth4D, clips: int, gaps: tuple[int, ...], every: int = 4):
    """Features (N, 2 + G) = (decoder logit, log(1 + residual) per gap, 1) and labels (N,) of every
    `every`-th pixel (both directions) of the first `clips` clips of data."""
    rows, labels = [], []
    for i in range(clips):
        clip = data[i]
        video = clip["video"][None]
        with torch.no_grad():
            logits = model(video)["motion"]["motion"][0]  # (1, T, H, W)
        residual = torch.log1p(
            rigid_residual(compute_matches(video, model.matching), gaps)[0]
        )  # (G, T, H, W)
        stacked = torch.cat([logits, residual, torch.ones_like(logits)])[:, :, ::every, ::every]
        rows.append(stacked.flatten(1).T)
        labels.append(clip["motion_mask"][0, :, ::every, ::every].flatten().float())
    return torch.cat(rows).double(), torch.cat(labels).double()


def iou(score: torch.Tensor, moving: torch.Tensor) -> float:
    pred, truth = score > 0, moving > 0.5
    return float((pred & truth).sum() / (pred | truth).sum().clamp_min(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", help="photo folder of scripts/fetch_photos.py (optional)")
    parser.add_argument("--clips", type=int, default=24, help="training clips per kind (procedural, photo)")
    parser.add_argument("--gaps", default="2,4", help="MotionConfig.residual_gaps, comma-separated")
    parser.add_argument("--registry", default=str(REPO_REGISTRY))
    parser.add_argument("--write", action="store_true", help="set the motion head's params in --registry")
    args = parser.parse_args()
    gaps = tuple(int(g) for g in args.gaps.split(","))
    model = L4P.from_registry(
        args.registry, heads=["motion"], overrides=["heads.motion.params.matching=none"]
    )
    model.eval()
    photo = dict(
        textures=args.photos, photo_split="data/photos/split.json", camera_effects=True, camera_motion="mixed"
    )

    def kinds(split: str) -> dict[str, Synth4D]:
        out = {"procedural": Synth4D(split, **SIZE)}
        return out | ({"photo": Synth4D(split, **SIZE, **photo)} if args.photos else {})

    train = [gather(model, data, args.clips, gaps) for data in kinds("train").values()]
    x, y = torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    fitted = w.detach()
    val = {name: gather(model, data, max(4, args.clips // 3), gaps) for name, data in kinds("val").items()}

    def mean_iou(shift: float) -> float:
        return sum(iou(xv @ fitted + shift, yv) for xv, yv in val.values()) / len(val)

    shift = max((0.25 * k for k in range(9)), key=mean_iou)
    fusion = [round(float(v), 3) for v in fitted[:-1]] + [round(float(fitted[-1]) + shift, 3)]
    print(
        f"BCE fit on {len(y)} training pixels: {[round(float(v), 3) for v in fitted]}; bias moved by +{shift}"
    )
    print(f"fusion: {fusion}   (registry heads.motion.params.fusion, residual_gaps: {list(gaps)})")
    for name, (xv, yv) in val.items():
        fused = iou(xv @ torch.tensor(fusion, dtype=torch.float64), yv)
        print(f"val {name}: IoU decoder alone {iou(xv[:, 0], yv):.3f}, fused {fused:.3f}")
    if args.write:
        registry = load_registry(args.registry)
        registry.registry.heads["motion"].params.update(
            matching="shared", fusion=fusion, residual_gaps=list(gaps)
        )
        registry.save()
        print(f"wrote the motion head's matching, fusion and residual_gaps into {args.registry}")


if __name__ == "__main__":
    main()
