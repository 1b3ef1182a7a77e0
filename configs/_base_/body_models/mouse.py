# SMIL mouse (31 joints, 11263 vertices, 3 betas; static joint locations).
# Not shipped: override with --cfg-options body_model.model_path=path/to/model.
body_model = dict(
    type='SMILModel',
    model_path='../shared/models/SMILy_Mouse_static_joints.pkl',
    propagate_scaling=False,
    reference_compat=False,
)
