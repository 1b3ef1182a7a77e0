"""The registered metrics on hand-computed samples."""
import numpy as np
import pytest
import torch

from smilfit.evaluation import (KeypointPCKMetric, MPJPEMetric, ReprojectionErrorMetric,
                                SilhouetteIoUMetric)
from smilfit.evaluation.metrics import resolve_joint_weights
from smilfit.registry import METRICS

from .helpers import JOINT_NAMES, toy_2d_sample, similarity


def run(metric, samples):
    metric.process(None, samples)
    return metric.compute_metrics(metric.results)


def test_pck_toy_hand_computed():
    metric = KeypointPCKMetric(thresholds_px=(5, 10, 20), normalized_thresholds=(0.3, 0.5),
                               joint_names=JOINT_NAMES)
    out = run(metric, [toy_2d_sample()])
    # Valid errors 3, 5, 12 px; bbox = extent of the visible gt (0,0)-(10,10) -> 10 px.
    assert out['pck@5px'] == pytest.approx(2 / 3)
    assert out['pck@10px'] == pytest.approx(2 / 3)
    assert out['pck@20px'] == 1
    assert out['pck@0.3bbox'] == pytest.approx(1 / 3)
    assert out['pck@0.5bbox'] == pytest.approx(2 / 3)
    assert out['num_keypoints'] == 3 and out['num_samples'] == 1
    # AUC over 1..50 px: PCK is 0 below 3, 1/3 on [3, 5), 2/3 on [5, 12), 1 from 12.
    curve = np.array([0, 0] + [1 / 3] * 2 + [2 / 3] * 7 + [1] * 39)
    expected_auc = np.trapezoid(curve, np.arange(1, 51)) / 49 if hasattr(np, 'trapezoid') \
        else np.trapz(curve, np.arange(1, 51)) / 49
    assert out['pck_auc@1-50px'] == pytest.approx(expected_auc)
    assert out['per_joint/nose/pck@10px'] == 1 and out['per_joint/tail/pck@10px'] == 0
    assert np.isnan(out['per_joint/paw/pck@10px'])               # never visible
    assert out['per_camera/cam0/pck@10px'] == pytest.approx(2 / 3)
    raw = metric.last_raw
    assert raw['errors_px'].shape == (1, 1, 5) and raw['valid'].sum() == 3
    np.testing.assert_allclose(raw['pck_curve'], curve)


def test_pck_given_bbox_and_ignored_and_weighted_joints():
    sample = toy_2d_sample(bbox=np.array([[0, 0, 100, 40]]))       # size 100
    out = run(KeypointPCKMetric(normalized_thresholds=(0.05,)), [sample])
    assert out['pck@0.05bbox'] == pytest.approx(2 / 3)           # 3, 5 <= 5 < 12
    # 'tail' (12 px) ignored by name: both remaining joints are within 5 px.
    out = run(KeypointPCKMetric(ignore_joints=('tail',), joint_names=JOINT_NAMES), [sample])
    assert out['pck@5px'] == 1 and out['num_keypoints'] == 2
    assert 'per_joint/tail/pck@10px' not in out
    # Weight 0 is the same as ignoring; weight 2 doubles a joint's share.
    out = run(KeypointPCKMetric(joint_weights=[1, 1, 0, 1, 1]), [sample])
    assert out['pck@5px'] == 1
    out = run(KeypointPCKMetric(joint_weights=dict(joint2=2.0)), [sample])
    assert out['pck@5px'] == pytest.approx(2 / 4)


def test_joint_names_from_dataset_meta_and_bad_config():
    metric = KeypointPCKMetric(ignore_joints=('ear',))
    metric.dataset_meta = dict(keypoint_names=JOINT_NAMES)
    out = run(metric, [toy_2d_sample()])
    assert out['pck@5px'] == pytest.approx(1 / 2) and 'per_joint/nose/pck@10px' in out
    with pytest.raises(ValueError, match="'elbow' is not a joint name"):
        run(KeypointPCKMetric(ignore_joints=('elbow',), joint_names=JOINT_NAMES),
            [toy_2d_sample()])
    with pytest.raises(ValueError, match='every joint'):
        resolve_joint_weights(['a', 'b'], ignore_joints=(0, 'b'))
    with pytest.raises(ValueError, match='3 values for 2 joints'):
        resolve_joint_weights(['a', 'b'], joint_weights=[1, 1, 1])
    with pytest.raises(ValueError, match='>= 0'):
        resolve_joint_weights(['a', 'b'], joint_weights=[1, -1])


