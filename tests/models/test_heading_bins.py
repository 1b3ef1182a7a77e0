"""MultiBin heading: bin targets, bin starts, the classification term."""
import copy
import math

import pytest
import torch

from smilfit.body_models.rotations import axis_angle_to_matrix, matrix_to_axis_angle

from .helpers import tiny_multiview


def _identity_cams(B, C=2):
    return dict(R=torch.eye(3).expand(B, C, 3, 3), K=torch.eye(3).expand(B, C, 3, 3),
                t=torch.tensor([0.0, 0.0, 300.0]).expand(B, C, 3))


def test_bin_targets_of_bin_orientations():
    model = tiny_multiview(heading_bins=4)
    R = model.heading_classifier.bin_R                        # (4, 3, 3) bin starts
    # 20 degrees about the camera's vertical axis stays in the same bin (half width 45).
    small = axis_angle_to_matrix(torch.tensor([0.0, math.radians(20.0), 0.0]))
    gt = torch.cat([R, small @ R])
    samples = dict(_identity_cams(8), params=dict(global_orient=matrix_to_axis_angle(gt)))
    assert model.heading_targets(samples, 8).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    # A calibrated view 0 turned by one bin (90 degrees about y) shifts every target by 1.
    turn = axis_angle_to_matrix(torch.tensor([0.0, math.pi / 2, 0.0]))
    samples['R'] = (turn @ torch.eye(3)).expand(8, 2, 3, 3)
    assert model.heading_targets(samples, 8).tolist() == [1, 2, 3, 0, 1, 2, 3, 0]
    # Bin starts are the initial orientation turned about y: bin 2 is 180 degrees.
    init = model.body_codec.decode(model.body_codec.init_vector[None])['global_orient'][0]
    half = axis_angle_to_matrix(torch.tensor([0.0, math.pi, 0.0]))
    assert torch.allclose(R[2], half @ init, atol=1e-5)


@pytest.mark.parametrize('features', ['fused', 'grid'])
def test_heading_loss_and_bin_choice(multiview_batch, features):
    model = tiny_multiview(heading_bins=8, heading_features=features)
    data = model.data_preprocessor(copy.deepcopy(multiview_batch), False)
    losses = model(**data, mode='loss')
    # The zero-initialised classifier predicts uniform logits: cross-entropy ln(8).
    assert torch.allclose(losses['loss_heading'], torch.tensor(math.log(8.0)), atol=1e-5)
    s = data['data_samples']
    model.train()
    res = model.predictions(data['inputs'], s)
    target = model.heading_targets(s, 4)
    assert torch.equal(res['enc']['heading_bin'], target)      # teacher forcing
    model.eval()
    with torch.no_grad():
        model.heading_classifier.logit_layer.bias.copy_(torch.arange(8.0))   # argmax: 7
        res = model.predictions(data['inputs'], s)
    assert res['enc']['heading_bin'].tolist() == [7] * 4
    model.set_loss_weight('heading', 0.0)
    assert 'loss_heading' not in model.train()(**data, mode='loss')


def test_heading_bins_validation():
    with pytest.raises(ValueError, match='heading_bins'):
        tiny_multiview(heading_bins=-1)
    with pytest.raises(ValueError, match='heading_features'):
        tiny_multiview(heading_bins=4, heading_features='tokens')
    with pytest.raises(KeyError, match='heading'):
        tiny_multiview(loss_weights=dict(kp2d=1e-2, heading=1.0))   # no bins: no term


def test_grid_features_keep_image_layout(multiview_batch):
    """The 'grid' input is every view's feature map pooled to 2 x 2 cells, in image
    layout (left and right cells differ: where the head is survives)."""
    model = tiny_multiview(heading_bins=4, heading_features='grid').eval()
    data = model.data_preprocessor(copy.deepcopy(multiview_batch), False)
    with torch.no_grad():
        enc = model.encode(data['inputs'], data['data_samples'])
        x = model.heading_classifier.inputs(enc)
    B, C, N, D = enc['backbone_tokens'].shape
    assert x.shape == (B, C * 4 * D)
    cells = x.reshape(B, C, D, 2, 2)
    grid = enc['backbone_tokens'].reshape(B, C, 2, 2, D).permute(0, 1, 4, 2, 3) \
        if N == 4 else None
    if grid is not None:                                     # 64 px ResNet: 2 x 2 tokens
        assert torch.allclose(cells, grid, atol=1e-6)
    assert not torch.allclose(cells[..., 0], cells[..., 1])


def test_heading_head_builds_alone_with_the_classifier_layout():
    """MultiBinHeadingHead from MODELS: zero logits at the start, the parameter names of the
    classifier it replaced (checkpoints), validation of its options."""
    from smilfit.registry import MODELS
    fused = MODELS.build(dict(type='MultiBinHeadingHead', in_dim=16, num_bins=4,
                              init_orient=torch.eye(3)))
    assert [k for k, _ in fused.named_parameters()] == ['weight', 'bias']
    enc = dict(fused=torch.randn(3, 16))
    out = fused.eval()(enc)
    assert torch.equal(out['heading_logits'], torch.zeros(3, 4))
    assert out['heading_bin'].tolist() == [0, 0, 0] and out['heading_target'] is None
    target = torch.tensor([1, 2, 3])
    assert torch.equal(fused.train()(enc, target)['heading_bin'], target)
    assert torch.allclose(fused.loss(out['heading_logits'], target), torch.tensor(math.log(4)))
    grid = MODELS.build(dict(type='MultiBinHeadingHead', in_dim=16, num_bins=4,
                             init_orient=torch.eye(3), features='grid', num_views=2,
                             token_dim=8))
    assert [k for k, _ in grid.named_parameters()] == [
        '0.weight', '0.bias', '1.weight', '1.bias', '3.weight', '3.bias']
    enc = dict(backbone_tokens=torch.randn(3, 2, 16, 8), view_valid=torch.ones(3, 2, dtype=bool))
    assert grid.inputs(enc).shape == (3, 2 * 2 * 2 * 8)
    assert torch.equal(grid(enc)['heading_logits'], torch.zeros(3, 4))
    with pytest.raises(ValueError, match='num_bins'):
        MODELS.build(dict(type='MultiBinHeadingHead', in_dim=16, num_bins=0,
                          init_orient=torch.eye(3)))
    with pytest.raises(ValueError, match='token_dim'):
        MODELS.build(dict(type='MultiBinHeadingHead', in_dim=16, num_bins=4,
                          init_orient=torch.eye(3), features='grid'))
