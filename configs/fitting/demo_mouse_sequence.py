# Sequence fitting (SMAL4V-style): each session's frames in order, one shape per animal
# (shared betas), consecutive frames coupled by the motion prior. Every stage is
# Levenberg-Marquardt: the per-frame stages fit each frame alone; `sequence` solves each
# animal's chain of frames and its shape together (docs/fitting.md, "Video").
_base_ = ['./demo_mouse.py']

# a video: each session's poses move a little every frame (the base demo's are drawn anew)
data = dict(path='work_dirs/demo_mouse_sequence/synthetic_video.h5',
            synthetic=dict(frames_per_session=64, pose_correlation=0.98),
            batch_size=64)  # = frames_per_session: one batch per session
registrant = dict(
    shared=dict(betas=True),
    handlers=[
        # errors in noise units measured from the residuals (the motion prior's units too)
        dict(type='Keypoint2DHandler', name='kp2d', scale_from_residuals=True,
             loss=dict(type='KeypointMSELoss', robust='gmof', sigma=3.0)),
        dict(type='ShapePriorHandler', name='shape_prior', loss=dict(type='ShapePriorLoss')),
        # each animal's own poses: mean and spread of its frames, re-estimated every stage
        dict(type='AnimalPosePriorHandler', name='pose_prior', weight=1.0),
        # velocities in the motion's own scale, measured from the per-frame fit
        dict(type='MotionPriorHandler', name='motion'),
    ],
    stages=[
        dict(name='rigid', fit=['global_orient', 'transl'], n_iter=10, coarse=True,
             optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             loss_weights=dict(shape_prior=0.0, pose_prior=0.0, motion=0.0)),
        dict(name='pose', fit=['global_orient', 'transl', 'body_pose'], n_iter=20,
             optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             loss_weights=dict(motion=0.0)),
        # three rounds: the animal's pose prior and the noise scales measured afresh
        # before each, so the poses fitted under the mean shape stop holding the shape
        dict(name='sequence', fit=['global_orient', 'transl', 'body_pose', 'betas'],
             n_iter=20, rounds=3, optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8),
    ],
)
