"""Camera motion of a window from the shared frame matching (`PoseConfig.matching = "shared"`).

Two-view and few-view geometry with OpenCV on the matching's flow at the input resolution, points
where the flow passes the round trip and the texture is confident:
- `window_motion` (used first): grid points of the window's first frame tracked through it, the focal
  length optionally self-calibrated on them; a homography per frame when one explains the window
  (a pan), else several two-view starts (essential matrix of frame 0 and a reference frame,
  triangulated points, every frame's pose by PnP on them), each refined on all frames, and the one
  that reprojects the tracks best wins. One wide baseline instead of many 1-pixel ones: on 240x320 synth4d
  the rotation error after 15 frames is 0.1-0.6 deg instead of 0.5-1.8 deg chained frame to frame.
- `pair_motion` (the fallback where the window fit fails): each pair (t-1, t) alone, a rotation-only
  homography when it leaves a median parallax below `ROTATION_ONLY_PARALLAX` pixels, else the
  essential matrix and `cv2.recoverPose`.
Translations come out at an arbitrary scale: their lengths come from the ray decoder (`PoseHead`).
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
CONSISTENT_PIXELS = 1.5
"""A triangulated point whose reprojection misses its track by more (or by twice the median miss, if
larger) in any frame of the window is left out of the refined poses (it moves in the scene, or its
track slipped)."""
REFERENCE_FRACTIONS = (0.33, 0.5, 0.67, 0.83, 1.0)
"""Where in the window (fractions of its usable frames) the two-view starts of `_window_fit` take their
reference frame."""
FIT_POINTS = 1000
"""At most this many tracks (evenly spread) enter the window fit: its five hypotheses cost time in
proportion."""
REFINE_ROUNDS = 3
"""Resection-intersection rounds (`_refine`) of the winning hypothesis; the others get one."""
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
    rot = _nearest_rotation(np.linalg.inv(K) @ H @ K)
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


def matched_window_poses(
    matches: MatchFeatures, K: torch.Tensor, decoder_poses: torch.Tensor, calibrate: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Poses (B, T, 4, 4) float64 of one window relative to its first camera, and K (B, T, 3, 3) float64.

    matches: the shared matching at the input resolution; K: (B, T, 3, 3) pixel intrinsics of that
    resolution; decoder_poses: (B, T, 4, 4) the ray solution. The window fit (`window_motion`, with
    the focal length self-calibrated when `calibrate`) gives the motion where it succeeds, the
    frame-pair fit (`pair_motion` + `compose_window`) elsewhere; both are scaled to the decoder's
    mean step length. K is returned calibrated (or as given).
    """
    motion, ok, K = window_motion(matches, K, calibrate)
    R, direction, _, pair_ok = pair_motion(matches, K)
    paired = compose_window(R, direction, pair_ok, decoder_poses.double().cpu())
    length = _mean_step(paired) / _mean_step(motion).clamp_min(1e-12)
    motion[:, :, :3, 3] *= length[:, None, None]
    return torch.where(ok[:, None, None, None], motion, paired), K


def _mean_step(poses: torch.Tensor) -> torch.Tensor:
    """Mean distance (B,) between consecutive camera centres of poses (B, T, 4, 4)."""
    return (poses[:, 1:, :3, 3] - poses[:, :-1, :3, 3]).norm(dim=-1).mean(1)


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


FOCAL_RANGE = (0.5, 2.0)
"""Self-calibration searches the focal length within these factors of the given one."""
FOCAL_STEPS = 61
"""Focal lengths tried (log-spaced) over `FOCAL_RANGE`."""
CALIBRATION_MIN_SIDE = 128
"""Frames with a shorter side keep the given focal length: on 64x64 synth4d clips the tracks are too
coarse (focal error 0.30 calibrated vs 0.20 from the ray decoder; 0.065 vs 0.19 at 240x320)."""


