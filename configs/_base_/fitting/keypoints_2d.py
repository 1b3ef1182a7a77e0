# Handlers and stages for fitting pose and shape to multi-view 2D keypoints.
# Stage 1 aligns the body rigidly (initialised by triangulation), stage 2 frees the
# pose and shape. Both are batched per-sample Levenberg-Marquardt stages (closed-form
# Jacobians; every handler here has a least-squares form): each sample converges as if
# fitted alone, in tens of iterations. Swap in dict(type='LBFGS', ...) for handlers
# without a least-squares form (e.g. GMM pose priors, silhouettes).
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
        # coarse: frames started from a network's prediction (data.init_from) skip it
        dict(name='rigid', fit=['global_orient', 'transl'], n_iter=10, coarse=True,
             optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             loss_weights=dict(shape_prior=0.0, pose_prior=0.0)),
        dict(name='pose_shape', fit=['global_orient', 'transl', 'body_pose', 'betas'],
             n_iter=20, optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8),
    ],
    hooks=[dict(type='ProgressBarHook')],
)
