"""LogScalePrior (with symmetry) and BoneTranslationPrior: hand-computed values."""
import numpy as np
import pytest
import torch

from smilfit.losses import BoneTranslationPrior, LogScalePrior
from smilfit.registry import LOSSES
from tests.body_models.toy_models import toy_model_data

LOG_SCALE = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.5]]])


def test_log_scale_l2_and_weights():
    assert LogScalePrior()(LOG_SCALE).item() == pytest.approx(5.25)        # 1 + 4 + 0.25
    assert LogScalePrior(joint_weights=[1.0, 0.5, 4.0])(LOG_SCALE).item() == \
        pytest.approx(4.0)                                                 # 1 + 2 + 1


def test_symmetry_term():
    # |s0 - s1|^2 = |(1, -2, 0)|^2 = 5, weight 2
    prior = LogScalePrior(symmetry_pairs=[[0, 1]], symmetry_weight=2.0)
    assert prior(LOG_SCALE).item() == pytest.approx(5.25 + 10.0)
    named = LOSSES.build(dict(type='LogScalePrior', symmetry_pairs=[['a', 'b']],
                              joint_names=['a', 'b', 'c'], symmetry_weight=2.0))
    assert named(LOG_SCALE).item() == pytest.approx(15.25)


def test_symmetry_from_model_data():
    data = toy_model_data(num_joints=3)
    data.sym_joint_pairs = np.array([[1, 2]])
    prior = LogScalePrior.from_model_data(data)
    # |s1 - s2|^2 = |(0, 2, -0.5)|^2 = 4.25
    assert prior(LOG_SCALE).item() == pytest.approx(5.25 + 4.25)


def test_bone_translation():
    bt = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 3.0, 0.0]]], requires_grad=True)
    out = BoneTranslationPrior()(bt)
    assert out.item() == pytest.approx(12.0)
    out.backward()
    assert torch.equal(bt.grad, 2 * bt.detach())
    assert BoneTranslationPrior(joint_weights=[2.0, 0.0])(bt).item() == pytest.approx(6.0)
    with pytest.raises(ValueError, match='expected'):
        BoneTranslationPrior()(torch.zeros(1, 2, 2))


def test_keypoint_offset_prior_through_the_handler():
    """KeypointOffsetPrior: L2 per keypoint; the scale/translation handler reads it from
    params['keypoint_offsets'] when given that key, and names the input in errors."""
    from smilfit.handlers import ScaleTranslationPriorHandler
    from smilfit.losses import KeypointOffsetPrior
    off = torch.tensor([[[1.0, 2.0, 2.0], [0.0, 0.0, 0.5]]])
    assert KeypointOffsetPrior()(off).item() == pytest.approx(9.25)
    assert KeypointOffsetPrior(joint_weights=[0.0, 4.0])(off).item() == pytest.approx(1.0)
    h = ScaleTranslationPriorHandler('off', loss=None, weight=2.0,
                                     bone_trans_loss=dict(type='KeypointOffsetPrior'),
                                     bone_trans_key='keypoint_offsets')
    h.setup(toy_model_data())
    out = type('Out', (), {'joints': torch.zeros(1, 3, 3)})()
    torch.testing.assert_close(h(out, {}, dict(keypoint_offsets=off, bone_trans=10 * off)),
                               torch.tensor([18.5]))
    with pytest.raises(ValueError, match='keypoint_offsets'):
        KeypointOffsetPrior()(torch.zeros(1, 2, 2))
