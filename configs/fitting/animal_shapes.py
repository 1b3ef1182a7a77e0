# Several animals of a model with a shape space, each with its own shape: the shape
# coefficients (betas) are shared per animal (its track, else its instance, within its
# session) and estimated with the poses of up to data.skeleton_frames of its frames by one
# Levenberg-Marquardt per animal (docs/fitting.md, "One skeleton per animal"); every frame
# is then fitted in batches with its animal's shape fixed. For a model whose shape space
# cannot express the animals' proportions, fit bone translations instead
# (animal_skeletons.py). Made for the demo mouse on keypoint-only data, e.g.
# smilfit.datasets.synthetic_animals.generate_animal_session(..., betas=...):
#   python tools/fit.py configs/fitting/animal_shapes.py \
#       --cfg-options data.path=path/to/session.h5
# A static-joint model (SMIL mouse) needs static_joints_follow_shape=True for its shape to
# move its joints (configs/_base_/body_models/mouse.py).
_base_ = ['./animal_skeletons.py']

data = dict(path='work_dirs/animal_shapes/session.h5')
_lm = dict(optimizer=dict(type='LevenbergMarquardt'), ftol=1e-10)
_pose = ['global_orient', 'transl', 'body_pose']
registrant = dict(
    shared=dict(_delete_=True, betas=True),
    handlers=[
        dict(type='Keypoint2DHandler', name='kp2d', loss=dict(type='KeypointMSELoss')),
        # the shape space's own unit Gaussian, counted once per animal
        dict(type='ShapePriorHandler', name='shape_prior', weight=1.0,
             loss=dict(type='ShapePriorLoss')),
        dict(type='PosePriorHandler', name='pose_prior', weight=1e-4,
             loss=dict(type='PoseL2Prior')),
    ],
    stages=[
        dict(name='rigid', fit=['global_orient', 'transl'], n_iter=10, coarse=True, **_lm),
        dict(name='pose', fit=_pose, n_iter=30, coarse=True, **_lm),
        # Pose and shape together (the frames' poses eliminated by the Schur complement):
        # alternating shape-only and pose-only stages stalls, a bone's length trading
        # off against the neighbouring joints' rotations.
        dict(name='pose_shape', fit=_pose + ['betas'], n_iter=50, **_lm),
    ],
)
