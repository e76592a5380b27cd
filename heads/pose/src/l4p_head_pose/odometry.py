"""Frame-to-frame camera motion from the shared frame matching (`PoseConfig.matching = "shared"`).

Two-view geometry with OpenCV on the matching's backward flow at the input resolution: for each
pair (t-1, t), points on a grid where the flow passes the round trip and the texture is confident.
First a rotation alone (the rotation nearest K^-1 H K, H a RANSAC homography): when it leaves a
median parallax below `ROTATION_ONLY_PARALLAX` pixels the translation is not observable and is zero
(a pan, a tripod; the essential matrix would be degenerate). Otherwise the essential matrix
(RANSAC, `cv2.findEssentialMat`) and `cv2.recoverPose` give the rotation and the direction of the
translation.
Translations are unit directions: their lengths come from the ray decoder (`PoseHead`).
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from l4p_framework.matching import MatchFeatures

GRID_POINTS = 1600
"""About this many grid points per frame pair (fewer where the matching is unreliable)."""
MIN_POINTS = 12
"""Pairs with fewer usable points keep the decoder's motion."""
CONFIDENCE = 0.2
"""Texture confidence a point needs (`MatchFeatures.confidence`)."""
ROTATION_ONLY_PARALLAX = 0.3
"""Median parallax (pixels) below which a pair counts as rotation only (no translation)."""
MIN_INLIERS = 0.5
"""Fraction of the points the essential matrix must explain for the pair to count."""
MAX_STEP_DEG = 10.0
"""Larger rotations between consecutive frames are taken as a failed fit (the decoder's motion stays)."""


def pair_motion(
    matches: MatchFeatures, K: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Relative motion of every consecutive frame pair of a window.

    matches: the shared matching at the input resolution (H, W); K: (B, T, 3, 3) pixel intrinsics of
    that resolution (+0.5 pixel-centre convention). Returns, for t = 1..T-1 (index 0 unused):
    R (B, T, 3, 3) and direction (B, T, 3) with X_t = R X_{t-1} + s * direction for points X in
    camera coordinates and an unknown length s >= 0 (direction zero for rotation-only pairs),
    parallax (B, T) median pixels of the pair's parallax, and ok (B, T) bool (enough points: the
    result is meaningful).
    """

    b, _, t, h, w = matches.backward.shape
    R = torch.eye(3, dtype=torch.float64).repeat(b, t, 1, 1)
    direction = torch.zeros(b, t, 3, dtype=torch.float64)
    parallax = torch.zeros(b, t, dtype=torch.float64)
    ok = torch.zeros(b, t, dtype=torch.bool)
    step = max(1, int(np.sqrt(h * w / GRID_POINTS)))
    ys, xs = (torch.from_numpy(a.ravel()) for a in np.mgrid[step // 2 : h : step, step // 2 : w : step])
    current = torch.stack([xs, ys], -1).double().numpy() + 0.5  # (P, 2) pixel centres
    flow = rearrange(matches.backward[..., ys, xs], "b c t p -> b t p c").double().cpu().numpy()
    confident = matches.confidence[:, 0][..., ys, xs] > CONFIDENCE
    usable = (confident & ~matches.backward_occluded[:, 0][..., ys, xs]).cpu().numpy()  # (B, T, P)
    K64 = K.double().cpu().numpy()
    for i in range(b):
        for f in range(1, t):
            keep = usable[i, f]
            if keep.sum() < MIN_POINTS:
                continue
            now, before, k = current[keep], current[keep] + flow[i, f, keep], K64[i, f]
            motion = _rotation_only(before, now, k) or _essential(before, now, k)
            if motion is None:
                continue
            rot, trans, parallax[i, f] = motion
            R[i, f], direction[i, f], ok[i, f] = torch.from_numpy(rot), torch.from_numpy(trans), True
    return R, direction, parallax, ok


def _rotation_only(before: np.ndarray, now: np.ndarray, K: np.ndarray) -> tuple | None:
    """(R, zero translation, parallax) when a rotation alone explains the pair (its infinite homography
    leaves a median parallax below ROTATION_ONLY_PARALLAX pixels), else None."""
    import cv2

    H, _ = cv2.findHomography(before, now, cv2.RANSAC, 1.0)
    if H is None:
        return None
    M = np.linalg.inv(K) @ H @ K
    U, _, Vt = np.linalg.svd(M / np.cbrt(np.linalg.det(M)))
    rot = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt  # nearest rotation
    parallax = float(np.median(np.linalg.norm(_rotate_pixels(before, rot, K) - now, axis=-1)))
    if parallax >= ROTATION_ONLY_PARALLAX or _angle_deg(rot) > MAX_STEP_DEG:
        return None
    return rot, np.zeros(3), parallax


def _essential(before: np.ndarray, now: np.ndarray, K: np.ndarray) -> tuple | None:
    """(R, unit translation, parallax) from the essential matrix (RANSAC), or None when the fit fails,
    explains fewer than MIN_INLIERS of the points or turns by more than MAX_STEP_DEG."""
    import cv2

    try:
        E, inliers = cv2.findEssentialMat(before, now, K, method=cv2.RANSAC, prob=0.999, threshold=1.0)
    except cv2.error:  # degenerate point sets (e.g. exact pure rotation)
        return None
    if E is None or E.shape != (3, 3) or inliers.mean() < MIN_INLIERS:
        return None
    _, rot, trans, _ = cv2.recoverPose(E, before, now, K, mask=inliers.copy())
    if _angle_deg(rot) > MAX_STEP_DEG:
        return None
    parallax = float(np.median(np.linalg.norm(_rotate_pixels(before, rot, K) - now, axis=-1)))
    return rot, trans[:, 0] / max(np.linalg.norm(trans), 1e-12), parallax


def _angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def _rotate_pixels(pixels: np.ndarray, R: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Where pixels (P, 2) of frame t-1 land in frame t under rotation R alone (infinite homography)."""
    H = K @ R @ np.linalg.inv(K)
    homog = np.concatenate([pixels, np.ones((len(pixels), 1))], -1) @ H.T
    return homog[:, :2] / homog[:, 2:3]


