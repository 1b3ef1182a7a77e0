# The demo: fit the embedded demo mouse to a synthetic 4-camera dataset that is
# generated on first use (no data files needed):
#   python tools/fit.py configs/fitting/demo_mouse.py
_base_ = ['../_base_/body_models/demo_mouse.py', '../_base_/fitting/keypoints_2d.py']

data = dict(
    path='work_dirs/demo_mouse/synthetic_4view.h5',
    synthetic=dict(num_sessions=2, frames_per_session=16, num_views=4, image_size=256,
                   pose_std=0.3, masks=True, seed=0),
    batch_size=32,
)
# Visual outputs after fitting (tools/fit.py; --no-visualize skips them): an overlay
# video per session, per-frame meshes (.obj), the animation (npz + json) and plots.
visualize = dict(video=True, meshes=True, animation=True, plots=True)
