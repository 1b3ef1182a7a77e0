# Multi-view regressor: a ResNet-50 per view (shared weights), cross-view attention
# fusion, a transformer decoder with iterative error feedback over all views' tokens and
# the calibrated cameras of the batch (the body is predicted in view 0's camera frame and
# returned in the world frame). Pretrained weights come from a local file only:
#   model.backbone.checkpoint='/path/to/resnet50.pth'
body_model = dict(type='DemoSMILModel')
num_views = 4
model = dict(
    type='MultiViewRegressor',
    num_views=num_views,
    data_preprocessor=dict(type='RegressionDataPreprocessor'),
    backbone=dict(type='TimmBackbone', model_name='resnet50', checkpoint=None, frozen=None),
    neck=dict(type='CrossViewFusion', dim=256, depth=2, num_heads=8),
    head=dict(type='IEFTransformerDecoderHead', dim=256, depth=3, num_heads=8,
              num_iterations=3),
    body_model=body_model,
    camera=dict(model='perspective', init='calibrated', predict=False),
    param_codec=dict(rotation='6d'),
    losses=[
        # 2D keypoints in every view through the (predicted) cameras; importance per
        # keypoint by name with keypoint_weights={'nose': 2.0, ...}.
        dict(type='Keypoint2DHandler', name='kp2d',
             loss=dict(type='KeypointMSELoss', normalize='weighted_mean')),
        dict(type='Keypoint3DHandler', name='kp3d',
             loss=dict(type='KeypointMSELoss', normalize='mean')),
        dict(type='ShapePriorHandler', name='shape_prior'),
        dict(type='PosePriorHandler', name='pose_prior'),
        # Silhouettes need a renderer (smilfit.renderers), e.g.
        # dict(type='SilhouetteHandler', name='silhouette',
        #      renderer=dict(type='SoftSilhouetteRenderer')),
    ],
    # kp3d is in squared model units (mm^2 for the demo mouse): keep it comparable to
    # kp2d (px^2). triangulation: predicted cameras' consistency (0: fixed cameras).
    loss_weights=dict(kp2d=1e-2, kp3d=1e-3, shape_prior=1e-3, pose_prior=1e-3, param=1.0,
                      triangulation=0.0),
    supervise_iterations='all',
)
