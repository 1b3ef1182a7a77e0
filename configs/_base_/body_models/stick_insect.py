# SMIL stick insect (55 joints, 3020 vertices, 5 betas; joints regressed from the mesh).
# The model file is third-party and not shipped: point model_path at your copy, e.g.
#   --cfg-options body_model.model_path=path/to/SMILy_STICK.pkl
# (the default is where the team's shared data sits beside a checkout).
body_model = dict(
    type='SMILModel',
    model_path='../shared/models/SMILy_STICK.pkl',
    propagate_scaling=False,
    reference_compat=False,
)
