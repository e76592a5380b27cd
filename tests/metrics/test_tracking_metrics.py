"""TAP-Vid 2D and TAPVid-3D metrics on hand-computed examples."""

import math

import pytest
import torch

from l4p_framework.errors import InputError
from l4p_framework.metrics import tapvid3d_metrics, tapvid_metrics


def tracks_2d(b=1, n=3, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, t, 2, generator=g, dtype=torch.float64) * 100


def test_perfect_tracks_score_one():
    gt = tracks_2d()
    vis = torch.rand(1, 3, 6, generator=torch.Generator().manual_seed(1)) > 0.3
    q = torch.zeros(1, 3, dtype=torch.long)
    for mode in ("first", "strided"):
        m = tapvid_metrics(gt.clone(), vis.clone(), gt, vis, q, (100, 100), query_mode=mode)
        assert m["aj"] == m["oa"] == m["delta_avg"] == 1.0


def test_constant_3px_displacement_threshold_fractions():
    # 512 x 128 image: 6 px in x at the original resolution are 3 px at 256 x 256
    gt = tracks_2d()
    pred = gt.clone()
    pred[..., 0] += 6.0
    vis = torch.ones(1, 3, 6, dtype=torch.bool)
    q = torch.zeros(1, 3, dtype=torch.long)
    m = tapvid_metrics(pred, vis, gt, vis, q, (128, 512))
    assert [m[f"pts_within_{d}"] for d in (1, 2, 4, 8, 16)] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert m["delta_avg"] == pytest.approx(0.6)
    assert m["aj"] == pytest.approx(0.6)  # beyond = FP + FN: Jaccard 0; within: 1
    assert m["oa"] == 1.0
    # the same 3 px in y on a 256-high image
    pred = gt.clone()
    pred[..., 1] += 3.0
    assert tapvid_metrics(pred, vis, gt, vis, q, (256, 64))["delta_avg"] == pytest.approx(0.6)
    # exactly on the threshold is not within (strict)
    pred = gt.clone()
    pred[..., 0] += 4.0
    assert tapvid_metrics(pred, vis, gt, vis, q, (256, 256))["pts_within_4"] == 0.0


def test_flipping_visibility_changes_oa_by_k_over_m():
    gt = tracks_2d(n=2, t=5)
    vis = torch.ones(1, 2, 5, dtype=torch.bool)
    q = torch.tensor([[0, 2]])  # mode "first": 4 + 2 = 6 evaluated pairs
    pv = vis.clone()
    pv[0, 0, 3] = False
    pv[0, 1, 4] = False  # 2 evaluated pairs flipped
    assert tapvid_metrics(gt, pv, gt, vis, q, (64, 64))["oa"] == pytest.approx(4 / 6)
    pv[0, 1, 1] = False  # before the query frame: not evaluated
    pv[0, 1, 2] = False  # the query frame itself: not evaluated in either mode
    assert tapvid_metrics(gt, pv, gt, vis, q, (64, 64))["oa"] == pytest.approx(4 / 6)
    # strided: every frame but the query frame -> 8 pairs, 3 flipped (frame 1 of point 1 counts now)
    assert tapvid_metrics(gt, pv, gt, vis, q, (64, 64), query_mode="strided")["oa"] == pytest.approx(5 / 8)


def test_query_frame_exclusion_first_and_strided():
    gt = tracks_2d(n=1, t=5)
    vis = torch.ones(1, 1, 5, dtype=torch.bool)
    q = torch.tensor([[2]])
    pred = gt.clone()
    pred[0, 0, :3] += 50.0  # wrong before and at the query frame
    assert tapvid_metrics(pred, vis, gt, vis, q, (64, 64), "first")["delta_avg"] == 1.0
    # strided evaluates frames 0, 1, 3, 4: two of four are wrong
    assert tapvid_metrics(pred, vis, gt, vis, q, (64, 64), "strided")["delta_avg"] == pytest.approx(0.5)
    pred = gt.clone()
    pred[0, 0, 2] += 50.0  # wrong only at the query frame
    assert tapvid_metrics(pred, vis, gt, vis, q, (64, 64), "strided")["delta_avg"] == 1.0


