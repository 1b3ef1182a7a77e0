"""Reductions, masking helpers, and building every loss from a config dict."""
import pytest
import torch

import smilfit.losses as losses
from smilfit.losses.utils import BaseLoss, masked, reduce_loss, valid_mask
from smilfit.registry import LOSSES

NAN = float('nan')


def test_reduce_loss():
    x = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(reduce_loss(x, 'none'), x)
    assert reduce_loss(x, 'sum').item() == 6.0
    assert reduce_loss(x, 'mean').item() == 2.0
    with pytest.raises(ValueError, match='reduction'):
        reduce_loss(x, 'max')
    with pytest.raises(ValueError, match='reduction'):
        BaseLoss(reduction='batchmean')


def test_valid_mask_and_masked():
    target = torch.tensor([[[1.0, NAN], [1.0, 2.0], [3.0, 4.0]]])
    ok = valid_mask(target, 1, mask=torch.tensor([[True, True, False]]),
                    weight=torch.tensor([[1.0, 1.0, 1.0]]))
    assert ok.tolist() == [[False, True, False]]
    assert valid_mask(target, 1, weight=torch.tensor([[1.0, NAN, 1.0]])).tolist() == \
        [[False, False, True]]
    out = masked(target, ok)
    assert torch.isfinite(out).all() and out[0, 1].tolist() == [1.0, 2.0]


BUILDABLE = [
    dict(type='KeypointMSELoss', robust='gmof', sigma=100),
    dict(type='Keypoint3DLoss'),
    dict(type='LimbLengthLoss', pairs=[[0, 1]], target_lengths=[1.0]),
    dict(type='ShapePriorLoss', mean=[0.0, 0.0], cov=[[1.0, 0.0], [0.0, 1.0]]),
    dict(type='PoseL2Prior'),
    dict(type='JointLimitPrior', limits=[[[-1.0, 1.0]] * 3]),
    dict(type='GaussianPosePrior', mean=[0.0, 0.0, 0.0], precision=[[1, 0, 0], [0, 1, 0],
                                                                    [0, 0, 1]]),
    dict(type='MaxMixturePosePrior', means=[[0.0]], covariances=[[[1.0]]], weights=[1.0]),
    dict(type='LogScalePrior'),
    dict(type='BoneTranslationPrior'),
    dict(type='KeypointOffsetPrior'),
    dict(type='TemporalSmoothnessLoss'),
    dict(type='CameraPriorLoss'),
    dict(type='SilhouetteLoss', mode='iou'),
    dict(type='ChamferLoss'), dict(type='PointToSurfaceLoss'), dict(type='NormalConsistencyLoss'),
    dict(type='EdgeLengthRegularizer', faces=[[0, 1, 2]]),
    dict(type='LaplacianRegularizer', faces=[[0, 1, 2]]),
    dict(type='MeshNormalConsistencyRegularizer', faces=[[0, 1, 2]]),
    dict(type='ParamSupervisionLoss', rotation='raw_6d'),
    dict(type='TriangulationConsistencyLoss', scale=2.0),
]


@pytest.mark.parametrize('cfg', BUILDABLE, ids=lambda c: c['type'])
def test_build_from_config(cfg):
    cfg = dict(cfg, loss_weight=2.0, reduction='sum')
    loss = LOSSES.build(cfg)
    assert type(loss).__name__ == cfg['type']
    assert isinstance(loss, BaseLoss)
    assert loss.loss_weight == 2.0 and loss.reduction == 'sum'
    assert getattr(losses, cfg['type']) is type(loss)


def test_every_registered_loss_is_exported():
    smilfit_losses = {n for n, c in LOSSES.module_dict.items()
                      if c.__module__.startswith('smilfit.losses')}
    assert smilfit_losses == {c['type'] for c in BUILDABLE}
    assert smilfit_losses <= set(losses.__all__)
