# Single-view regressor: ResNet-50, transformer decoder with iterative error feedback over
# its 7x7 (at 224 px) feature cells, a perspective camera predicted with the body
# (rotation left to the body's global orientation, 40 degree default field of view).
body_model = dict(type='DemoSMILModel')
model = dict(
    type='SingleViewRegressor',
    data_preprocessor=dict(type='RegressionDataPreprocessor'),
    backbone=dict(type='TimmBackbone', model_name='resnet50', checkpoint=None),
    neck=None,
    head=dict(type='IEFTransformerDecoderHead', dim=256, depth=3, num_heads=8,
              num_iterations=3),
    body_model=body_model,
    camera=dict(model='perspective', init='default', predict_rotation=False, fov_deg=40.0),
    param_codec=dict(rotation='6d'),
    # Without calibrated cameras the body lives in the camera's frame: compare pose and
    # shape with ground truth, not the world-frame orientation and translation.
    param_weights=dict(body_pose=1.0, betas=0.1),
    losses=[
        dict(type='Keypoint2DHandler', name='kp2d',
             loss=dict(type='KeypointMSELoss', normalize='weighted_mean')),
        dict(type='ShapePriorHandler', name='shape_prior'),
        dict(type='PosePriorHandler', name='pose_prior'),
    ],
    loss_weights=dict(kp2d=1e-2, shape_prior=1e-3, pose_prior=1e-3, param=1.0),
)
