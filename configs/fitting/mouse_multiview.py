# The SMIL mouse fitted to a calibrated multi-camera SLEAP session; on first use the
# session's keypoints and calibration are read into data.path. For your own session:
#   python tools/fit.py configs/fitting/mouse_multiview.py --cfg-options \
#       data.sleap.input=my_session/ body_model.model_path=my_model.pkl \
#       data.joint_lookup=my_joint_lookup.csv
# Why each setting is what it is, with the benchmark that decides it: docs/fitting.md,
# "Why these settings".
_base_ = ['../_base_/body_models/mouse.py', '../_base_/fitting/keypoints_2d.py']

data = dict(
    path='work_dirs/mouse_multiview/minimal_session_keypoints.h5',
    sleap=dict(input='../shared/data/sleap_anipose_minimal_session/minimal_session'),
    joint_lookup='configs/fitting/mouse_joint_lookup.csv',  # your keypoint -> model joint
    batch_size=256,                                         # frames fitted together
)
lm = dict(type='LevenbergMarquardt', linear_dtype='float32')
pose_params = ['global_orient', 'transl', 'body_pose', 'global_log_scale']
skeleton_params = ['bone_trans', 'keypoint_offsets']
registrant = dict(
    shared=dict(bone_trans=True, keypoint_offsets=True),    # one skeleton per animal
    handlers=[
        # errors in noise units measured from the residuals, robust beyond ~3 of them;
        # an instance labelled with left and right exchanged is fitted exchanged
        dict(type='Keypoint2DHandler', name='kp2d', offsets_frame='joint',
             scale_from_residuals=True, exchange_left_right=True,
             loss=dict(type='KeypointMSELoss', robust='gmof', sigma=3.0)),
        dict(type='ShapePriorHandler', name='shape_prior', weight=1.0,
             loss=dict(type='ShapePriorLoss')),
        # each animal's own poses: mean and spread of its frames, re-estimated every stage
        dict(type='AnimalPosePriorHandler', name='pose_prior', weight=1.0),
        # in fractions of the body length: bones 5 %, label offsets 10 %, symmetry 2 %
        dict(type='SkeletonPriorHandler', name='skeleton_prior', bone_scale=0.05,
             offset_scale=0.1, symmetry_scale=0.02),
        # video: an animal's consecutive frames move by the motion's own scale
        # (labelled frames far apart are fitted alone)
        dict(type='MotionPriorHandler', name='motion', weight=1.0),
    ],
    stages=[
        # the rest pose turned, moved and scaled onto the labels
        dict(name='rigid', fit=['global_orient', 'transl', 'global_log_scale'], n_iter=15,
             optimizer=lm, ftol=1e-6, coarse=True,
             loss_weights=dict(shape_prior=0.0, pose_prior=0.0, motion=0.0)),
        # a first pose, frame by frame, near enough for the skeleton (skipped from a
        # network's start); the motion's scale is measured from it
        dict(name='pose', fit=pose_params, n_iter=30, optimizer=lm, ftol=1e-4, seed_ftol=1e-2,
             coarse=True, loss_weights=dict(motion=0.0)),
        # the animal's bones and label offsets from all its frames, poses held; labels
        # the joint lookup leaves out first placed at the nearest joint or skin point
        dict(name='skeleton', fit=skeleton_params, n_iter=10, rounds=2, optimizer=lm, ftol=1e-6,
             place_unmapped=True),
        dict(name='refine', fit=pose_params, n_iter=20, optimizer=lm, ftol=1e-4, seed_ftol=1e-2),
        # labels on the skin made markers moved by the skin there, where that follows
        # them better than their joints do
        dict(name='skeleton2', fit=skeleton_params, n_iter=10, rounds=2, optimizer=lm, ftol=1e-6,
             place_markers=True),
        dict(name='refine2', fit=pose_params, n_iter=20, optimizer=lm, ftol=1e-4),
    ],
)
