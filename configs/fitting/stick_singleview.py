# SMIL stick insect fitted to single-view 2D keypoints (synthetic data generated on first
# use from the model; point data.path at an ingested single-view dataset for real data).
# A single view leaves depth to the priors: keep the pose prior on.
#   python tools/fit.py configs/fitting/stick_singleview.py \
#       --cfg-options body_model.model_path=path/to/SMILy_STICK.pkl
_base_ = ['../_base_/body_models/stick_insect.py', '../_base_/fitting/keypoints_2d.py']

data = dict(
    path='work_dirs/stick_singleview/synthetic_1view.h5',
    synthetic=dict(num_sessions=2, frames_per_session=8, num_views=1, image_size=512,
                   pose_std=0.3, masks=False, seed=0),
    batch_size=16,
)
registrant = dict(init='zeros')  # one view: nothing to triangulate
