# SMIL mouse fitted to a calibrated multi-camera SLEAP session, read directly: on first use
# the session's keypoints and calibration are ingested (no images) into data.path.
#   python tools/fit.py configs/fitting/mouse_multiview.py \
#       --cfg-options data.sleap.input=path/to/session \
#       body_model.model_path=path/to/SMILy_Mouse_static_joints.pkl
# (defaults: the shared 4-camera session and mouse model beside the checkout). A dataset
# made by tools/preprocess_sleap.py (with images, crops) works too: set data.path to it.
# The model is in its own units and the calibration in millimetres: every pose stage fits a
# global scale (global_log_scale), initialised by a similarity (Umeyama) alignment of
# the rest pose to the triangulated keypoints. The shared session's 'side' camera
# calibration is a copy of 'top' (~92 px reprojection): the robust (GMoF) keypoint loss
# keeps it from dominating.
_base_ = ['../_base_/body_models/mouse.py', '../_base_/fitting/keypoints_2d.py']

data = dict(
    path='work_dirs/mouse_multiview/minimal_session_keypoints.h5',
    sleap=dict(input='../shared/data/sleap_anipose_minimal_session/minimal_session'),
    joint_lookup='configs/fitting/mouse_joint_lookup.csv',
    batch_size=40,
)
registrant = dict(
    # The skeleton's bone offsets and the keypoints' offsets from their joints are one
    # per session batch (the animal), the pose and the global scale per frame.
    shared=dict(bone_trans=True, keypoint_offsets=True),
    handlers=[
        # Labelled points are not joints (the 'Trunk' label sits on the back, ear tips
        # and nose on the skin): each keypoint gets an offset in the frame of its joint,
        # fitted per session, that turns and scales with the body.
        dict(type='Keypoint2DHandler', name='kp2d', offsets_frame='joint',
             loss=dict(type='KeypointMSELoss', robust='gmof', sigma=10.0)),
        # The same keypoints with a wider robust kernel for the first stages: far from
        # the solution a narrow kernel would discard too much (graduated non-convexity).
        dict(type='Keypoint2DHandler', name='kp2d_coarse', offsets_frame='joint',
             loss=dict(type='KeypointMSELoss', robust='gmof', sigma=20.0)),
        dict(type='ShapePriorHandler', name='shape_prior', weight=1.0,
             loss=dict(type='ShapePriorLoss')),
        dict(type='PosePriorHandler', name='pose_prior', weight=10.0,
             loss=dict(type='PoseL2Prior')),
        dict(type='ScaleTranslationPriorHandler', name='bone_prior', weight=100.0,
             loss=None, bone_trans_loss=dict(type='BoneTranslationPrior')),
        # keeps the keypoint offsets short (the handler's translation term reads them)
        dict(type='ScaleTranslationPriorHandler', name='offset_prior', weight=100.0,
             loss=None, bone_trans_loss=dict(type='KeypointOffsetPrior'),
             bone_trans_key='keypoint_offsets'),
    ],
    stages=[
        dict(name='rigid', fit=['global_orient', 'transl', 'global_log_scale'], n_iter=15,
             optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             loss_weights=dict(kp2d=0.0, shape_prior=0.0, pose_prior=0.0, bone_prior=0.0,
                              offset_prior=0.0)),
        # No shape stage: the model's joints are static (its betas move neither joints
        # nor keypoints; see _base_/body_models/mouse.py).
        dict(name='pose_shape',
             fit=['global_orient', 'transl', 'body_pose', 'global_log_scale'],
             n_iter=30, optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             loss_weights=dict(kp2d=0.0, bone_prior=0.0, offset_prior=0.0)),
        # The session's skeleton: bone offsets and keypoint offsets, all frames at once
        # (pose held fixed).
        dict(name='skeleton', fit=['bone_trans', 'keypoint_offsets'], n_iter=10,
             optimizer=dict(type='LBFGS', max_iter=30, line_search_fn='strong_wolfe'),
             loss_weights=dict(kp2d_coarse=0.0)),
        dict(name='refine',
             fit=['global_orient', 'transl', 'body_pose', 'global_log_scale'],
             n_iter=20, optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             # the skeleton priors are constant here (bone_trans and offsets held fixed)
             loss_weights=dict(kp2d_coarse=0.0, bone_prior=0.0, offset_prior=0.0)),
        # A second round: the skeleton from better poses, then the poses again.
        dict(name='skeleton2', fit=['bone_trans', 'keypoint_offsets'], n_iter=10,
             optimizer=dict(type='LBFGS', max_iter=30, line_search_fn='strong_wolfe'),
             loss_weights=dict(kp2d_coarse=0.0)),
        dict(name='refine2',
             fit=['global_orient', 'transl', 'body_pose', 'global_log_scale'],
             n_iter=20, optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             loss_weights=dict(kp2d_coarse=0.0, bone_prior=0.0, offset_prior=0.0)),
    ],
)