def test_nonfinite_predictions_raise_or_count_as_misses():
    sample = toy_2d_sample(sample_idx=7)
    sample['pred_keypoints_2d'][0, 0] = np.nan
    with pytest.raises(ValueError, match=r'sample_idx=7.*pred_keypoints_2d is not finite'):
        KeypointPCKMetric().process(None, [sample])
    out = run(KeypointPCKMetric(nonfinite_pred='miss'), [sample])
    assert out['pck@5px'] == pytest.approx(1 / 3) and out['num_keypoints'] == 3
    out = run(ReprojectionErrorMetric(nonfinite_pred='miss'), [sample])
    assert np.isinf(out['mean'])


def test_missing_and_misshapen_inputs_are_named():
    with pytest.raises(KeyError, match='gt_keypoints_2d'):
        KeypointPCKMetric().process(None, [dict(pred_keypoints_2d=np.zeros((1, 3, 2)))])
    bad = toy_2d_sample(visible=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match='visible has shape'):
        KeypointPCKMetric().process(None, [bad])
    with pytest.raises(ValueError, match='pred_keypoints_3d'):
        MPJPEMetric().process(None, [dict(pred_keypoints_3d=np.zeros((4, 2)),
                                          gt_keypoints_3d=np.zeros((4, 3)))])
    with pytest.raises(ValueError, match='alignments'):
        MPJPEMetric(alignments=('pa',))


def test_reprojection_error_per_camera():
    two_views = toy_2d_sample()
    gt = two_views['gt_keypoints_2d'][0]
    second_pred = gt + np.array([[1., 0], [0, 2], [np.nan, np.nan], [0, 0], [0, 0]])
    second_vis = np.array([True, True, False, False, False])     # errors 1, 2
    sample = dict(pred_keypoints_2d=np.stack([two_views['pred_keypoints_2d'][0], second_pred]),
                  gt_keypoints_2d=np.stack([gt, gt]),
                  visible=np.stack([two_views['visible'][0], second_vis]),
                  camera_names=['left', 'right'])
    metric = ReprojectionErrorMetric(percentiles=(50, 100))
    out = run(metric, [sample])
    assert out['mean'] == pytest.approx((3 + 5 + 12 + 1 + 2) / 5)
    assert out['median'] == 3 and out['p100'] == 12
    assert out['per_camera/left/mean'] == pytest.approx(20 / 3)
    assert out['per_camera/left/median'] == 5
    assert out['per_camera/right/mean'] == pytest.approx(1.5)
    assert out['per_camera/right/median'] == pytest.approx(1.5)
    assert out['per_joint/joint0/mean'] == pytest.approx(2)       # (3 + 1) / 2
    assert out['per_joint/joint1/median'] == pytest.approx(3.5)   # (5 + 2) / 2
    assert metric.last_raw['camera_names'].tolist() == ['left', 'right']


def test_views_padded_when_samples_differ_in_view_count():
    one = toy_2d_sample(camera_names=['left'])
    two = dict(pred_keypoints_2d=np.repeat(one['pred_keypoints_2d'], 2, 0),
               gt_keypoints_2d=np.repeat(one['gt_keypoints_2d'], 2, 0),
               visible=np.repeat(one['visible'], 2, 0), camera_names=['left', 'right_long'])
    metric = ReprojectionErrorMetric()
    out = run(metric, [one, two])
    assert out['num_keypoints'] == 9
    assert metric.last_raw['camera_labels'].tolist() == [['left', ''], ['left', 'right_long']]
    assert out['per_camera/right_long/mean'] == pytest.approx(20 / 3)


