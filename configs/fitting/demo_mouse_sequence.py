# Sequence fitting (SMAL4V-style): every batch is one session's frames in order; one shape
# per animal (shared betas) and temporal smoothness on the joints couple the frames, so
# these stages optimise the summed loss of the sequence.
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
)
