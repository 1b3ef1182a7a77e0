"""Keypoint3DHandler and LimbLengthHandler."""
import pytest
import torch

from smilfit.handlers import LimbLengthHandler
from smilfit.losses import limb_lengths
from smilfit.registry import HANDLERS

from .helpers import DATA_INFO, DATA_NAMES, DT, forward, observe, random_params, toy_model


@pytest.fixture(scope='module')
def model():
    return toy_model()


def build(model, cfg, data_info=DATA_INFO):
    h = HANDLERS.build(cfg)
    h.setup(model, data_info)
    return h


def test_keypoint3d_zero_at_truth_and_nan_safe(model):
    params = {k: v.requires_grad_(True) for k, v in random_params(model, 3).items()}
    obs = observe(model, {k: v.detach() for k, v in params.items()})
    h = build(model, dict(type='Keypoint3DHandler', name='kp3d'))
    assert h(forward(model, params), obs, params).abs().max() < 1e-20
    wrong = dict(params, transl=params['transl'] + torch.tensor([0.0, 0.0, 0.5], dtype=DT))
    obs['keypoints_3d'][0, DATA_NAMES.index('D_head')] = float('nan')
    obs['keypoints_3d'][2] = float('nan')
    loss = h(forward(model, wrong), obs, wrong)
    # each observed keypoint is 0.5 off along z: 0.25 per point
    torch.testing.assert_close(loss, torch.tensor([4 * 0.25, 5 * 0.25, 0.0], dtype=DT))
    loss.sum().backward()
    assert all(torch.isfinite(v.grad).all() for v in params.values())


def test_keypoint3d_weights_offsets_and_missing(model):
    params = random_params(model, 2)
    obs = observe(model, params)
    out = forward(model, params)
    h = build(model, dict(type='Keypoint3DHandler', name='kp3d', weight=2.0,
                          keypoint_weights={'tip': 3.0}))
    Kp = len(model.keypoint_names)
    off = torch.zeros(1, Kp, 3, dtype=DT)
    off[0, model.keypoint_names.index('tip'), 0] = 0.1
    torch.testing.assert_close(h(out, obs, dict(params, keypoint_offsets=off)),
                               torch.full((2,), 2.0 * 3.0 * 0.01, dtype=DT))
    with pytest.raises(KeyError, match='keypoints_3d'):
        h(out, {}, params)


def test_limb_length_config_targets(model):
    params = random_params(model, 2)
    out = forward(model, params)
    pairs = [['head', 'neck'], ['hip', 'paw']]
    h = build(model, dict(type='LimbLengthHandler', name='limbs', pairs=pairs,
                          target_lengths=[1.0, None]), data_info={})
    idx = [model.keypoint_names.index(n) for n in ('head', 'neck')]
    length = limb_lengths(out.keypoints, torch.tensor([idx]))[:, 0]
    torch.testing.assert_close(h(out, {}, params), (length - 1.0) ** 2)


def test_limb_length_measured_on_observations(model):
    params = random_params(model, 3)
    obs = observe(model, params)
    pairs = [['head', 'neck'], ['hip', 'paw'], ['tip', 'head']]
    h = build(model, dict(type='LimbLengthHandler', name='limbs', pairs=pairs,
                          loss=dict(type='LimbLengthLoss', mode='relative')))
    out = forward(model, params)
    assert h(out, obs, params).abs().max() < 1e-20
    shaped = dict(params, betas=params['betas'] + 1.0)
    loss = h(forward(model, shaped), obs, shaped)
    assert torch.all(loss > 0)
    # a missing observed end removes that pair only; changing sample 1 leaves 0 alone
    obs2 = {k: v.clone() for k, v in obs.items()}
    obs2['keypoints_3d'][1] = float('nan')
    loss2 = h(forward(model, shaped), obs2, shaped)
    assert loss2[1] == 0 and loss2[0] == loss[0] and loss2[2] == loss[2]


def test_limb_length_default_bones_and_errors(model):
    params = random_params(model, 2)
    h = LimbLengthHandler('bones', source='joints', target_lengths=[1.0] * 5)
    h.setup(model, {})
    assert len(h.resolved_pairs) == model.num_joints - 1
    assert h(forward(model, params), {}, params).shape == (2,)
    with pytest.raises(KeyError, match='nope'):
        LimbLengthHandler('l', pairs=[['head', 'nope']], target_lengths=[1.0]).setup(model, {})
    with pytest.raises(ValueError, match='pairs'):
        LimbLengthHandler('l')
    with pytest.raises(ValueError, match='not in the loss config'):
        LimbLengthHandler('l', pairs=[['head', 'neck']],
                          loss=dict(type='LimbLengthLoss', pairs=[[0, 1]]))
    with pytest.raises(ValueError, match='no pair has both ends'):
        LimbLengthHandler('l', pairs=[['head', 'neck']], joint_lookup={'head': 'D_head'}
                          ).setup(model, DATA_INFO)
