# mouse_session_resnet18.py trained without the labels one camera gets wrong: besides the
# cameras the fit's report names as far off (side), the labels of each keypoint it names
# as far from where the other cameras put it (here 10 of back's 15) get confidence 0.
# Train it as the shipped recipe, with the fit as labels:
#   python tools/train.py configs/regression/mouse_session_resnet18_camera_keypoints.py \
#       --cfg-options train_dataloader.dataset.fit_results=work_dirs/mouse_fit/fit_results.h5
# and compare it with the shipped one on the benchmark's held-out blocks:
#   python benchmarks/real_session_regression.py --table-only --seeds 0 1 2 \
#       --config configs/regression/mouse_session_resnet18_camera_keypoints.py
# On the shared session this halves the error in mid and top at best, and raises the 90th
# percentile scored with back to the fit's own (docs/benchmarks.md, "Training without the
# labels one camera gets wrong").
_base_ = ['./mouse_session_resnet18.py']
train_dataloader = dict(dataset=dict(fit_outlier_labels='camera_keypoints'))
work_dir = 'work_dirs/mouse_session_resnet18_camera_keypoints'
