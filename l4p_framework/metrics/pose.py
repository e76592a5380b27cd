"""Camera pose metrics: ATE and RPE after Sim(3) Umeyama alignment (data-and-metrics.md §2).

Protocol: evo (Grupp 2017) ``evo_ape`` / ``evo_rpe`` with ``--align --correct_scale`` (Umeyama 1991
Sim(3) on the camera centres of every frame), RPE with delta = 1 frame over every consecutive pair,
translation part in GT units and rotation angle in degrees, reported as RMSE (and mean).

Poses are camera-to-world 4x4 (translation = camera centre). The prediction is aligned to GT once per
sequence by Umeyama with scale on the camera centres; ATE is the RMSE of the aligned centres; RPE
compares consecutive-frame relative motions (delta = 1, every pair) as the evo package does:
E_i = (Q_i^-1 Q_{i+1})^-1 (P_i^-1 P_{i+1}) with Q = GT and P = aligned prediction; RPE-trans = |t(E_i)|
(scene units of GT), RPE-rot = rotation angle of E_i in degrees; reported as RMSE and mean over pairs.
Batched input (B, T, 4, 4) is aligned and scored per sequence and the B values are averaged;
``per_sequence=True`` returns the per-sequence lists instead (as the other metrics in this package).
"""

from __future__ import annotations

import torch

from ..errors import InputError, check_tensor
from ..geometry.camera import invert_pose, rotation_angle
from ..geometry.sim3 import align_poses_sim3

__all__ = ["ate", "rpe", "pose_metrics", "align_trajectory"]


def _as_batch(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("pred", pred, "(T, 4, 4) or (B, T, 4, 4)")
    check_tensor("gt", gt, "(T, 4, 4) or (B, T, 4, 4)")
    if pred.shape != gt.shape or pred.ndim not in (3, 4) or pred.shape[-2:] != (4, 4):
        raise InputError(
            f"pred and gt must have the same shape (T, 4, 4) or (B, T, 4, 4), got {tuple(pred.shape)} and "
            f"{tuple(gt.shape)}"
        )
    if pred.ndim == 3:
        pred, gt = pred.unsqueeze(0), gt.unsqueeze(0)
    if pred.shape[1] < 2:
        raise InputError(f"pose metrics need at least 2 frames, got T = {pred.shape[1]}")
    return pred.double(), gt.double()


def align_trajectory(pred: torch.Tensor, gt: torch.Tensor, with_scale: bool = True) -> torch.Tensor:
    """Prediction moved onto GT by the Umeyama Sim(3) (or SE(3) without scale) of the camera centres.

    pred, gt: (T, 4, 4) or (B, T, 4, 4) camera-to-world. Returns the aligned pred, same shape, float64.
    """
    unbatched = pred.ndim == 3
    p, g = _as_batch(pred, gt)
    aligned, _ = align_poses_sim3(p, g, with_scale=with_scale)
    return aligned[0] if unbatched else aligned


def _ate_per_seq(aligned: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    err = (aligned[..., :3, 3] - gt[..., :3, 3]).norm(dim=-1)
    return (err * err).mean(-1).sqrt()


def _rpe_per_seq(aligned: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
    rel_p = invert_pose(aligned[:, :-1]) @ aligned[:, 1:]
    rel_q = invert_pose(gt[:, :-1]) @ gt[:, 1:]
    err = invert_pose(rel_q) @ rel_p
    trans = err[..., :3, 3].norm(dim=-1)
    rot = torch.rad2deg(rotation_angle(err[..., :3, :3]))
    return {
        "rpe_trans_rmse": (trans * trans).mean(-1).sqrt(),
        "rpe_trans_mean": trans.mean(-1),
        "rpe_rot_rmse_deg": (rot * rot).mean(-1).sqrt(),
        "rpe_rot_mean_deg": rot.mean(-1),
    }


def _reduce(v: torch.Tensor, per_sequence: bool) -> float | list[float]:
    return v.tolist() if per_sequence else float(v.mean())


def ate(pred: torch.Tensor, gt: torch.Tensor, per_sequence: bool = False) -> float | list[float]:
    """Absolute trajectory error: RMSE of camera centres after Sim(3) alignment of pred to GT.

    pred, gt: (T, 4, 4) or (B, T, 4, 4) camera-to-world (T >= 2). Returns GT scene units (mean over B,
    or the B values with per_sequence).
    """
    p, g = _as_batch(pred, gt)
    aligned, _ = align_poses_sim3(p, g)
    return _reduce(_ate_per_seq(aligned, g), per_sequence)


def rpe(pred: torch.Tensor, gt: torch.Tensor, per_sequence: bool = False) -> dict[str, float | list[float]]:
    """Relative pose error between consecutive frames after the same Sim(3) alignment (evo-style).

    pred, gt: (T, 4, 4) or (B, T, 4, 4) camera-to-world. Returns {"rpe_trans_rmse", "rpe_trans_mean"}
    in GT scene units and {"rpe_rot_rmse_deg", "rpe_rot_mean_deg"} in degrees (each averaged over B,
    or per-sequence lists with per_sequence).
    """
    p, g = _as_batch(pred, gt)
    aligned, _ = align_poses_sim3(p, g)
    return {k: _reduce(v, per_sequence) for k, v in _rpe_per_seq(aligned, g).items()}


def pose_metrics(
    pred: torch.Tensor, gt: torch.Tensor, per_sequence: bool = False
) -> dict[str, float | list[float]]:
    """ATE and RPE in one dict: {"ate", "rpe_trans_rmse", "rpe_trans_mean", "rpe_rot_rmse_deg",
    "rpe_rot_mean_deg", "sim3_scale"} (sim3_scale: the alignment scale, mean over B).

    pred, gt: (T, 4, 4) or (B, T, 4, 4) camera-to-world; per_sequence: lists of B values instead of means.
    """
    p, g = _as_batch(pred, gt)
    aligned, (s, _, _) = align_poses_sim3(p, g)
    out = {"ate": _reduce(_ate_per_seq(aligned, g), per_sequence)}
    out.update({k: _reduce(v, per_sequence) for k, v in _rpe_per_seq(aligned, g).items()})
    out["sim3_scale"] = _reduce(s, per_sequence)
    return out
