# Several animals in calibrated multi-camera sessions, each with its own skeleton: the
# bone translations are shared per animal (its track, else its instance, within its
# session) and estimated once from up to data.skeleton_frames of its frames spread over
# the session; every frame is then fitted in batches with its animal's skeleton fixed
# (docs/fitting.md, "One skeleton per animal"). Made for the demo mouse on keypoint-only data,
# e.g. smilfit.datasets.synthetic_animals.generate_animal_session:
#   python tools/fit.py configs/fitting/animal_skeletons.py \
#       --cfg-options data.path=path/to/session.h5
_base_ = ['../_base_/body_models/demo_mouse.py']

# batch_size: samples fitted together (why 1024: docs/fitting.md, "One skeleton per animal")
data = dict(path='work_dirs/animal_skeletons/session.h5', batch_size=1024, skeleton_frames=200)
_lm = dict(optimizer=dict(type='LevenbergMarquardt'), ftol=1e-10)
# This stage only brings the poses near enough for the joint stage (which fits them
# again), so it stops at a relative decrease of 1e-4.
_pose = dict(fit=['global_orient', 'transl', 'body_pose'], n_iter=30,
             optimizer=dict(type='LevenbergMarquardt'), ftol=1e-4)
# Pose and skeleton together: one Levenberg-Marquardt over each animal's frames and its
# skeleton (the frames' poses eliminated by the Schur complement, one solve per animal;
# docs/fitting.md). Alternating skeleton-only and pose-only stages stalls far from a
# skeleton that differs from the model's: a bone's length trades off against the
# neighbouring joints' rotations, which only the joint step moves together.
registrant = dict(
    type='SMILRegistrant',
    init='triangulation',
    shared=dict(bone_trans=True),
    handlers=[
        dict(type='Keypoint2DHandler', name='kp2d', loss=dict(type='KeypointMSELoss')),
        dict(type='PosePriorHandler', name='pose_prior', weight=1e-4,
             loss=dict(type='PoseL2Prior')),
    ],
    stages=[
        # (rigid and pose are coarse: frames started from a network's prediction,
        # data.init_from, skip them)
        dict(name='rigid', fit=['global_orient', 'transl'], n_iter=10, coarse=True, **_lm),
        dict(name='pose', coarse=True, **_pose),
        # (In the per-frame pass, with the skeleton held fixed, this stage refines the
        # poses.)
        dict(name='pose_skeleton', fit=['global_orient', 'transl', 'body_pose', 'bone_trans'],
             n_iter=50, **_lm),
    ],
)
