# Register synthetic point-cloud scans of the embedded demo mouse (27 joints, 3.3k
# vertices, millimetres): no model files needed. The scans are generated on first use.
#   python tools/register.py configs/registration/demo_mouse_synthetic.py
_base_ = ['../_base_/body_models/demo_mouse.py', '../_base_/registration/surface_stages.py']

# Squared distances in mm^2 (body length ~170 mm): the priors are weighted so a
# 1-sigma shape or a 1-rad pose costs about as much as 1 mm^2 of mean chamfer.
registrant = dict(
    handlers=[
        dict(type='SurfaceHandler', name='scan',
             loss=dict(type='ChamferLoss', direction='scan_to_model')),
        dict(type='SurfaceHandler', name='coverage', weight=1.0,
             loss=dict(type='ChamferLoss', direction='model_to_scan')),
        dict(type='ShapePriorHandler', name='shape_prior', weight=1e-2),
        dict(type='PosePriorHandler', name='pose_prior', weight=1e-2,
             loss=dict(type='PoseL2Prior')),
        dict(type='OffsetRegularizerHandler', name='offset_smooth', weight=0.0,
             loss=dict(type='LaplacianRegularizer')),
        dict(type='OffsetRegularizerHandler', name='offset_edges', weight=0.0,
             loss=dict(type='EdgeLengthRegularizer', mode='offset_difference')),
    ],
)

data = dict(
    scan_dir='work_dirs/demo_mouse_synthetic/scans',
    num_points=600,
    sample='surface',
    batch_size=8,
    synthetic=dict(num_scans=8, num_points=600, noise_std=0.1, pose_std=0.1,
                   global_orient_std=1.0, transl_std=20.0, seed=0),
)