def window_motion(
    matches: MatchFeatures, K: torch.Tensor, calibrate: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera-to-first-camera poses of a whole window from points tracked through it (a small SfM).

    matches, K (B, T, 3, 3) as `pair_motion`. Grid points of frame 0 are chained through the window's
    forward flow (`chain_tracks`, stopped where the round trip fails). calibrate: first re-estimate
    the focal length (`self_calibrate`, a centred pinhole K) when the frames' shorter side has at
    least `CALIBRATION_MIN_SIDE` pixels. The last frame with enough tracks is the
    reference: when a rotation alone explains it (median parallax below `ROTATION_ONLY_PARALLAX`)
    every frame's rotation comes from its homography to frame 0 and nothing moves; else the essential
    matrix of (0, reference) gives triangulated points and each other frame's pose comes from PnP on
    them. Translations are at the reference pair's unit baseline.
    Returns poses (B, T, 4, 4) float64 (frame 0 the identity), ok (B,) bool (False: too few points or a
    failed fit; the caller keeps another estimate) and K (B, T, 3, 3) float64 as used (calibrated
    where it could be).
    """
    from l4p_framework.blocks.matching import chain_tracks

    b, _, t, h, w = matches.forward.shape
    step = max(1, int(np.sqrt(h * w / GRID_POINTS)))
    ys, xs = (torch.from_numpy(a.ravel()) for a in np.mgrid[step // 2 : h : step, step // 2 : w : step])
    grid = torch.stack([xs, ys], -1).float() + 0.5
    poses = torch.eye(4, dtype=torch.float64).repeat(b, t, 1, 1)
    ok = torch.zeros(b, dtype=torch.bool)
    K = K.double().cpu().clone()
    for i in range(b):
        start = grid[(matches.confidence[i, 0, 0, ys, xs] > CONFIDENCE).cpu()]
        if len(start) < MIN_POINTS or t < 2:
            continue
        device = matches.forward.device
        tracks, occluded = chain_tracks(
            matches.forward[i : i + 1],
            matches.backward[i : i + 1],
            start[None].to(device),
            torch.zeros(1, len(start), dtype=torch.long, device=device),
            matches.forward_occluded[i : i + 1],
            None,
        )
        tracks, seen = tracks[0].double().cpu().numpy(), ~occluded[0].cpu().numpy()
        if calibrate and min(h, w) >= CALIBRATION_MIN_SIDE:
            K[i] = torch.from_numpy(self_calibrate(tracks, seen, K[i].numpy(), (h, w)))
        fit = _window_fit(tracks, seen, K[i].numpy())
        if fit is not None:
            poses[i], ok[i] = torch.from_numpy(fit), True
    return poses, ok, K


def self_calibrate(tracks: np.ndarray, seen: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A pinhole K (T, 3, 3) whose focal length best explains tracks (P, T, 2) pixels seen (P, T).

    The model: square pixels, no skew, the principal point at the centre of the (H, W) = size frame
    (real and synth4d cameras are within a few percent of it; the ray decoder's estimate is not: cy =
    83 px for a 272-px high street clip). Every frame f pairs with frame 0: where the pair has parallax,
    its fundamental matrix F (RANSAC) gives an essential matrix K^T F K with two equal singular values;
    where a rotation alone explains it, its homography H gives a rotation K^-1 H K (three equal
    singular values). The focal length minimising the mean relative singular-value gap, searched over
    `FOCAL_RANGE` times the given one (sqrt(fx fy) of K[0]), wins. K stays as given without usable pairs.
    """
    import cv2

    h, w = size
    pinhole = np.array([[1.0, 0.0, w / 2], [0.0, 1.0, h / 2], [0.0, 0.0, 1.0]])
    pinhole[:2, :2] *= np.sqrt(K[0, 0, 0] * K[0, 1, 1])
    fundamentals, homographies = [], []
    for f in range(2, seen.shape[1]):
        keep = seen[:, f]
        if keep.sum() < 2 * MIN_POINTS:
            continue
        a, c = tracks[keep, 0], tracks[keep, f]
        if _rotation_only(a, c, pinhole) is not None:
            H, _ = cv2.findHomography(a, c, cv2.RANSAC, 1.0)
            if H is not None:
                homographies.append(H)
            continue
        F, _ = cv2.findFundamentalMat(a, c, cv2.FM_RANSAC, 0.5, 0.999)
        if F is not None and F.shape == (3, 3):
            fundamentals.append(F)
    if not fundamentals and not homographies:
        return K

    def scaled(scale: float) -> np.ndarray:
        out = pinhole.copy()
        out[:2, :2] *= scale
        return out

    def gap(scale: float) -> float:
        Ks = scaled(scale)
        gaps = []
        for F in fundamentals:
            s = np.linalg.svd(Ks.T @ F @ Ks, compute_uv=False)
            gaps.append((s[0] - s[1]) / s[0])
        for H in homographies:
            s = np.linalg.svd(np.linalg.inv(Ks) @ H @ Ks, compute_uv=False)
            gaps.append((s[0] - s[2]) / s[0])
        return float(np.mean(gaps))

    scales = np.exp(np.linspace(*np.log(FOCAL_RANGE), FOCAL_STEPS))
    best = float(scales[int(np.argmin([gap(float(x)) for x in scales]))])
    return np.broadcast_to(scaled(best), K.shape).copy()


def _window_fit(tracks: np.ndarray, seen: np.ndarray, K: np.ndarray) -> np.ndarray | None:
    """Poses (T, 4, 4) camera-to-frame-0 of one window from tracks (P, T, 2) pixels seen (P, T), or None.

    A pan (a homography explains frame 0 and each reference frame: `_homography_explains`) gets every
    frame's rotation from its homography to frame 0. Otherwise each frame at `REFERENCE_FRACTIONS` of the
    window is tried as the reference of a two-view start (`_reference_fit`): one pair can land in the
    mirror solution of the rotation-translation ambiguity (a sideways step taken for a turn the other
    way: 130 deg off on 240x320 synth4d windows) where another pair does not, and the window's tracks
    tell them apart. Every hypothesis is polished by `_refine`; the one whose multi-view triangulation
    reprojects the tracks seen in at least 3 frames with the smallest median error wins.
    """
    if len(seen) > FIT_POINTS:  # evenly spread over the grid
        subset = np.linspace(0, len(seen) - 1, FIT_POINTS).round().astype(int)
        tracks, seen = tracks[subset], seen[subset]
    t = seen.shape[1]
    usable = [f for f in range(1, t) if seen[:, f].sum() >= MIN_POINTS]
    if not usable:
        return None
    references = sorted(
        {usable[min(len(usable) - 1, round(q * len(usable)) - 1)] for q in REFERENCE_FRACTIONS}
    )
    if all(_homography_explains(tracks[seen[:, r], 0], tracks[seen[:, r], r]) for r in references):
        return _pan_fit(tracks, seen, K)  # (a camera that steps aside and back is no pan)
    hypotheses = [p for p in (_reference_fit(tracks, seen, K, r) for r in references) if p is not None]
    if not hypotheses:
        return None
    long = seen.sum(1) >= 3  # two views fit any point: only longer tracks can tell hypotheses apart
    tracks, seen = tracks[long], seen[long]
    hypotheses = [_refine(tracks, seen, K, p, rounds=1) for p in hypotheses]
    errors = [np.median(_multiview_errors(tracks, seen, K, p)[seen]) for p in hypotheses]
    return _refine(tracks, seen, K, hypotheses[int(np.argmin(errors))], rounds=REFINE_ROUNDS - 1)


def _homography_explains(before: np.ndarray, now: np.ndarray) -> bool:
    """Whether one homography (RANSAC) moves points before (P, 2) to now (P, 2) within a median of
    `ROTATION_ONLY_PARALLAX` pixels: no parallax, a rotation (or a planar scene). Unlike
    `_rotation_only` it needs no K, so a focal length off by 10 % does not turn a pan into a translation."""
    import cv2

    H, _ = cv2.findHomography(before, now, cv2.RANSAC, 1.0)
    if H is None:
        return False
    moved = np.concatenate([before, np.ones((len(before), 1))], -1) @ H.T
    return (
        float(np.median(np.linalg.norm(moved[:, :2] / moved[:, 2:3] - now, axis=-1))) < ROTATION_ONLY_PARALLAX
    )


def _pan_fit(tracks: np.ndarray, seen: np.ndarray, K: np.ndarray) -> np.ndarray | None:
    """Rotation-only poses (T, 4, 4): each frame's rotation from its homography to frame 0, or None."""
    import cv2

    poses = np.tile(np.eye(4), (seen.shape[1], 1, 1))
    for f in range(1, seen.shape[1]):
        keep = seen[:, f]
        if keep.sum() < MIN_POINTS:
            return None
        H = cv2.findHomography(tracks[keep, 0], tracks[keep, f], cv2.RANSAC, 1.0)[0]
        if H is None:
            return None
        poses[f, :3, :3] = _nearest_rotation(np.linalg.inv(K[f]) @ H @ K[0]).T
    return poses


def _reference_fit(tracks: np.ndarray, seen: np.ndarray, K: np.ndarray, reference: int) -> np.ndarray | None:
    """Poses (T, 4, 4) camera-to-frame-0 from the essential matrix of (0, reference), its triangulated
    points and PnP of every other frame on them; translations at the pair's unit baseline. None when
    the fit fails or explains fewer than MIN_INLIERS of the points."""
    import cv2

    keep = seen[:, reference]
    a, c = tracks[keep, 0], tracks[keep, reference]
    try:
        E, inliers = cv2.findEssentialMat(a, c, K[0], method=cv2.RANSAC, prob=0.999, threshold=1.0)
    except cv2.error:
        return None
    if E is None or E.shape != (3, 3) or inliers.mean() < MIN_INLIERS:
        return None
    _, rot, trans, _ = cv2.recoverPose(E, a, c, K[0], mask=inliers.copy())
    X = cv2.triangulatePoints(K[0] @ np.eye(3, 4), K[reference] @ np.concatenate([rot, trans], 1), a.T, c.T)
    X = (X[:3] / X[3:]).T  # (P', 3) in camera 0
    depth0, depth1 = X[:, 2], (X @ rot.T + trans[:, 0])[:, 2]
    good = (inliers[:, 0] > 0) & (depth0 > 0) & (depth1 > 0) & (depth0 < 50 * np.median(np.abs(depth0)))
    if good.sum() < MIN_POINTS:
        return None
    index = np.flatnonzero(keep)[good]
    start = (cv2.Rodrigues(rot)[0], trans.copy())
    return _poses_by_pnp(X[good], tracks[index], seen[index], K, reference, start)


def _multiview_errors(tracks: np.ndarray, seen: np.ndarray, K: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Reprojection errors (P, T) pixels (0 where not seen) of every track triangulated from all the
    frames that see it (linear DLT) with poses (T, 4, 4) camera-to-frame-0 and K (T, 3, 3)."""
    return _reprojection_errors(_triangulate(tracks, seen, K, poses), tracks, seen, K, poses)


def _triangulate(tracks: np.ndarray, seen: np.ndarray, K: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Points (P, 3) in frame-0 camera coordinates from tracks (P, T, 2) pixels seen (P, T) in cameras
    poses (T, 4, 4) camera-to-frame-0 with K (T, 3, 3): the linear multi-view DLT of every track in
    normalised image coordinates (the eigenvector of the smallest eigenvalue of A^T A, A its 2 rows
    per seen frame; points seen once come out arbitrary)."""
    pixels = np.concatenate([tracks, np.ones_like(tracks[..., :1])], -1)[..., None]  # (P, T, 3, 1)
    rays = (np.linalg.inv(K) @ pixels)[..., 0]  # (P, T, 3)
    world_to_camera = np.linalg.inv(poses)[:, :3]  # (T, 3, 4)
    rows = rays[..., :2, None] * world_to_camera[None, :, 2:3] - world_to_camera[None, :, :2]  # (P, T, 2, 4)
    rows = rearrange(rows * seen[..., None, None], "p t two four -> p (t two) four")
    X = np.linalg.eigh(rows.transpose(0, 2, 1) @ rows)[1][..., 0]  # (P, 4), eigenvalues ascending
    return X[:, :3] / np.where(np.abs(X[:, 3:]) > 1e-12, X[:, 3:], 1e-12)


def _refine(
    tracks: np.ndarray, seen: np.ndarray, K: np.ndarray, poses: np.ndarray, rounds: int
) -> np.ndarray:
    """`rounds` of resection-intersection: triangulate every track from all its frames, keep the
    tracks that reproject within max(CONSISTENT_PIXELS, twice the median error) in every frame (points
    that move in the scene fit two views but not the whole window), and re-solve each frame's pose by
    PnP on them, warm-started. Frames with too few such points keep their pose."""
    import cv2

    for _ in range(rounds):
        X = _triangulate(tracks, seen, K, poses)
        errors = _reprojection_errors(X, tracks, seen, K, poses)
        consistent = errors.max(1) < max(CONSISTENT_PIXELS, 2 * float(np.median(errors[seen])))
        refined = poses.copy()
        for f in range(1, seen.shape[1]):
            visible = consistent & seen[:, f]
            if visible.sum() < MIN_POINTS:
                continue
            world_to_camera = np.linalg.inv(poses[f])
            rvec, tvec = cv2.Rodrigues(world_to_camera[:3, :3])[0], world_to_camera[:3, 3:].copy()
            found, rvec, tvec = cv2.solvePnP(
                X[visible], tracks[visible, f], K[f], None, rvec, tvec, True, flags=cv2.SOLVEPNP_ITERATIVE
            )
            if found:
                rot_f = cv2.Rodrigues(rvec)[0]
                refined[f, :3, :3], refined[f, :3, 3] = rot_f.T, -rot_f.T @ tvec[:, 0]
        poses = refined
    return poses


def _poses_by_pnp(
    X: np.ndarray,
    tracks: np.ndarray,
    seen: np.ndarray,
    K: np.ndarray,
    reference: int,
    start: tuple,
) -> np.ndarray | None:
    """Camera-to-frame-0 poses (T, 4, 4) of points X (P, 3) (frame-0 camera coordinates) seen at tracks
    (P, T, 2) where seen (P, T), by RANSAC PnP frame after frame from the reference outwards (each frame warm-
    started at its neighbour, starting from start = (rvec, tvec) of the reference); None if one fails."""
    import cv2

    t = seen.shape[1]
    poses = np.tile(np.eye(4), (t, 1, 1))
    rvec, tvec = start
    for f in list(range(reference, 0, -1)) + list(range(reference + 1, t)):
        if f == reference + 1:
            rvec, tvec = (
                cv2.Rodrigues(poses[reference, :3, :3].T)[0],
                -poses[reference, :3, :3].T @ poses[reference, :3, 3:],
            )
        visible = seen[:, f]
        if visible.sum() < 6:
            return None
        found, rvec, tvec, _ = cv2.solvePnPRansac(
            *(X[visible], tracks[visible, f], K[f], None, rvec.copy(), tvec.copy(), True),
            iterationsCount=100,
            reprojectionError=2.0,
            flags=cv2.SOLVEPNP_ITERATIVE,
        )
        if not found:
            return None
        rot_f = cv2.Rodrigues(rvec)[0]
        poses[f, :3, :3], poses[f, :3, 3] = rot_f.T, -rot_f.T @ tvec[:, 0]
    return poses


def _reprojection_errors(
    X: np.ndarray, tracks: np.ndarray, seen: np.ndarray, K: np.ndarray, poses: np.ndarray
) -> np.ndarray:
    """Pixel distance (P, T) between tracks (P, T, 2) and points X (P, 3) projected with poses (T, 4, 4)
    camera-to-frame-0 and K (T, 3, 3); 0 where not seen."""
    world_to_camera = np.linalg.inv(poses)
    camera = np.einsum("tij,pj->pti", world_to_camera[:, :3, :3], X) + world_to_camera[None, :, :3, 3]
    pixels = np.einsum("tij,ptj->pti", K, camera)
    pixels = pixels[..., :2] / np.clip(pixels[..., 2:], 1e-9, None)
    return np.where(seen, np.linalg.norm(pixels - tracks, axis=-1), 0.0)


def _nearest_rotation(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M / np.cbrt(np.linalg.det(M)))
    return U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
