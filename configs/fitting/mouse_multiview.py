# SMIL mouse fitted to a calibrated multi-camera SLEAP session. Preprocess first:
#   python tools/preprocess_sleap.py path/to/minimal_session work_dirs/mouse_session/minimal_session.h5
# then:
#   python tools/fit.py configs/fitting/mouse_multiview.py \
#       --cfg-options body_model.model_path=path/to/SMILy_Mouse_static_joints.pkl
# The shared session's 'side' camera calibration is a copy of 'top' (~92 px reprojection):
# the robust (GMoF) keypoint loss keeps it from dominating.
_base_ = ['../_base_/body_models/mouse.py', '../_base_/fitting/keypoints_2d.py']

data = dict(
    path='work_dirs/mouse_session/minimal_session.h5',
    joint_lookup='configs/fitting/mouse_joint_lookup.csv',
    batch_size=40,
)