def test_jaccard_hand_example():
    # one point, query frame 0; frames 1..4 evaluated (image 256 x 256, so pixels are unscaled)
    gt = torch.zeros(1, 1, 5, 2, dtype=torch.float64) + 100
    pred = gt.clone()
    pred[0, 0, 4, 0] += 3.0
    gv = torch.tensor([[[True, True, True, False, True]]])
    pv = torch.tensor([[[True, True, False, True, True]]])
    m = tapvid_metrics(pred, pv, gt, gv, torch.tensor([[0]]), (256, 256))
    # frame 1 TP; frame 2 FN; frame 3 FP; frame 4 TP if d > 3 else FP + FN
    assert m["jaccard_1"] == pytest.approx(1 / 5) and m["jaccard_2"] == pytest.approx(1 / 5)
    assert m["jaccard_4"] == pytest.approx(2 / 4)
    assert m["aj"] == pytest.approx((2 * 0.2 + 3 * 0.5) / 5)
    assert m["pts_within_1"] == pytest.approx(2 / 3) and m["pts_within_8"] == 1.0
    assert m["delta_avg"] == pytest.approx((2 * 2 / 3 + 3) / 5)
    assert m["oa"] == pytest.approx(0.5)


def test_per_video_average_and_query_valid():
    gt = tracks_2d(b=2, n=4, t=4)
    vis = torch.ones(2, 4, 4, dtype=torch.bool)
    q = torch.zeros(2, 4, dtype=torch.long)
    qv = torch.ones(2, 4, dtype=torch.bool)
    qv[1, 1:] = False  # video 1 has a single real query, the others are padding
    pred = gt.clone()
    pred[1] += 100.0  # video 1 entirely wrong (padding included)
    per = tapvid_metrics(pred, vis, gt, vis, q, (64, 64), query_valid=qv, per_sequence=True)
    assert per["delta_avg"] == pytest.approx([1.0, 0.0])
    m = tapvid_metrics(pred, vis, gt, vis, q, (64, 64), query_valid=qv)
    assert m["delta_avg"] == pytest.approx(0.5)  # mean over videos, not pooled over points (would be 0.8)
    # padding garbage does not count
    pred[1, 1:] = -1e3
    assert tapvid_metrics(pred, vis, gt, vis, q, (64, 64), query_valid=qv)["delta_avg"] == pytest.approx(0.5)


def test_video_without_visible_points_is_skipped():
    gt = tracks_2d(b=2, n=1, t=3)
    vis = torch.ones(2, 1, 3, dtype=torch.bool)
    vis[1] = False
    q = torch.zeros(2, 1)
    per = tapvid_metrics(gt, vis, gt, vis, q, (64, 64), per_sequence=True)
    assert math.isnan(per["delta_avg"][1]) and per["oa"][1] == 1.0
    assert tapvid_metrics(gt, vis, gt, vis, q, (64, 64))["delta_avg"] == 1.0


def test_float_query_times_round_half_to_even_and_unbatched():
    gt = tracks_2d(n=2, t=5)[0]
    vis = torch.ones(2, 5, dtype=torch.bool)
    pred = gt.clone()
    pred[0, 3] += 50.0  # evaluated only if the query frame of point 0 is below 3
    pred[1, 4] += 50.0  # evaluated only if the query frame of point 1 is below 4
    q = torch.tensor([2.5, 3.5])  # -> 2 and 4
    m = tapvid_metrics(pred, vis, gt, vis, q, (64, 64))
    assert m["delta_avg"] == pytest.approx(0.5)  # point 0: frames 3, 4 (one wrong); point 1: none
    assert m == tapvid_metrics(pred[None], vis[None], gt[None], vis[None], q[None], (64, 64))


def test_tracking_input_errors():
    gt = tracks_2d()
    vis = torch.ones(1, 3, 6, dtype=torch.bool)
    q = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(InputError):
        tapvid_metrics(gt, vis.float(), gt, vis, q, (64, 64))
    with pytest.raises(InputError):
        tapvid_metrics(gt, vis, gt, vis, q + 6, (64, 64))
    with pytest.raises(InputError):
        tapvid_metrics(gt, vis, gt, vis, q, (64, 64), query_mode="all")
    with pytest.raises(InputError):
        tapvid_metrics(gt[..., :1], vis, gt[..., :1], vis, q, (64, 64))


# ---- TAPVid-3D


AT_256 = (256, 256)  # intrinsics of a 256 x 256 frame: TAPVid-3D's thresholds use them unscaled


