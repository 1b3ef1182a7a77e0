# Register synthetic point-cloud scans of the SMIL stick insect: random shape (from the
# model's prior) and pose, surfaces resampled area-uniformly, Gaussian noise. The scans
# are generated on first use into data.scan_dir (with ground_truth.npz, so summary.json
# reports the per-vertex error against the true meshes). CI-sized: 8 scans, 600 points.
#   python tools/register.py configs/registration/stick_synthetic.py
#   python tools/build_model.py ../shared/models/SMILy_STICK.pkl \
#       work_dirs/stick_synthetic/registrations.npz -o work_dirs/stick_synthetic/learned.json
# For real scans: --cfg-options data.scan_dir=my_scans data.num_points=5000 and drop
# data.synthetic. The model file is third-party: point body_model.model_path at your copy.
_base_ = ['../_base_/body_models/stick_insect.py', './_base_/surface_stages.py']

# Squared distances in model units (body length ~1.8): the data term is ~1e-6 at a
# good fit, so the priors are weighted to match.
registrant = dict(
    handlers=[
        dict(type='SurfaceHandler', name='scan',
             loss=dict(type='ChamferLoss', direction='scan_to_model')),
        dict(type='ShapePriorHandler', name='shape_prior', weight=1e-6),
        dict(type='PosePriorHandler', name='pose_prior', weight=1e-6,
             loss=dict(type='PoseL2Prior')),
        dict(type='OffsetRegularizerHandler', name='offset_smooth', weight=0.0,
             loss=dict(type='LaplacianRegularizer')),
        dict(type='OffsetRegularizerHandler', name='offset_edges', weight=0.0,
             loss=dict(type='EdgeLengthRegularizer', mode='offset_difference')),
    ],
)

data = dict(
    scan_dir='work_dirs/stick_synthetic/scans',
    num_points=600,            # resampled per scan (None: keep every point)
    sample='surface',
    batch_size=8,
    synthetic=dict(num_scans=8, num_points=600, noise_std=0.001, pose_std=0.05,
                   global_orient_std=1.0, transl_std=0.2, seed=0),
)
