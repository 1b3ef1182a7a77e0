"""Temporal regressor over clips, and test-time adaptation to one video."""
import copy

import pytest
import torch

from smilfit.models import TemporalEncoder, adapt_to_video
from smilfit.models.regressors.temporal import flatten_clip
from smilfit.registry import MODELS

from .helpers import KP2D


def _clip(batch):
    """The 4 frames of session 0 as one clip (B=1, T=4) with 2 views."""
    samples = {k: v[None] for k, v in batch['data_samples'].items()
               if isinstance(v, torch.Tensor)}
    samples['params'] = {k: v[None] for k, v in batch['data_samples']['params'].items()}
    return dict(inputs=batch['inputs'][None], data_samples=samples)


def _model(**kw):
    cfg = dict(type='TemporalRegressor', num_views=2,
               backbone=dict(type='TimmBackbone', model_name='test_resnet'),
               neck=dict(type='CrossViewFusion', dim=32, depth=1, num_heads=4),
               head=dict(type='IEFTransformerDecoderHead', dim=32, depth=1, num_heads=4,
                         num_iterations=2),
               body_model=dict(type='DemoSMILModel'),
               temporal=dict(kind='gru'),
               losses=[copy.deepcopy(KP2D)],
               loss_weights=dict(kp2d=1e-2, param=0.0, smooth_joints=1.0))
    cfg.update(kw)
    return MODELS.build(cfg)


def test_flatten_clip():
    x = torch.zeros(2, 3, 4, 3, 8, 8)
    samples = dict(keypoints_2d=torch.zeros(2, 3, 4, 5, 2), session=['a', 'b'],
                   params=dict(betas=torch.zeros(2, 3, 9)),
                   frame_valid=torch.ones(2, 3, dtype=torch.bool))
    flat, s, (B, T) = flatten_clip(x, samples, num_views=4)
    assert flat.shape == (6, 4, 3, 8, 8) and (B, T) == (2, 3)
    assert s['keypoints_2d'].shape == (6, 4, 5, 2) and s['params']['betas'].shape == (6, 9)
    assert 'session' not in s and s['clip_frame_valid'].shape == (2, 3)
    with pytest.raises(ValueError, match='clip inputs'):
        flatten_clip(torch.zeros(2, 4, 3, 8, 8), {}, num_views=4)


@pytest.mark.parametrize('kind', ['gru', 'transformer'])
def test_temporal_encoder_starts_at_zero_and_mixes_frames(kind):
    enc = TemporalEncoder(dim=8, kind=kind, num_heads=2)
    x = torch.randn(2, 5, 8)
    assert torch.all(enc(x) == 0)            # zero-initialised output: the frame model
    torch.nn.init.normal_(enc.out.weight)
    y = enc(x)
    x2 = x.clone()
    x2[:, 0] += torch.randn(2, 8)            # change frame 0 only
    assert not torch.allclose(enc(x2)[:, -1], y[:, -1])   # the last frame sees it


def test_temporal_regressor_losses_and_predictions(multiview_batch):
    model = _model()
    clip = _clip(multiview_batch)
    data = model.data_preprocessor(clip, False)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_kp2d', 'loss_smooth_joints'}
    assert losses['loss_smooth_joints'] > 0
    sum(losses.values()).backward()
    assert model.temporal.out.weight.grad.abs().sum() > 0
    with torch.no_grad():
        preds = model.eval()(**data, mode='predict')
    assert len(preds) == 4 and preds[0]['pred_keypoints_2d'].shape == (2, 35, 2)


def test_adapt_to_video_lowers_the_error_on_annotated_frames(multiview_batch):
    torch.manual_seed(0)
    model = _model()
    clip = _clip(multiview_batch)
    annotated = torch.tensor([True, False, True, False])

    def annotated_error():
        with torch.no_grad():
            preds = model.eval()(**model.data_preprocessor(clip, False), mode='predict')
        errs = []
        for p, a in zip(preds, annotated):
            if a:
                err = (p['pred_keypoints_2d'] - p['gt_keypoints_2d']).norm(dim=-1)
                errs.append(err[p['visible']].mean())
        return float(torch.stack(errs).mean())

    before = annotated_error()
    weights = dict(model.loss_weights)
    history = adapt_to_video(model, clip, annotated, n_steps=15, lr=1e-3)
    after = annotated_error()
    assert len(history) == 15 and history[-1] < history[0]
    assert after < 0.8 * before, (before, after)
    assert model.loss_weights == weights          # overrides restored
    with pytest.raises(ValueError, match='annotated_mask'):
        adapt_to_video(model, clip, torch.ones(3, dtype=torch.bool), n_steps=1)
    with pytest.raises(ValueError, match='no frame'):
        adapt_to_video(model, clip, torch.zeros(4, dtype=torch.bool), n_steps=1)