def tracks_3d(b=1, n=4, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(b, n, t, 3, generator=g, dtype=torch.float64) - 0.5
    xyz[..., 2] += 3.0
    return xyz


def test_3d_perfect_and_scale_invariant():
    gt = tracks_3d()
    vis = torch.ones(1, 4, 5, dtype=torch.bool)
    f = torch.tensor([[100.0, 100.0]])
    for pred in (gt.clone(), gt * 0.5):
        m = tapvid3d_metrics(pred, vis, gt, vis, f, image_size=AT_256)
        assert m["apd3d"] == pytest.approx(1.0) and m["aj3d"] == pytest.approx(1.0) and m["oa"] == 1.0
    assert tapvid3d_metrics(gt * 0.5, vis, gt, vis, f, scale="none", image_size=AT_256)["apd3d"] == 0.0


def test_3d_depth_adaptive_thresholds():
    gt = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    gt[..., 2] = torch.tensor([2.0, 4.0, 2.0])  # fx = fy = 100: 1 px is 0.02 at z = 2, 0.04 at z = 4
    pred = gt.clone()
    pred[..., 0] += 0.05  # 2.5 px at z = 2, 1.25 px at z = 4
    vis = torch.ones(1, 1, 3, dtype=torch.bool)
    m = tapvid3d_metrics(pred, vis, gt, vis, torch.tensor([[100.0, 100.0]]), scale="none", image_size=AT_256)
    assert m["pts_within_1"] == 0.0
    assert m["pts_within_2"] == pytest.approx(1 / 3)
    assert m["pts_within_4"] == 1.0
    assert m["apd3d"] == pytest.approx((0 + 1 / 3 + 3) / 5)


def test_3d_query_frame_is_evaluated():
    gt = tracks_3d(n=1, t=4)
    vis = torch.ones(1, 1, 4, dtype=torch.bool)
    pv = vis.clone()
    pv[0, 0, 0] = False  # wrong visibility at the query frame
    pred = gt.clone()
    pred[0, 0, 0, 0] += 1.0  # and wrong position
    m = tapvid3d_metrics(
        pred, pv, gt, vis, torch.tensor([[500.0, 500.0]]), query_frames=torch.tensor([[0]]), image_size=AT_256
    )
    assert m["oa"] == pytest.approx(3 / 4)
    assert m["apd3d"] == pytest.approx(3 / 4)


def test_3d_median_scale_is_ratio_of_median_norms():
    # norms |gt| = 1, 2, 3 and |pred| = 2, 4, 3: median(|gt|) / median(|pred|) = 2 / 3 (no point lands
    # on its GT), whereas the median of per-point ratios (0.5) would make two points exact
    gt = torch.zeros(1, 3, 1, 3, dtype=torch.float64)
    gt[..., 2] = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1)
    pred = torch.zeros_like(gt)
    pred[..., 2] = torch.tensor([2.0, 4.0, 3.0]).view(1, 3, 1)
    vis = torch.ones(1, 3, 1, dtype=torch.bool)
    f = torch.tensor([[1000.0, 1000.0]])
    assert tapvid3d_metrics(pred, vis, gt, vis, f, image_size=AT_256)["apd3d"] == 0.0
    assert (
        tapvid3d_metrics(pred * 1.5, vis, gt, vis, f, scale="none", image_size=AT_256)["pts_within_16"] == 0.0
    )


def test_3d_median_scale_uses_pairs_visible_in_both():
    # GT depths 1, 2, 3, 1.5; predicted 1, 1, 1.5 and a wild 1000 on the point hidden in the prediction.
    # Co-visible: median(1, 2, 3) / median(1, 1, 1.5) = 2 -> points 1 and 2 land exactly on GT.
    # Were the hidden point used, the factor would be 1.75 / 1.25 and no point would land.
    gt = torch.zeros(1, 4, 1, 3, dtype=torch.float64)
    gt[..., 2] = torch.tensor([1.0, 2.0, 3.0, 1.5]).view(1, 4, 1)
    pred = torch.zeros_like(gt)
    pred[..., 2] = torch.tensor([1.0, 1.0, 1.5, 1000.0]).view(1, 4, 1)
    pv = torch.tensor([[[True], [True], [True], [False]]])
    gv = torch.ones(1, 4, 1, dtype=torch.bool)
    m = tapvid3d_metrics(pred, pv, gt, gv, torch.tensor([[1000.0, 1000.0]]), image_size=AT_256)
    assert m["pts_within_16"] == pytest.approx(2 / 4)
    assert m["jaccard_16"] == pytest.approx(2 / 5)  # TP 2, FP 1 (point 0), FN 2 (points 0 and 3)


