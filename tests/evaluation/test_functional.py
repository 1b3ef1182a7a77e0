"""Pure functions: errors, PCK, AUC, bbox sizes, Procrustes, root alignment, IoU."""
import numpy as np
import pytest
import torch

from smilfit.evaluation.functional import (bbox_sizes, curve_auc, joint_errors_3d,
                                           keypoint_errors, masked_percentiles, pck_at,
                                           pck_curve, procrustes_align, root_align,
                                           silhouette_iou, weighted_mean)
from smilfit.evaluation.functional.statistics import per_column_percentile

from .helpers import GT_2D, OFFSETS_2D, VISIBLE, similarity


def test_keypoint_errors_excludes_invisible_and_missing():
    errors, valid = keypoint_errors(GT_2D + OFFSETS_2D, GT_2D, VISIBLE)
    assert valid.tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(errors[:3], [3, 5, 12])
    assert np.isnan(errors[3:]).all()


def test_keypoint_errors_nonfinite_prediction_is_inf_not_dropped():
    pred = GT_2D + OFFSETS_2D
    pred[1] = np.nan
    errors, valid = keypoint_errors(torch.tensor(pred), GT_2D, VISIBLE)
    assert valid[1] and np.isinf(errors[1])


def test_pck_inclusive_thresholds_and_weights():
    errors = np.array([3., 5., 12., np.nan])
    valid = np.array([True, True, True, False])
    assert pck_at(errors, valid, 5) == pytest.approx(2 / 3)      # 5 <= 5 counts
    assert pck_at(errors, valid, 4.99) == pytest.approx(1 / 3)
    assert pck_at(errors, valid, 20) == 1.0
    # Weight 2 on the 12 px joint, 0 on the 3 px joint: (1 * 1) / (1 + 2).
    assert pck_at(errors, valid, 5, weights=[0, 1, 2, 1]) == pytest.approx(1 / 3)
    assert np.isnan(pck_at(errors, np.zeros(4, bool), 5))        # nothing valid


def test_pck_inf_error_is_a_miss():
    assert pck_at(np.array([1., np.inf]), np.array([True, True]), 10) == 0.5


def test_pck_curve_axes_and_normalisation():
    errors = np.array([[1., 4.], [2., 8.]])                     # (views, joints)
    valid = np.ones((2, 2), bool)
    per_joint = pck_curve(errors, valid, [2, 5], axis=0)         # (joints, T)
    np.testing.assert_allclose(per_joint, [[1, 1], [0, 0.5]])
    norm = np.array([[10.], [np.nan]])                           # view 1 has no size
    np.testing.assert_allclose(pck_at(errors, valid, 0.2, norm=norm), 0.5)   # 1/10, 4/10


def test_auc_of_a_step_distribution():
    thresholds = np.arange(1, 51, dtype=float)
    errors = np.full(100, 10.5)                                  # PCK: 0 up to 10, 1 from 11
    curve = pck_curve(errors, np.ones(100, bool), thresholds)
    assert curve[9] == 0 and curve[10] == 1
    assert curve_auc(thresholds, curve) == pytest.approx((0.5 + 39) / 49)
    assert curve_auc(thresholds, np.ones(50)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match='increase'):
        curve_auc([1, 1, 2], [0, 0, 1])


def test_bbox_sizes_from_boxes_and_keypoints():
    boxes = np.array([[0, 0, 30, 40], [10, 10, 10, 10]], float)
    np.testing.assert_allclose(bbox_sizes(bboxes=boxes)[0], 40)
    assert np.isnan(bbox_sizes(bboxes=boxes)[1])                  # zero size: undefined
    assert bbox_sizes(bboxes=boxes, mode='diagonal')[0] == pytest.approx(50)
    assert bbox_sizes(bboxes=boxes, mode='sqrt_area')[0] == pytest.approx(np.sqrt(1200))
    # Extent of the visible, finite keypoints only: (0,0), (10,0), (0,10) -> 10.
    assert bbox_sizes(keypoints=GT_2D, valid=VISIBLE) == pytest.approx(10)
    assert np.isnan(bbox_sizes(keypoints=GT_2D[:1]))            # one point: undefined
    with pytest.raises(ValueError, match='x1 >= x0'):
        bbox_sizes(bboxes=[[5, 0, 0, 5]])
    with pytest.raises(ValueError, match='mode'):
        bbox_sizes(bboxes=boxes, mode='area')


def test_procrustes_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(12, 3))
    pred, rot = similarity(gt, 2.5, 0.7, [1, 2, 3], [4, -1, 2])
    result = procrustes_align(pred, gt)
    np.testing.assert_allclose(result.aligned, gt, atol=1e-10)
    assert result.scale == pytest.approx(1 / 2.5)
    np.testing.assert_allclose(result.rotation, rot.T, atol=1e-10)
    errors, valid = joint_errors_3d(pred, gt, alignment='procrustes')
    assert valid.all() and np.nanmax(errors) < 1e-9


def test_procrustes_batched_masked_and_no_reflection():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(3, 8, 3))
    pred = np.stack([similarity(g, s, a, [0, 0, 1], [1, 2, 3])[0]
                     for g, s, a in zip(gt, [0.5, 1, 3], [0.1, 2, -1])])
    pred[0, 7] += 50.0                  # an outlier left out of the fit by the mask
    mask = np.ones((3, 8), bool)
    mask[0, 7] = False
    result = procrustes_align(pred, gt, mask=mask)
    np.testing.assert_allclose(result.aligned[:, :7], gt[:, :7], atol=1e-9)
    assert np.linalg.norm(result.aligned[0, 7] - gt[0, 7]) > 1   # transformed, still off
    mirrored = gt[1] * np.array([-1, 1, 1])
    reflected = procrustes_align(mirrored, gt[1])
    assert np.linalg.det(reflected.rotation) == pytest.approx(1)
    assert np.abs(reflected.aligned - gt[1]).max() > 0.1          # a mirror is not undone


