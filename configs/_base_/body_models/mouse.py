# SMIL mouse (31 joints, 11263 vertices, 3 betas; static joint locations).
# Not shipped: override with --cfg-options body_model.model_path=path/to/model.
body_model = dict(
    type='SMILModel',
    model_path='../shared/models/SMILy_Mouse_static_joints.pkl',
    propagate_scaling=False,
    reference_compat=False,
    # Its joints are stored, not regressed: its shape moves the skin but not the joints
    # or joint keypoints. static_joints_follow_shape=True lets the shape move the joints
    # with the skin around each joint (the stored joints kept at betas = 0).
)
