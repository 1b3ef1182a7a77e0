# Register synthetic point-cloud scans of the SMIL stick insect: random shape (from the
# model's prior) and pose, surfaces resampled area-uniformly, Gaussian noise. The scans
# are generated on first use into data.scan_dir (with ground_truth.npz, so summary.json
# reports the per-vertex error against the true meshes). CI-sized: 10 scans of 500
# points, shapes drawn at twice the prior's spread (the stick insect's shape directions
# move vertices by only ~0.4-1 % of its length per sigma, the size of a registration's
# pose error), about 30 s on 2 CPU cores.
#   python tools/register.py configs/registration/stick_synthetic.py
#   python tools/build_model.py ../shared/models/SMILy_STICK.pkl \
#       work_dirs/stick_synthetic/registrations.npz -o work_dirs/stick_synthetic/learned.json
# For real scans: --cfg-options data.scan_dir=my_scans data.num_points=5000 and drop
# data.synthetic. The model file is third-party: point body_model.model_path at your copy.
_base_ = ['../_base_/body_models/stick_insect.py', '../_base_/registration/surface_stages.py']

# Squared distances in model units (body length ~1.8): the data term is ~1e-6 at a
# good fit, so the priors are weighted to match.
registrant = dict(
    handlers=[
        dict(type='SurfaceHandler', name='scan',
             loss=dict(type='ChamferLoss', direction='scan_to_model')),
        # Model vertices to their nearest scan point: pulls a template that is far
        # from the scan (size, limbs) onto it in the coarse stages; biased where the
        # scan is sparse, so it is turned down once pose and shape are close.
        dict(type='SurfaceHandler', name='coverage', weight=1.0,
             loss=dict(type='ChamferLoss', direction='model_to_scan')),
        dict(type='ShapePriorHandler', name='shape_prior', weight=1e-7),
        dict(type='PosePriorHandler', name='pose_prior', weight=1e-7,
             loss=dict(type='PoseL2Prior')),
        dict(type='OffsetRegularizerHandler', name='offset_smooth', weight=0.0,
             loss=dict(type='LaplacianRegularizer')),
        dict(type='OffsetRegularizerHandler', name='offset_edges', weight=0.0,
             loss=dict(type='EdgeLengthRegularizer', mode='offset_difference')),
    ],
)

data = dict(
    scan_dir='work_dirs/stick_synthetic/scans',
    num_points=500,            # resampled per scan (None: keep every point)
    sample='surface',
    batch_size=10,
    synthetic=dict(num_scans=10, num_points=500, noise_std=0.001, pose_std=0.05,
                   global_orient_std=1.0, betas_std=2.0, transl_std=0.2, seed=0),
)
