"""End to end through mmengine's Evaluator, as a Runner's val/test loop uses it."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator

from smilfit.evaluation import collect_raw
from smilfit.utils import register_all_modules

NUM_SAMPLES, NUM_VIEWS, NUM_JOINTS = 10, 2, 4


def fake_samples():
    """Predictions off by exactly 2 px in x (every keypoint) and 3 units in z (every joint);
    view 1 of even samples is invisible; torch tensors as a model would return."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(NUM_SAMPLES):
        gt2d = rng.uniform(0, 100, (NUM_VIEWS, NUM_JOINTS, 2))
        visible = np.ones((NUM_VIEWS, NUM_JOINTS), bool)
        if i % 2 == 0:
            visible[1] = False
        gt3d = rng.normal(size=(NUM_JOINTS, 3)) * 10
        masks = np.zeros((NUM_VIEWS, 8, 8), bool)
        masks[:, 2:6, 2:6] = True
        samples.append(dict(
            pred_keypoints_2d=torch.tensor(gt2d + [2.0, 0.0], requires_grad=True),
            gt_keypoints_2d=torch.tensor(gt2d), visible=torch.tensor(visible),
            pred_keypoints_3d=torch.tensor(gt3d + [0, 0, 3.0]),
            gt_keypoints_3d=gt3d, image_size=torch.tensor([[128, 128]] * NUM_VIEWS),
            pred_masks=torch.tensor(masks), gt_masks=masks, session='s0', frame=i,
            sample_idx=i))
    return samples


def only_numpy_and_builtins(obj):
    if isinstance(obj, dict):
        return all(only_numpy_and_builtins(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(only_numpy_and_builtins(v) for v in obj)
    return isinstance(obj, (np.ndarray, np.generic, str, int, float, bool, type(None)))


def test_evaluator_end_to_end():
    register_all_modules()
    evaluator = Evaluator([
        dict(type='KeypointPCKMetric', thresholds_px=(1, 2.5, 3)),
        dict(type='MPJPEMetric', units='mm', ignore_joints=('j3',)),
        dict(type='ReprojectionErrorMetric'),
        dict(type='SilhouetteIoUMetric'),
    ])
    evaluator.dataset_meta = dict(keypoint_names=['j0', 'j1', 'j2', 'j3'],
                                  camera_names=['top', 'side'])
    samples = fake_samples()
    for start in range(0, NUM_SAMPLES, 4):
        evaluator.process(samples[start:start + 4])
    # mmengine gathers `results` across ranks by pickling them: numpy only, no tensors.
    for metric in evaluator.metrics:
        assert len(metric.results) == NUM_SAMPLES
        assert only_numpy_and_builtins(metric.results)
        pickle.loads(pickle.dumps(metric.results))
    metrics = evaluator.evaluate(NUM_SAMPLES)
    assert metrics['kp2d/pck@1px'] == 0 and metrics['kp2d/pck@2.5px'] == 1
    assert metrics['kp2d/num_keypoints'] == (NUM_SAMPLES * 2 - NUM_SAMPLES // 2) * NUM_JOINTS
    assert metrics['reproj/per_camera/side/median'] == pytest.approx(2)
    assert metrics['kp3d/mpjpe'] == pytest.approx(3)
    assert metrics['kp3d/mpjpe_root'] == pytest.approx(0, abs=1e-12)
    assert metrics['kp3d/pa_mpjpe'] == pytest.approx(0, abs=1e-9)
    assert 'kp3d/per_joint/j3/mpjpe' not in metrics and 'kp3d/per_joint/j2/mpjpe' in metrics
    assert metrics['silhouette/iou'] == 1
    assert all(isinstance(v, float) for v in metrics.values())
    raw = collect_raw(evaluator)
    assert set(raw) == {'kp2d', 'kp3d', 'reproj', 'silhouette'}
    assert raw['kp2d']['errors_px'].shape == (NUM_SAMPLES, NUM_VIEWS, NUM_JOINTS)
    assert raw['kp3d']['frame'].tolist() == list(range(NUM_SAMPLES))
    for metric in evaluator.metrics:                      # evaluate() resets the results
        assert metric.results == []


def test_evaluate_drops_padded_samples():
    # A distributed sampler pads the last batch; `evaluate(size)` keeps `size` records,
    # which works because every metric stores exactly one record per sample.
    register_all_modules()
    evaluator = Evaluator(dict(type='KeypointPCKMetric'))
    evaluator.process(fake_samples())
    assert evaluator.evaluate(NUM_SAMPLES - 3)['kp2d/num_samples'] == NUM_SAMPLES - 3


def test_collect_raw_before_evaluation_is_an_error():
    register_all_modules()
    evaluator = Evaluator(dict(type='MPJPEMetric'))
    with pytest.raises(RuntimeError, match='not been evaluated'):
        collect_raw(evaluator)
