"""A calibrated rig in other units than the body model's: measured, converted at the
regressor's boundary, and invisible to everything inside it."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from smilfit.engine.hooks import RigUnitsHook
from smilfit.models.regressors.rig_units import to_model_units
from smilfit.registry import DATASETS

from .helpers import tiny_multiview

#: Rig units per model unit of the "millimetre" rig (the synthetic data are in model units).
MM = 57.0


def _in_mm(samples, factor=MM):
    """The batch as a rig in other units would give it: the cameras' translations and
    the 3D keypoints times ``factor`` (pixels unchanged)."""
    out = dict(samples)
    out['t'] = samples['t'] * factor
    out['keypoints_3d'] = samples['keypoints_3d'] * factor
    out.pop('params', None)        # ground truth in model units: not part of the rig
    return out


def _arrays(samples):
    keys = ('keypoints_3d', 'keypoints_2d', 'K', 'R', 't', 'dist', 'view_valid', 'visible',
            'confidence')
    return {k: samples[k].numpy() for k in keys}


def test_measured_scale_follows_the_rig_units(multiview_batch):
    model = tiny_multiview()
    samples = multiview_batch['data_samples']
    scale, depth = model.estimate_rig_units(_arrays(samples))
    scale_mm, depth_mm = model.estimate_rig_units(_arrays(_in_mm(samples)))
    # the synthetic animal is the model itself: about one model unit per unit
    assert 0.8 < scale < 1.25
    assert scale_mm / scale == pytest.approx(MM, rel=1e-6)
    assert depth_mm == pytest.approx(depth, rel=1e-6)   # depth in model units either way
    assert depth > 0


def test_measured_scale_from_2d_only(multiview_batch):
    """Without 3D keypoints the 2D ones are triangulated through the calibration."""
    model = tiny_multiview()
    samples = _arrays(_in_mm(multiview_batch['data_samples']))
    with_3d = model.estimate_rig_units(samples)
    samples.pop('keypoints_3d')
    from_2d = model.estimate_rig_units(samples)
    assert from_2d[0] == pytest.approx(with_3d[0], rel=0.05)
    assert from_2d[1] == pytest.approx(with_3d[1], rel=0.05)


def test_no_3d_and_no_calibration_gives_none(multiview_batch):
    model = tiny_multiview()
    samples = _arrays(multiview_batch['data_samples'])
    assert model.estimate_rig_units(dict(keypoints_2d=samples['keypoints_2d'])) is None


def test_losses_and_predictions_are_the_same_in_any_units(multiview_batch):
    """The same weights on the same images: the model-unit batch and the millimetre batch
    with the rig's units set give the same losses, the same 2D predictions, and 3D
    predictions that differ by exactly the unit factor."""
    torch.manual_seed(0)
    model = tiny_multiview(losses=[
        dict(type='Keypoint2DHandler', name='kp2d',
             loss=dict(type='KeypointMSELoss', normalize='weighted_mean')),
        dict(type='Keypoint3DHandler', name='kp3d',
             loss=dict(type='KeypointMSELoss', normalize='mean'))],
        loss_weights=dict(kp2d=1e-2, kp3d=1.0, param=0.0)).eval()
    inputs, samples = multiview_batch['inputs'].float(), multiview_batch['data_samples']
    plain = {k: v for k, v in samples.items() if k != 'params'}
    _, depth = model.estimate_rig_units(_arrays(samples))
    model.set_rig_units(1.0, depth)
    with torch.no_grad():
        loss_model = model(inputs, dict(plain), mode='loss')
        pred_model = model(inputs, dict(plain), mode='predict')
    model.set_rig_units(MM, depth)
    mm = _in_mm(samples)
    with torch.no_grad():
        loss_mm = model(inputs, dict(mm), mode='loss')
        pred_mm = model(inputs, dict(mm), mode='predict')
    for name in ('loss_kp2d', 'loss_kp3d'):
        assert float(loss_mm[name]) == pytest.approx(float(loss_model[name]), rel=1e-4)
    for a, b in zip(pred_model, pred_mm):
        assert torch.allclose(b['pred_keypoints_2d'], a['pred_keypoints_2d'], atol=1e-3)
        assert torch.allclose(b['pred_keypoints_3d'], a['pred_keypoints_3d'] * MM, rtol=1e-4,
                              atol=1e-3)
        assert torch.allclose(b['pred_cameras']['t'], a['pred_cameras']['t'] * MM,
                              rtol=1e-5)
        assert float(b['pred_params']['global_log_scale']) == pytest.approx(math.log(MM))


def test_predicted_parameters_pose_the_predicted_points(multiview_batch):
    """Posing the body model with the predicted parameters (global_log_scale included)
    gives the predicted 3D keypoints in the rig's units."""
    model = tiny_multiview().eval()
    inputs, samples = multiview_batch['inputs'].float(), _in_mm(multiview_batch['data_samples'])
    model.set_rig_units(*model.estimate_rig_units(_arrays(samples)))
    with torch.no_grad():
        pred = model(inputs, dict(samples), mode='predict')
        p = pred[0]['pred_params']
        out = model.body_model(**{k: v[None] for k, v in p.items()}, return_vertices=False)
    match = model.keypoint_match
    want = pred[0]['pred_keypoints_3d'][match.data_index]
    got = out.keypoints[0, match.model_index].to(want.dtype)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-3 * MM)


