"""Flow EPE / Fl, motion IoU and normal angle metrics on hand-computed examples."""

import math

import pytest
import torch

from l4p_framework.errors import InputError
from l4p_framework.metrics import angular_error, flow_metrics, motion_iou, normal_metrics


def test_epe_on_known_constant_field():
    gt = torch.zeros(1, 2, 2, 3, 4)
    gt[:, 0, :, :, :2] = 200.0  # half of the pixels move fast: a 5 px error is < 5 % of 200 px
    pred = gt.clone()
    pred[:, 0] += 3.0
    pred[:, 1] += 4.0
    m = flow_metrics(pred, gt)
    assert m["epe"] == pytest.approx(5.0)
    assert m["epe<1"] == 0.0
    assert m["fl"] == pytest.approx(0.5)


def test_epe_mixed_errors_and_threshold_fraction():
    gt = torch.zeros(1, 2, 1, 1, 2)
    pred = torch.tensor([[0.5, 0.0], [0.0, 2.0]]).reshape(1, 2, 1, 1, 2)  # errors 0.5 and 2
    m = flow_metrics(pred, gt)
    assert m["epe"] == pytest.approx(1.25)
    assert m["epe<1"] == pytest.approx(0.5)
    assert m["fl"] == 0.0


def test_flow_valid_mask_shapes_and_frame_zero():
    gt = torch.zeros(1, 2, 3, 2, 2)
    pred = gt.clone()
    pred[:, :, 0] = 100.0  # frame 0 (undefined backward flow) is wrong
    valid = torch.ones(1, 1, 3, 2, 2, dtype=torch.bool)
    valid[:, :, 0] = False
    assert flow_metrics(pred, gt, valid)["epe"] == 0.0
    assert flow_metrics(pred, gt, valid[:, 0])["epe"] == 0.0  # (B, T, H, W) also accepted
    assert flow_metrics(pred[0], gt[0], valid[0])["epe"] == 0.0  # single sequence
    assert flow_metrics(pred, gt)["epe"] == pytest.approx(100 * math.sqrt(2) / 3)


def test_flow_per_sequence_average():
    gt = torch.zeros(2, 2, 1, 1, 4)
    pred = gt.clone()
    pred[0, 0] = 1.0  # EPE 1 everywhere in sequence 0, 0 in sequence 1
    valid = torch.ones(2, 1, 1, 1, 4, dtype=torch.bool)
    valid[1, ..., 1:] = False  # sequence 1 has a single valid pixel
    assert flow_metrics(pred, gt, valid, per_sequence=True)["epe"] == pytest.approx([1.0, 0.0])
    assert flow_metrics(pred, gt, valid)["epe"] == pytest.approx(0.5)


def test_flow_shape_error():
    with pytest.raises(InputError):
        flow_metrics(torch.zeros(1, 3, 1, 2, 2), torch.zeros(1, 3, 1, 2, 2))
    with pytest.raises(InputError):
        flow_metrics(
            torch.zeros(1, 2, 1, 2, 2),
            torch.zeros(1, 2, 1, 2, 2),
            torch.ones(1, 1, 1, 2, 3, dtype=torch.bool),
        )


def mask(values, shape=(1, 1, 1, 2, 2)):
    return torch.tensor(values, dtype=torch.float32).reshape(shape)


def test_iou_tiny_masks():
    logits = mask([5.0, 5.0, -5.0, -5.0])
    gt = mask([1, 0, 1, 0])
    assert motion_iou(logits, gt)["iou"] == pytest.approx(1 / 3)  # 1 shared / 3 in the union


def test_iou_accumulates_over_frames_not_per_frame():
    logits = mask([5, -5, -5, -5, -5, 5, 5, -5], (1, 1, 2, 2, 2))
    gt = mask([1, 0, 0, 0, 0, 0, 0, 0], (1, 1, 2, 2, 2))
    # frame 0 IoU 1, frame 1 IoU 0 (per-frame mean 0.5); accumulated: 1 / 3
    assert motion_iou(logits, gt)["iou"] == pytest.approx(1 / 3)


def test_iou_both_empty_is_one_and_threshold():
    assert motion_iou(mask([-1, -2, -3, -4]), mask([0, 0, 0, 0]))["iou"] == 1.0
    zero = mask([0.0, 0.0, 0.0, 0.0])  # sigmoid(0) = 0.5 is not > 0.5
    assert motion_iou(zero, mask([1, 1, 1, 1]))["iou"] == 0.0
    assert motion_iou(zero, mask([1, 1, 1, 1]), threshold=0.3)["iou"] == 1.0
    assert motion_iou(mask([1, 0, 0, 0]).bool(), mask([1, 1, 0, 0]))["iou"] == pytest.approx(0.5)


def test_iou_sequence_mean_and_valid():
    logits = torch.stack([mask([5, 5, -5, -5])[0], mask([5, -5, -5, -5])[0]])
    gt = torch.stack([mask([1, 1, 0, 0])[0], mask([1, 1, 0, 0])[0]])
    assert motion_iou(logits, gt, per_sequence=True)["iou"] == pytest.approx([1.0, 0.5])
    assert motion_iou(logits, gt)["iou"] == pytest.approx(0.75)
    valid = torch.stack([mask([1, 1, 1, 1])[0], mask([1, 0, 1, 1])[0]]).bool()
    assert motion_iou(logits, gt, valid)["iou"] == pytest.approx(1.0)


def normals_from_angles(degrees):
    a = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))
    pred = torch.stack([a.cos(), a.sin(), torch.zeros_like(a)]).reshape(1, 3, 1, 1, -1)
    gt = torch.zeros_like(pred)
    gt[:, 0] = 1.0
    return pred, gt


def test_angular_error_basic_angles():
    p = torch.tensor([[1.0, 0, 0], [1, 1, 0], [-1, 0, 0], [5, 0, 0], [0, 0, 0]]).T.reshape(3, 1, 1, 5)
    g = torch.tensor([[0.0, 1, 0], [1, 0, 0], [1, 0, 0], [2, 0, 0], [0, 0, 1]]).T.reshape(3, 1, 1, 5)
    ang = angular_error(p, g).flatten()
    assert ang.tolist() == pytest.approx([90.0, 45.0, 180.0, 0.0, 90.0])


def test_normal_metrics_statistics():
    pred, gt = normals_from_angles([0.0, 10.0, 20.0, 45.0, 90.0])
    m = normal_metrics(pred * 3.0, gt)  # lengths do not matter
    assert m["mean_angle"] == pytest.approx(33.0)
    assert m["median_angle"] == pytest.approx(20.0)
    assert m["within_11.25"] == pytest.approx(0.4)
    assert m["within_22.5"] == pytest.approx(0.6)
    assert m["within_30"] == pytest.approx(0.6)
    pred, gt = normals_from_angles([0.0, 10.0, 20.0, 90.0])
    assert normal_metrics(pred, gt)["median_angle"] == pytest.approx(15.0)


def test_normal_metrics_masks_invalid_gt():
    pred, gt = normals_from_angles([0.0, 90.0, 60.0])
    gt[..., 2] = 0.0  # no GT normal here
    valid = torch.tensor([True, False, True]).reshape(1, 1, 1, 1, 3)
    m = normal_metrics(pred, gt, valid)
    assert m["mean_angle"] == pytest.approx(0.0, abs=1e-9)
    assert m["within_11.25"] == 1.0
    per = normal_metrics(pred, torch.zeros_like(gt), per_sequence=True)
    assert math.isnan(per["mean_angle"][0])
