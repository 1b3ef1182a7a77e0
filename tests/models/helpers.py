"""Tiny regressor configs for tests (64 px, timm test models, small decoders)."""
import copy

import torch

from smilfit.body_models.rotations import axis_angle_to_matrix
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


def ground_truth_in_view0(model, samples):
    """The ground-truth body encoded in calibrated view 0's camera frame, decoded back.

    Returns:
        ``(decoded, params_c)``: the model's ``decode`` output for the encoded ground
        truth (what a perfect head would predict) and the ground-truth parameters in
        view 0's frame.
    """
    gt = samples['params']
    R0, t0 = samples['R'][:, 0], samples['t'][:, 0]
    with torch.no_grad():
        rest = model.body_model(betas=gt['betas'], return_vertices=False)
    j0 = rest.joint_transforms[:, 0, :3, 3]
    go_c = R0 @ axis_angle_to_matrix(gt['global_orient'])
    transl_c = (R0 @ (j0 + gt['transl'])[..., None])[..., 0] + t0 - j0
    params_c = dict(global_orient=go_c, body_pose=gt['body_pose'], betas=gt['betas'],
                    transl=transl_c)
    vec = model.body_codec.encode(params_c)
    return model.decode(dict(body=vec, cameras=None), samples, (64, 64)), params_c
