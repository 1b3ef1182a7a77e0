# Handlers and stages for fitting pose and shape to multi-view 2D keypoints.
# Stage 1 aligns the body rigidly (initialised by triangulation), stage 2 frees the
# pose and shape. Every stage fits each sample independently (batched per-sample
# L-BFGS), so a batch gives exactly what a per-frame loop would.
registrant = dict(
    type='SMILRegistrant',
    init='triangulation',
    handlers=[
        dict(type='Keypoint2DHandler', name='kp2d',
             loss=dict(type='KeypointMSELoss', robust='gmof', sigma=50.0)),
        dict(type='ShapePriorHandler', name='shape_prior', weight=1.0,
             loss=dict(type='ShapePriorLoss')),
        dict(type='PosePriorHandler', name='pose_prior', weight=10.0,
             loss=dict(type='PoseL2Prior')),
    ],
    stages=[
        dict(name='rigid', fit=['global_orient', 'transl'], n_iter=3,
             optimizer=dict(type='LBFGS', max_iter=30, line_search_fn='strong_wolfe'),
             loss_weights=dict(shape_prior=0.0, pose_prior=0.0)),
        dict(name='pose_shape', fit=['global_orient', 'transl', 'body_pose', 'betas'],
             n_iter=5, optimizer=dict(type='LBFGS', max_iter=40, line_search_fn='strong_wolfe')),
    ],
    hooks=[dict(type='ProgressBarHook')],
)