def compose_window(
    R: torch.Tensor, direction: torch.Tensor, ok: torch.Tensor, decoder_poses: torch.Tensor
) -> torch.Tensor:
    """Camera-to-world poses (B, T, 4, 4) of a window relative to its first frame, from `pair_motion`.

    Each step's rotation and translation direction come from the matching; its length is the
    decoder's mean step length over the window (decoder_poses (B, T, 4, 4), the ray solution: its
    step lengths are noisy, their mean is not). Pairs without enough points (ok False) keep the
    decoder's relative motion.
    """
    b, t = R.shape[:2]
    dec = decoder_poses.double()
    steps = torch.linalg.inv(dec[:, :-1]) @ dec[:, 1:]  # (B, T-1, 4, 4): camera f in camera f-1
    length = steps[:, :, :3, 3].norm(dim=-1).mean(1)  # (B,)
    poses = torch.eye(4, dtype=torch.float64).repeat(b, t, 1, 1)
    for f in range(1, t):
        step = steps[:, f - 1]
        # X_f = R X_{f-1} + s d  <=>  camera f in camera f-1: rotation R^T, centre -R^T s d.
        rel = torch.eye(4, dtype=torch.float64).repeat(b, 1, 1)
        rel[:, :3, :3] = R[:, f].transpose(1, 2)
        rel[:, :3, 3] = -(R[:, f].transpose(1, 2) @ (length[:, None] * direction[:, f])[..., None])[..., 0]
        rel = torch.where(ok[:, f, None, None], rel, step)
        poses[:, f] = poses[:, f - 1] @ rel
    return poses.to(decoder_poses.dtype)
