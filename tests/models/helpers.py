"""Tiny regressor configs for tests (64 px, timm test models, small decoders)."""
import copy

from smilfit.registry import MODELS

KP2D = dict(type='Keypoint2DHandler', name='kp2d',
            loss=dict(type='KeypointMSELoss', normalize='weighted_mean'))


def tiny_multiview(backbone='test_resnet', **overrides):
    cfg = dict(type='MultiViewRegressor', num_views=2,
               backbone=dict(type='TimmBackbone', model_name=backbone,
                             model_kwargs=dict(img_size=64) if 'vit' in backbone else {}),
               neck=dict(type='CrossViewFusion', dim=32, depth=1, num_heads=4),
               head=dict(type='IEFTransformerDecoderHead', dim=32, depth=1, num_heads=4,
                         num_iterations=2),
               body_model=dict(type='DemoSMILModel'),
               losses=[copy.deepcopy(KP2D), dict(type='ShapePriorHandler', name='shape_prior')],
               loss_weights=dict(kp2d=1e-2, shape_prior=1e-3))
    cfg.update(overrides)
    return MODELS.build(cfg)


def tiny_singleview(backbone='test_resnet', **overrides):
    cfg = dict(type='SingleViewRegressor',
               backbone=dict(type='TimmBackbone', model_name=backbone,
                             model_kwargs=dict(img_size=64) if 'vit' in backbone else {}),
               head=dict(type='IEFTransformerDecoderHead', dim=32, depth=1, num_heads=4,
                         num_iterations=2),
               body_model=dict(type='DemoSMILModel'),
               param_weights=dict(body_pose=1.0, betas=0.1),
               losses=[copy.deepcopy(KP2D)], loss_weights=dict(kp2d=1e-2))
    cfg.update(overrides)
    return MODELS.build(cfg)
