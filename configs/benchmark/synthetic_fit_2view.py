# Fitting benchmarked on exactly the data, split and metrics of the regression demo
# (configs/regression/synthetic_multiview_resnet18.py): the demo mouse fitted to the 2D
# keypoints of the synthetic 2-view 64 px dataset's test loader samples (made on first use).
#   python tools/test.py configs/benchmark/synthetic_fit_2view.py
# and, for the regressor on the same samples:
#   python tools/test.py configs/regression/synthetic_multiview_resnet18.py CHECKPOINT
_base_ = ['../_base_/body_models/demo_mouse.py', '../_base_/fitting/keypoints_2d.py',
          '../_base_/datasets/synthetic_2view_64px.py']
data = dict(batch_size=32)
work_dir = 'work_dirs/synthetic_fit_2view'