def test_unset_units_leave_the_batch_alone(multiview_batch):
    model = tiny_multiview()
    assert not model.uses_rig_units
    samples = multiview_batch['data_samples']
    assert model._in_model_units(samples) is samples
    converted = to_model_units(dict(samples), 2.0)
    assert torch.equal(converted['t'], samples['t'] / 2)
    assert torch.allclose(converted['params']['transl'], samples['params']['transl'] / 2)


def test_rig_units_survive_a_checkpoint_and_old_ones_load():
    model = tiny_multiview()
    model.set_rig_units(12.5, 7.0)
    state = model.state_dict()
    other = tiny_multiview()
    other.load_state_dict(state, strict=True)
    assert float(other.rig_scale) == 12.5 and float(other.rig_depth) == 7.0
    old = {k: v for k, v in state.items() if not k.startswith('rig_')}
    fresh = tiny_multiview()
    fresh.load_state_dict(old, strict=True)        # saved before the rig was measured
    assert not fresh.uses_rig_units


@pytest.mark.parametrize('scale, depth', [(0.0, None), (float('nan'), None), (1.0, -2.0)])
def test_bad_rig_units_are_refused(scale, depth):
    with pytest.raises(ValueError, match='rig'):
        tiny_multiview().set_rig_units(scale, depth)


def test_hook_measures_the_training_set(synthetic_h5):
    """Before training the hook reads samples of the training set and sets the units;
    weights loaded from another rig get this one's; a resumed run measures the same."""
    dataset = DATASETS.build(dict(type='MultiViewHDF5Dataset', ann_file=str(synthetic_h5),
                                  load_images=False, pipeline=[dict(type='PackInputs')]))
    model = tiny_multiview()
    runner = SimpleNamespace(model=model, train_dataloader=SimpleNamespace(dataset=dataset))
    RigUnitsHook(num_samples=8).before_train(runner)
    assert model.uses_rig_units
    scale, depth = float(model.rig_scale), float(model.rig_depth)
    assert 0.8 < scale < 1.25 and depth > 0
    model.set_rig_units(3.0, 5.0)            # another rig's
    RigUnitsHook(num_samples=8).before_train(runner)
    assert (float(model.rig_scale), float(model.rig_depth)) == (scale, depth)


def test_hook_keeps_units_it_cannot_measure(synthetic_h5, monkeypatch):
    """Units set in code stay where the training data have nothing to measure them by."""
    dataset = DATASETS.build(dict(type='MultiViewHDF5Dataset', ann_file=str(synthetic_h5),
                                  load_images=False))
    model = tiny_multiview()
    model.set_rig_units(3.0, 5.0)
    monkeypatch.setattr(RigUnitsHook, 'read_samples', lambda self, ds: None)
    runner = SimpleNamespace(model=model, train_dataloader=SimpleNamespace(dataset=dataset))
    RigUnitsHook().before_train(runner)
    assert (float(model.rig_scale), float(model.rig_depth)) == (3.0, 5.0)


def test_hook_leaves_uncalibrated_models_alone(synthetic_h5):
    dataset = DATASETS.build(dict(type='MultiViewHDF5Dataset', ann_file=str(synthetic_h5),
                                  load_images=False))
    model = tiny_multiview(camera=dict(init='default', predict=True))
    runner = SimpleNamespace(model=model, train_dataloader=SimpleNamespace(dataset=dataset))
    RigUnitsHook().before_train(runner)
    assert not model.uses_rig_units and np.isnan(float(model.rig_scale))
