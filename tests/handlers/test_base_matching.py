"""The handler contract, building from config, and keypoint matching by name."""
import pytest
import torch

from smilfit.handlers import (BaseHandler, Keypoint2DHandler, build_loss, match_keypoints)
from smilfit.losses import KeypointMSELoss
from smilfit.registry import HANDLERS

from .helpers import DATA_INFO, DATA_NAMES, LOOKUP, forward, observe, random_params, toy_model

ALL = ['Keypoint2DHandler', 'Keypoint3DHandler', 'LimbLengthHandler', 'ShapePriorHandler',
       'PosePriorHandler', 'JointLimitHandler', 'ScaleTranslationPriorHandler',
       'TemporalHandler', 'CameraPriorHandler', 'SilhouetteHandler']


def test_all_registered_and_subclass_base():
    for name in ALL:
        cls = HANDLERS.get(name)
        assert cls is not None, name
        assert issubclass(cls, BaseHandler)
    assert HANDLERS.get('SilhouetteHandler').needs_vertices is True
    assert HANDLERS.get('Keypoint2DHandler').needs_vertices is False


def test_build_from_config():
    h = HANDLERS.build(dict(type='Keypoint2DHandler', name='kp2d', weight=2.5,
                            loss=dict(type='KeypointMSELoss', robust='gmof', sigma=20.0)))
    assert isinstance(h, Keypoint2DHandler)
    assert h.name == 'kp2d' and h.weight == 2.5
    assert isinstance(h.loss, KeypointMSELoss) and h.loss.robust == 'gmof'
    # a built loss module is accepted as well
    h2 = Keypoint2DHandler('kp', loss=KeypointMSELoss())
    assert isinstance(h2.loss, KeypointMSELoss)


def test_loss_must_be_per_sample_and_typed():
    with pytest.raises(ValueError, match="reduction='none'"):
        build_loss(dict(type='KeypointMSELoss', reduction='mean'), 'kp')
    with pytest.raises(ValueError, match='no "type"'):
        build_loss(dict(robust='gmof'), 'kp')
    with pytest.raises(TypeError):
        build_loss('KeypointMSELoss', 'kp')


def test_weight_validation_and_mutability():
    h = Keypoint2DHandler('kp')
    h.weight = 3
    assert h.weight == 3.0 and isinstance(h.weight, float)
    for bad in (-1.0, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='weight'):
            h.weight = bad
    with pytest.raises(ValueError, match='name'):
        Keypoint2DHandler('')


def test_forward_before_setup_is_an_error():
    model = toy_model()
    params = random_params(model, 2)
    h = Keypoint2DHandler('kp')
    with pytest.raises(RuntimeError, match='setup'):
        h(forward(model, params), observe(model, params), params)


def test_match_through_lookup():
    m = match_keypoints(['a', 'b', 'c'], ['X', 'A', 'C'], {'a': 'A', 'c': 'C', 'b': None})
    assert m.model_names == ['a', 'c'] and m.data_names == ['A', 'C']
    assert m.model_index.tolist() == [0, 2] and m.data_index.tolist() == [1, 2]
    assert m.unmatched_model == ['b'] and m.unmatched_data == ['X']
    # identical names without a lookup; order follows the model
    m = match_keypoints(['b', 'a'], ['a', 'z', 'b'])
    assert m.model_index.tolist() == [0, 1] and m.data_index.tolist() == [2, 0]
    # subset
    m = match_keypoints(['b', 'a'], ['a', 'z', 'b'], subset=['a'])
    assert m.model_names == ['a']
    with pytest.raises(KeyError, match='nope'):
        match_keypoints(['b', 'a'], ['a'], subset=['nope'])
    with pytest.raises(ValueError, match='not unique'):
        match_keypoints(['a', 'a'], ['a'])


def test_no_match_error_names_both_lists():
    with pytest.raises(ValueError) as err:
        match_keypoints(['nose', 'tail'], ['Nose', 'Tail'])
    msg = str(err.value)
    assert "'nose'" in msg and "'Nose'" in msg and 'joint_lookup' in msg
    model = toy_model()
    h = Keypoint2DHandler('kp')
    with pytest.raises(ValueError) as err:
        h.setup(model, dict(keypoint_names=DATA_NAMES))  # no lookup: nothing matches
    assert 'head' in str(err.value) and 'D_head' in str(err.value)


def test_setup_resolves_by_name_not_position():
    model = toy_model()
    h = Keypoint2DHandler('kp')
    h.setup(model, DATA_INFO)
    assert h.match.model_names == model.keypoint_names
    assert h.match.data_names == [LOOKUP[n] for n in model.keypoint_names]
    # a handler-level lookup overrides data_info's; a subset restricts it
    h = Keypoint2DHandler('kp', joint_lookup={'head': 'D_head'}, keypoints=None)
    h.setup(model, DATA_INFO)
    assert h.match.model_names == ['head']
    h = Keypoint2DHandler('kp', keypoints=['paw', 'tip'])
    h.setup(model, DATA_INFO)
    assert h.match.model_names == ['paw', 'tip']


def test_keypoint_weights_by_name():
    model = toy_model()
    h = Keypoint2DHandler('kp', keypoint_weights={'head': 2.0, 'D_tip': 0.5})
    h.setup(model, DATA_INFO)
    w = dict(zip(h.match.model_names, h.importance.tolist()))
    assert w == {'head': 2.0, 'neck': 1.0, 'hip': 1.0, 'paw': 1.0, 'tip': 0.5}
    h = Keypoint2DHandler('kp', keypoint_weights={'D_unused': 2.0})
    with pytest.raises(KeyError, match='D_unused'):
        h.setup(model, DATA_INFO)
    with pytest.raises(TypeError, match='by name'):
        Keypoint2DHandler('kp', keypoint_weights=[1.0, 2.0])


def test_weight_scales_output():
    model = toy_model()
    params = random_params(model, 3)
    obs = observe(model, params)
    wrong = dict(params, body_pose=params['body_pose'] + 0.2)
    out = forward(model, wrong)
    h = HANDLERS.build(dict(type='Keypoint2DHandler', name='kp', weight=1.0))
    h.setup(model, DATA_INFO)
    base = h(out, obs, wrong)
    h.weight = 0.25
    torch.testing.assert_close(h(out, obs, wrong), 0.25 * base)
    h.weight = 0.0
    assert torch.all(h(out, obs, wrong) == 0)


def test_check_finite_names_samples():
    class Bad(BaseHandler):
        def compute(self, output, observations, params):
            x = output.joints.new_zeros(output.joints.shape[0])
            x[1] = float('nan')
            return x
    model = toy_model()
    out = forward(model, random_params(model, 3))
    h = Bad('bad', dict(type='PoseL2Prior'), check_finite=True)
    h.setup(model, {})
    with pytest.raises(FloatingPointError, match=r'\[1\]'):
        h(out, {}, {})
