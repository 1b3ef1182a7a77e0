# mouse_session_resnet18.py trained without the labels one camera gets wrong: the labels
# of each keypoint the fit's report names as far from where the other cameras put it get
# confidence 0 (besides the cameras it names as far off). Train it with the fit as labels:
#   python tools/train.py configs/regression/mouse_session_resnet18_camera_keypoints.py \
#       --cfg-options train_dataloader.dataset.fit_results=work_dirs/mouse_fit/fit_results.h5
# What it changes on the shared session: docs/benchmarks.md, "Training without the labels
# one camera gets wrong".
_base_ = ['./mouse_session_resnet18.py']
train_dataloader = dict(dataset=dict(fit_outlier_labels='camera_keypoints'))
work_dir = 'work_dirs/mouse_session_resnet18_camera_keypoints'