def test_procrustes_needs_three_points():
    gt = np.array([[0., 0, 0], [1, 0, 0], [np.nan] * 3, [np.nan] * 3])
    result = procrustes_align(gt + 1, gt)
    assert not result.ok and np.isnan(result.aligned).all()
    errors, valid = joint_errors_3d(gt + 1, gt, alignment='procrustes')
    assert not valid.any() and np.isnan(errors).all()
    # Enough ground truth but an unusable prediction: a miss (inf), not excluded.
    gt3 = np.array([[0., 0, 0], [1, 0, 0], [0, 1, 0]])
    errors, valid = joint_errors_3d(np.full((3, 3), np.nan), gt3, alignment='procrustes')
    assert valid.all() and np.isinf(errors).all()


def test_root_alignment_drops_root_and_samples_without_root():
    gt = np.array([[[0., 0, 0], [1, 0, 0], [0, 2, 0]],
                   [[np.nan] * 3, [1, 0, 0], [0, 2, 0]]])
    pred = gt + np.array([5., 0, 0])                             # a pure translation
    pred[0, 2] += [0, 0, 3]
    np.testing.assert_allclose(root_align(gt[0], 0)[2], [0, 2, 0])
    errors, valid = joint_errors_3d(pred, gt, alignment='root', root_index=0)
    assert valid.tolist() == [[False, True, True], [False, False, False]]
    np.testing.assert_allclose(errors[0, 1:], [0, 3])
    errors, valid = joint_errors_3d(pred, gt, alignment='none')
    np.testing.assert_allclose(errors[0], [5, 5, np.sqrt(34)])
    with pytest.raises(ValueError, match='alignment'):
        joint_errors_3d(pred, gt, alignment='rigid')


def test_silhouette_iou_hand_computed():
    pred = np.zeros((3, 4, 4), bool)
    gt = np.zeros((3, 4, 4), bool)
    pred[0, :2, :2] = True                                        # 4 pixels
    gt[0, :2, :3] = True                                          # 6 pixels, 4 shared
    gt[1, 3, 3] = True                                            # no overlap
    result = silhouette_iou(pred, gt)
    np.testing.assert_allclose(result.iou[:2], [4 / 6, 0])
    assert np.isnan(result.iou[2])                                # both empty
    assert result.intersection.tolist() == [4, 0, 0] and result.union.tolist() == [6, 1, 0]
    soft = silhouette_iou(pred * 0.9, torch.tensor(gt, dtype=torch.float32) * 0.7)
    np.testing.assert_allclose(soft.iou[:2], [4 / 6, 0])
    with pytest.raises(ValueError, match='same'):
        silhouette_iou(pred, gt[:, :3])


def test_weighted_mean_and_percentiles():
    values = np.array([[1., 2., np.nan], [3., np.inf, 5.]])
    valid = np.array([[True, True, False], [True, False, True]])
    assert weighted_mean(values, valid) == pytest.approx((1 + 2 + 3 + 5) / 4)
    assert weighted_mean(values, valid, weights=[1, 0, 3]) == pytest.approx((1 + 3 + 15) / 5)
    np.testing.assert_allclose(weighted_mean(values, valid, axis=0), [2, 2, 5])
    np.testing.assert_allclose(masked_percentiles(values, valid, [0, 50, 100]), [1, 2.5, 5])
    assert np.isinf(weighted_mean(values, np.ones_like(valid)))  # a miss is not hidden
    np.testing.assert_allclose(per_column_percentile(values, valid, 50), [2, 2, 5])


def test_percentiles_rank_misses_above_everything():
    values = np.array([1., 2., 3., np.inf])
    valid = np.ones(4, bool)
    out = masked_percentiles(values, valid, [0, 50, 100])
    assert out[0] == 1 and out[1] == pytest.approx(2.5) and np.isinf(out[2])
    np.testing.assert_allclose(per_column_percentile(values[:, None], valid[:, None], 100),
                               [np.inf])


def test_pck_curve_matches_brute_force():
    rng = np.random.default_rng(5)
    errors = rng.integers(0, 12, size=(6, 3, 4)).astype(float)   # integer errors: ties
    errors[0, 0, 0] = np.inf
    valid = rng.random((6, 3, 4)) > 0.2
    weights = np.array([1.0, 0.0, 2.0, 0.5])
    thresholds = np.array([7.0, 1.0, 3.0, 11.0])                  # unsorted on purpose
    w = np.where(valid, weights, 0.0)
    with np.errstate(invalid='ignore'):            # joint 1 has weight 0: NaN expected
        expected = np.stack([(w * (errors <= t)).sum((0, 1)) / w.sum((0, 1))
                             for t in thresholds], axis=-1)
    np.testing.assert_allclose(pck_curve(errors, valid, thresholds, weights, axis=(0, 1)),
                               expected)
    total = np.stack([(w * (errors <= t)).sum() / w.sum() for t in thresholds])
    np.testing.assert_allclose(pck_curve(errors, valid, thresholds, weights), total)
