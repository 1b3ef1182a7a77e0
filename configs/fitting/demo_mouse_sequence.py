# Sequence fitting (SMAL4V-style): every batch is one session's frames in order; one shape
# per animal (shared betas) and temporal smoothness on the joints couple the frames. The
# first stages fit every frame alone by Levenberg-Marquardt (smoothness off); the last
# optimises the summed loss of the sequence by L-BFGS (Levenberg-Marquardt solves frames or
# animals apart, not frames coupled in time).
_base_ = ['./demo_mouse.py']

data = dict(batch_size=16)  # = frames_per_session: one batch per session
registrant = dict(
    shared=dict(betas=True),
    handlers=[
        dict(type='Keypoint2DHandler', name='kp2d',
             loss=dict(type='KeypointMSELoss', robust='gmof', sigma=50.0)),
        dict(type='ShapePriorHandler', name='shape_prior', loss=dict(type='ShapePriorLoss')),
        dict(type='PosePriorHandler', name='pose_prior', weight=10.0,
             loss=dict(type='PoseL2Prior')),
        dict(type='TemporalHandler', name='smooth', weight=1e-3, target='joints',
             loss=dict(type='TemporalSmoothnessLoss', velocity_weight=1.0)),
    ],
    stages=[
        dict(name='rigid', fit=['global_orient', 'transl'], n_iter=10, coarse=True,
             optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             loss_weights=dict(shape_prior=0.0, pose_prior=0.0, smooth=0.0)),
        dict(name='pose', fit=['global_orient', 'transl', 'body_pose'], n_iter=20,
             optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             loss_weights=dict(smooth=0.0)),
        dict(name='sequence', fit=['global_orient', 'transl', 'body_pose', 'betas'],
             n_iter=3, optimizer=dict(type='LBFGS', max_iter=30,
                                      line_search_fn='strong_wolfe'), ftol=1e-9),
    ],
)