def test_mpjpe_alignments_hand_computed():
    gt = np.array([[0., 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10], [np.nan] * 3])
    # Translated by (1, 0, 0) with joint 3 further off by 4 along z: raw errors
    # 1, 1, 1, sqrt(17); root-aligned 0, 0, 4 (root itself excluded).
    pred = gt + np.array([1., 0, 0])
    pred[3, 2] += 4
    pred[4] = 0.0
    metric = MPJPEMetric(percentiles=(50, 100), units='mm',
                         joint_names=['root', 'a', 'b', 'c', 'd'])
    out = run(metric, [dict(pred_keypoints_3d=torch.tensor(pred), gt_keypoints_3d=gt)])
    assert out['mpjpe'] == pytest.approx((3 + np.sqrt(17)) / 4)
    assert out['mpjpe_p100'] == pytest.approx(np.sqrt(17))
    assert out['mpjpe_root'] == pytest.approx(4 / 3)
    assert out['mpjpe_root_num_keypoints'] == 3 and out['mpjpe_num_keypoints'] == 4
    assert out['per_joint/c/mpjpe_root'] == pytest.approx(4)
    assert 0 < out['pa_mpjpe'] < out['mpjpe_root']
    assert 'per_joint/root/mpjpe_root' not in out and 'per_joint/root/mpjpe' in out
    assert metric.last_raw['units'] == 'mm'
    # Joint weights: 'c' counts twice in the mean, not in the percentiles.
    out = run(MPJPEMetric(percentiles=(100,), joint_weights=dict(c=2.0), units='mm',
                          joint_names=['root', 'a', 'b', 'c', 'd']),
              [dict(pred_keypoints_3d=pred, gt_keypoints_3d=gt)])
    assert out['mpjpe'] == pytest.approx((3 + 2 * np.sqrt(17)) / 5)
    assert out['mpjpe_p100'] == pytest.approx(np.sqrt(17))


def test_pa_mpjpe_zero_for_a_similarity_and_scale_units():
    rng = np.random.default_rng(3)
    gts = rng.normal(size=(3, 6, 3))
    samples = [dict(pred_keypoints_3d=similarity(g, 1.7, 0.4 * i, [1, 1, 0], [i, 0, 2])[0],
                    gt_keypoints_3d=g) for i, g in enumerate(gts)]
    out = run(MPJPEMetric(scale=1000.0), samples)
    assert out['pa_mpjpe'] < 1e-6 and out['mpjpe'] > 100
    assert out['pa_mpjpe_num_samples'] == 3
    # Root given by name; a weight-0 joint is left out of the fit and of every mean.
    g = gts[0]
    pred = g.copy()
    pred[5] += 100.0
    out = run(MPJPEMetric(root_index='j1', joint_names=[f'j{i}' for i in range(6)],
                          joint_weights=[1, 1, 1, 1, 1, 0]),
              [dict(pred_keypoints_3d=pred, gt_keypoints_3d=g)])
    assert out['mpjpe'] == 0 and out['pa_mpjpe'] < 1e-9 and out['mpjpe_root'] == 0


def test_pa_mpjpe_skips_samples_with_too_few_joints():
    gt = np.array([[0., 0, 0], [1, 0, 0], [np.nan] * 3])
    good = np.array([[0., 0, 0], [1, 0, 0], [0, 1, 0]])
    out = run(MPJPEMetric(alignments=('procrustes',)),
              [dict(pred_keypoints_3d=gt + 1, gt_keypoints_3d=gt),
               dict(pred_keypoints_3d=good * 2, gt_keypoints_3d=good)])
    assert out['pa_mpjpe_num_samples'] == 1 and out['pa_mpjpe'] < 1e-9
    assert out['num_samples'] == 2


def test_silhouette_metric():
    pred = np.zeros((2, 4, 4), np.float32)
    gt = np.zeros((2, 4, 4), bool)
    pred[0, :2, :2] = 0.9
    gt[0, :2, :3] = True                      # view 0: IoU 4/6; view 1: both empty
    second = dict(pred_masks=gt.copy(), gt_masks=gt.copy(), mask_valid=[True, True])
    metric = SilhouetteIoUMetric(camera_names=['a', 'b'])
    out = run(metric, [dict(pred_masks=pred, gt_masks=gt), second])
    assert out['num_views'] == 2
    assert out['iou'] == pytest.approx((4 / 6 + 1) / 2)
    assert out['per_camera/a/iou'] == pytest.approx((4 / 6 + 1) / 2)
    assert np.isnan(out['per_camera/b/iou'])
    out = run(SilhouetteIoUMetric(), [dict(second, mask_valid=[False, True])])
    assert np.isnan(out['iou']) and out['num_views'] == 0
    with pytest.raises(ValueError, match=r'sample 0 of the batch.*same shape'):
        SilhouetteIoUMetric().process(None, [dict(pred_masks=pred[:, :3], gt_masks=gt)])


