"""TemporalHandler: per-frame contributions sum to the sequence loss."""
import pytest
import torch

from smilfit.handlers import TemporalHandler
from smilfit.losses import TemporalSmoothnessLoss
from smilfit.registry import HANDLERS

from .helpers import DT, forward, random_params, toy_model


@pytest.fixture(scope='module')
def model():
    return toy_model()


def build(model, **cfg):
    h = HANDLERS.build(dict(type='TemporalHandler', name='smooth', **cfg))
    h.setup(model, {})
    return h


LOSSES = [dict(type='TemporalSmoothnessLoss'),
          dict(type='TemporalSmoothnessLoss', velocity_weight=0.5, acceleration_weight=3.0,
               loss_weight=2.0),
          dict(type='TemporalSmoothnessLoss', velocity_weight=1.0, acceleration_weight=1.0,
               normalize='mean')]


@pytest.mark.parametrize('loss_cfg', LOSSES)
@pytest.mark.parametrize('target', ['joints', 'body_pose', 'keypoints'])
@pytest.mark.parametrize('gaps', [False, True])
def test_sum_equals_sequence_loss(model, loss_cfg, target, gaps):
    T = 7
    params = {k: v.requires_grad_(True) for k, v in random_params(model, T, seed=4).items()}
    out = forward(model, params)
    obs = {}
    valid = torch.ones(T, dtype=torch.bool)
    if gaps:
        valid[[2, 5]] = False
        obs['frame_valid'] = valid
    h = build(model, loss=loss_cfg, target=target, weight=1.5)
    per_frame = h(out, obs, params)
    assert per_frame.shape == (T,)
    x = params['body_pose'] if target == 'body_pose' else getattr(out, target)
    seq = TemporalSmoothnessLoss(**{k: v for k, v in loss_cfg.items() if k != 'type'})(
        x[None], valid[None])
    torch.testing.assert_close(per_frame.sum(), 1.5 * seq[0])
    # the same gradient as the sequence loss
    g1 = torch.autograd.grad(per_frame.sum(), params['body_pose'], retain_graph=True)[0]
    g2 = torch.autograd.grad(1.5 * seq[0], params['body_pose'])[0]
    torch.testing.assert_close(g1, g2)


def test_known_values_and_attribution():
    """x = 0, 1, 3, 6: velocities 1, 2, 3 -> 1, 4, 9 shared by the two frames of each."""
    h = TemporalHandler('t', target='transl')
    h.setup(toy_model(), {})
    x = torch.tensor([0.0, 1.0, 3.0, 6.0], dtype=DT)[:, None] * torch.tensor([[1.0, 0, 0]],
                                                                           dtype=DT)

    class Out:
        joints = torch.zeros(4, 1, 3, dtype=DT)
    per = h(Out(), {}, {'transl': x})
    torch.testing.assert_close(per, torch.tensor([0.5, 2.5, 6.5, 4.5], dtype=DT))
    assert torch.all(h(Out(), {}, {}) == 0)          # absent param
    # an invalid frame takes no share and breaks the differences around it
    per = h(Out(), {'frame_valid': torch.tensor([True, True, False, True])}, {'transl': x})
    torch.testing.assert_close(per, torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=DT))


def test_other_losses_are_shared_equally(model):
    class Plugin(torch.nn.Module):
        reduction = 'none'

        def forward(self, x, valid=None):
            return (x ** 2).sum(tuple(range(1, x.ndim)))
    h = TemporalHandler('t', loss=Plugin(), target='transl')
    h.setup(model, {})
    params = random_params(model, 4)
    out = forward(model, params)
    valid = torch.tensor([True, False, True, True])
    per = h(out, {'frame_valid': valid}, params)
    torch.testing.assert_close(per.sum(), (params['transl'] ** 2).sum())
    assert per[1] == 0


def test_frame_valid_shape_is_checked(model):
    params = random_params(model, 3)
    h = build(model)
    with pytest.raises(ValueError, match='frame_valid'):
        h(forward(model, params), {'frame_valid': torch.ones(4, dtype=torch.bool)}, params)


def test_temporal_handler_declares_coupling():
    from smilfit.handlers import Keypoint2DHandler, TemporalHandler
    assert TemporalHandler.couples_samples and not Keypoint2DHandler.couples_samples