def test_3d_per_trajectory_scale():
    gt = tracks_3d(n=2, t=3)
    pred = gt * torch.tensor([0.5, 3.0], dtype=torch.float64).view(1, 2, 1, 1)
    vis = torch.ones(1, 2, 3, dtype=torch.bool)
    q = torch.tensor([[0, 2]])
    m = tapvid3d_metrics(
        pred, vis, gt, vis, torch.tensor([[100.0, 100.0]]), q, scale="per_trajectory", image_size=AT_256
    )
    assert m["apd3d"] == pytest.approx(1.0)
    with pytest.raises(InputError):
        tapvid3d_metrics(
            pred, vis, gt, vis, torch.tensor([[100.0, 100.0]]), scale="per_trajectory", image_size=AT_256
        )


def test_3d_intrinsics_formats_agree():
    gt = tracks_3d(b=2, t=3)
    g = torch.Generator().manual_seed(3)
    pred = gt + 0.02 * torch.randn(gt.shape, generator=g, dtype=torch.float64)
    vis = torch.rand(2, 4, 3, generator=g) > 0.2
    fx, fy = torch.tensor([150.0, 300.0]), torch.tensor([120.0, 310.0])
    k = torch.zeros(2, 3, 3)
    k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = fx, fy, 32.0, 32.0, 1.0
    ref = tapvid3d_metrics(pred, vis, gt, vis, torch.stack([fx, fy], 1), image_size=AT_256)
    assert ref["apd3d"] not in (0.0, 1.0)
    for intr in (torch.stack([fx, fy, fx * 0 + 32, fy * 0 + 32], 1), k, k[:, None].expand(2, 3, 3, 3)):
        assert tapvid3d_metrics(pred, vis, gt, vis, intr, image_size=AT_256) == pytest.approx(ref)
    single = tapvid3d_metrics(pred[0], vis[0], gt[0], vis[0], k[0], image_size=AT_256)
    assert single == pytest.approx(
        tapvid3d_metrics(pred[:1], vis[:1], gt[:1], vis[:1], k[:1], image_size=AT_256)
    )
    with pytest.raises(InputError):
        tapvid3d_metrics(pred, vis, gt, vis, torch.ones(2, 5), image_size=AT_256)


def test_3d_no_covisible_pair_counts_as_beyond():
    gt = tracks_3d(n=2, t=2)
    gv = torch.ones(1, 2, 2, dtype=torch.bool)
    pv = torch.zeros(1, 2, 2, dtype=torch.bool)
    m = tapvid3d_metrics(gt.clone(), pv, gt, gv, torch.tensor([[100.0, 100.0]]), image_size=AT_256)
    assert m["apd3d"] == 0.0 and m["aj3d"] == 0.0 and m["oa"] == 0.0


def test_non_finite_positions_are_never_within():
    gt = tracks_2d(n=1, t=3)
    vis = torch.ones(1, 1, 3, dtype=torch.bool)
    pred = gt.clone()
    pred[0, 0, 1] = float("nan")
    gt_nan = gt.clone()
    gt_nan[0, 0, 2] = float("inf")  # e.g. an occluded GT point stored as inf
    gv = vis.clone()
    gv[0, 0, 2] = False
    m = tapvid_metrics(pred, vis, gt_nan, gv, torch.zeros(1, 1), (64, 64))
    assert m["delta_avg"] == 0.0  # the only GT-visible evaluated pair has a NaN prediction
    assert m["oa"] == pytest.approx(0.5)


# -- TAPVid-3D protocol: thresholds from focal lengths at a 256-pixel short side, NaN-skipping median --

ERRORS_256PX = torch.tensor([0.5, 1.5, 3.0, 6.0, 12.0], dtype=torch.float64)  # per frame, 256-px pixels
# within 1, 2, 4, 8, 16 px: k = 1..5 of 5 frames; all visible, so Jaccard = k / (k + 2 (5 - k))
AJ_256 = sum(k / (10 - k) for k in range(1, 6)) / 5
APD_256 = sum(k / 5 for k in range(1, 6)) / 5