def test_registered_and_built_from_config():
    for name in ('KeypointPCKMetric', 'MPJPEMetric', 'ReprojectionErrorMetric',
                 'SilhouetteIoUMetric'):
        metric = METRICS.build(dict(type=name, prefix='x'))
        assert type(metric).__name__ == name and metric.prefix == 'x'


def test_units_from_dataset_meta():
    metric = MPJPEMetric(alignments=('none',))
    metric.dataset_meta = dict(units='m')
    run(metric, [dict(pred_keypoints_3d=np.zeros((3, 3)), gt_keypoints_3d=np.ones((3, 3)))])
    assert str(metric.last_raw['units']) == 'm'
    assert MPJPEMetric().resolved_units == 'unknown'


def test_missing_prediction_policies():
    # The regressors predict NaN for data keypoints no model keypoint matches.
    gt = np.array([[0., 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    pred = gt + np.array([1., 0, 0])
    pred[2] = np.nan
    sample = dict(pred_keypoints_3d=pred, gt_keypoints_3d=gt, sample_idx=4,
                  keypoint_names=['a', 'b', 'c', 'd'])
    with pytest.raises(ValueError, match=r'sample_idx=4.*pred_keypoints_3d.*ignore_joints'):
        MPJPEMetric().process(None, [sample])
    out = run(MPJPEMetric(ignore_joints=('c',)), [sample])   # names from the samples
    assert out['mpjpe'] == pytest.approx(1) and out['num_missing_predictions'] == 0
    out = run(MPJPEMetric(nonfinite_pred='ignore'), [sample])
    assert out['mpjpe'] == pytest.approx(1) and out['mpjpe_num_keypoints'] == 3
    assert out['pa_mpjpe'] < 1e-9 and out['num_missing_predictions'] == 1
    assert np.isinf(run(MPJPEMetric(nonfinite_pred='miss'), [sample])['mpjpe'])
    sample2d = toy_2d_sample()
    sample2d['pred_keypoints_2d'][0, 2] = np.nan                 # the 12 px joint
    out = run(KeypointPCKMetric(nonfinite_pred='ignore'), [sample2d])
    assert out['pck@5px'] == 1 and out['num_keypoints'] == 2
    assert out['num_missing_predictions'] == 1
    out = run(KeypointPCKMetric(ignore_joints=(2,)), [sample2d])  # no error: ignored joint
    assert out['num_missing_predictions'] == 0 and out['pck@5px'] == 1


def test_errors_in_the_source_images_pixels_through_each_views_crop():
    """Crops of different sizes (a zoom of 4 in one view, 0.5 in the other, shifted) give
    errors in their own pixels; with pixels='source' they are the recording's pixels."""
    one = toy_2d_sample()                       # errors 3, 5, 12 px in the input
    crops = np.stack([np.array([[4.0, 0, -100], [0, 4.0, -60], [0, 0, 1]]),
                      np.array([[0.5, 0, 10], [0, 0.5, 20], [0, 0, 1]])])
    sample = dict(pred_keypoints_2d=np.repeat(one['pred_keypoints_2d'], 2, 0),
                  gt_keypoints_2d=np.repeat(one['gt_keypoints_2d'], 2, 0),
                  visible=np.repeat(one['visible'], 2, 0), crop=crops,
                  camera_names=['zoomed', 'wide'])
    inputs = run(ReprojectionErrorMetric(), [sample])
    source = run(ReprojectionErrorMetric(pixels='source'), [sample])
    assert inputs['per_camera/zoomed/mean'] == inputs['per_camera/wide/mean'] == \
        pytest.approx(20 / 3)
    assert source['per_camera/zoomed/mean'] == pytest.approx(20 / 3 / 4)
    assert source['per_camera/wide/mean'] == pytest.approx(20 / 3 * 2)
    # PCK thresholds count in source pixels: 3, 5, 12 px become 0.75, 1.25, 3 and 6, 10, 24
    pck = run(KeypointPCKMetric(thresholds_px=(5,), pixels='source'), [sample])
    assert pck['pck@5px'] == pytest.approx(3 / 6)
    with pytest.raises(ValueError, match="needs the views' crop"):
        run(ReprojectionErrorMetric(pixels='source'), [toy_2d_sample()])
    with pytest.raises(ValueError, match='pixels must be one of'):
        ReprojectionErrorMetric(pixels='crop')