def _one_point_with_errors(scene_per_px: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One point at z = 2 over 5 frames, predicted off in x by ERRORS_256PX 256-px pixels."""
    gt = torch.zeros(1, 1, 5, 3, dtype=torch.float64)
    gt[..., 2] = 2.0
    pred = gt.clone()
    pred[0, 0, :, 0] += ERRORS_256PX * scene_per_px
    return pred, gt, torch.ones(1, 1, 5, dtype=torch.bool)


@pytest.mark.parametrize(
    ("size", "focal", "aj_at_input_resolution"),
    [
        # 64x64, f = 64: at 256 px f' = 256 and 1 px = z / f' = 2 / 256; at 64 px, 1 px = 2 / 64 = 4x
        # looser: the errors are 0.125 ... 3 input pixels, within 1, 2, 4, 8, 16 px: 3, 4, 5, 5, 5 of 5
        ((64, 64), 64.0, (3 / 7 + 4 / 6 + 1 + 1 + 1) / 5),
        # 480x640, f = 500: f' = 500 * 256 / 480 and 1 px = 2 * 480 / (500 * 256) = 0.0075; at 480 px,
        # 1 px = 2 / 500 (tighter): the errors are 0.9375 ... 22.5 input pixels, within: 1, 1, 2, 3, 4 of 5
        ((480, 640), 500.0, (1 / 9 + 1 / 9 + 2 / 8 + 3 / 7 + 4 / 6) / 5),
    ],
)
def test_3d_thresholds_use_focal_lengths_at_256px_short_side(size, focal, aj_at_input_resolution):
    scene_per_px = 2.0 / (focal * 256 / min(size))
    pred, gt, vis = _one_point_with_errors(scene_per_px)
    k = torch.tensor([[focal, focal, size[1] / 2, size[0] / 2]])
    m = tapvid3d_metrics(pred, vis, gt, vis, k, scale="none", image_size=size)
    assert m["aj3d"] == pytest.approx(AJ_256, abs=1e-12)
    assert m["apd3d"] == pytest.approx(APD_256, abs=1e-12)
    assert [m[f"pts_within_{d}"] for d in (1, 2, 4, 8, 16)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    # focal lengths that the 256-px rescaling maps back to the input's give the input-resolution
    # thresholds (what the metric computed before it followed the protocol): 4x looser at 64x64,
    # 1.875x tighter at 480x640
    loose = tapvid3d_metrics(pred, vis, gt, vis, k * min(size) / 256, scale="none", image_size=size)
    assert loose["aj3d"] == pytest.approx(aj_at_input_resolution, abs=1e-12)
    assert abs(aj_at_input_resolution - AJ_256) > 0.1


def test_3d_median_scale_skips_nan_ground_truth():
    # GT depths 1, 2, 3 and a NaN point; predicted 2, 4, 6, 4. nanmedian(|gt|) = 2, median(|pred|) = 4:
    # factor 0.5 puts the three finite points exactly on GT; the NaN point is GT-visible and never
    # within. (Were NaN sorted and counted, the median of |gt| would be 2.5 and nothing would land.)
    gt = torch.zeros(1, 4, 1, 3, dtype=torch.float64)
    gt[..., 2] = torch.tensor([1.0, 2.0, 3.0, math.nan]).view(1, 4, 1)
    gt[0, 3, 0, 0] = math.nan
    pred = torch.zeros_like(gt)
    pred[..., 2] = torch.tensor([2.0, 4.0, 6.0, 4.0]).view(1, 4, 1)
    vis = torch.ones(1, 4, 1, dtype=torch.bool)
    m = tapvid3d_metrics(pred, vis, gt, vis, torch.tensor([[1000.0, 1000.0]]), image_size=AT_256)
    assert m["pts_within_1"] == pytest.approx(3 / 4)
    assert m["aj3d"] == pytest.approx(3 / 5)  # TP 3, FP 1 and FN 1 (the NaN point)


def test_3d_median_scale_skips_nan_predictions():
    # GT 1, 2, 3, 2; predicted 2, 4, 6 and NaN: nanmedian(|pred|) = 4, median(|gt|) = 2 -> factor 0.5.
    # (Had NaN become 0, as a nan_to_num would make it, the median would be 3 and nothing would land.)
    gt = torch.zeros(1, 4, 1, 3, dtype=torch.float64)
    gt[..., 2] = torch.tensor([1.0, 2.0, 3.0, 2.0]).view(1, 4, 1)
    pred = torch.zeros_like(gt)
    pred[..., 2] = torch.tensor([2.0, 4.0, 6.0, math.nan]).view(1, 4, 1)
    vis = torch.ones(1, 4, 1, dtype=torch.bool)
    m = tapvid3d_metrics(pred, vis, gt, vis, torch.tensor([[1000.0, 1000.0]]), image_size=AT_256)
    assert m["apd3d"] == pytest.approx(3 / 4)
    assert m["aj3d"] == pytest.approx(3 / 5)


def test_3d_image_size_is_required_and_checked():
    pred, gt, vis = _one_point_with_errors(0.01)
    with pytest.raises(TypeError):
        tapvid3d_metrics(pred, vis, gt, vis, torch.tensor([[100.0, 100.0]]))
    with pytest.raises(InputError, match="image_size"):
        tapvid3d_metrics(pred, vis, gt, vis, torch.tensor([[100.0, 100.0]]), image_size=(0, 64))
