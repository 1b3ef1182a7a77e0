# Synthetic multi-view data rendered from the config's body model, generated on first use
# (smilfit.apis.fitting.prepare_data(cfg) makes data.path from data.synthetic when it is
# missing; the training tool calls it before building the Runner).
data = dict(
    path='work_dirs/regression_synthetic/synthetic_2view_64px_heading90.h5',
    # Headings within 90 degrees of the rig's first camera: a quick-start curriculum (a
    # uniform heading is the hard part for a small model trained from scratch on a CPU;
    # see docs/regression.md). Set heading_range_deg=360 for the full problem.
    synthetic=dict(num_sessions=24, frames_per_session=16, num_views=2, image_size=64,
                   heading_range_deg=90.0,
                   pose_std=0.2, tilt_std=0.1, masks=True, seed=0),
)
image_size = (64, 64)
max_views = 2
dataset_common = dict(type='MultiViewHDF5Dataset', ann_file=data['path'],
                      split_ratios=(0.8, 0.2, 0.0), seed=0, max_views=max_views)
train_pipeline = [
    dict(type='PhotometricAugment', brightness=0.1, contrast=0.1, saturation=0.1, hue=0.0,
         noise_std=2.0, blur_prob=0.0),
    dict(type='ResizeViews', size=image_size),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='ResizeViews', size=image_size), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=8, num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(dataset_common, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=0, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(dataset_common, split='val', test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
# 2D PCK, 3D joint error (data keypoints no model keypoint matches are left out) and 2D
# reprojection error (smilfit.evaluation, docs/metrics.md).
val_evaluator = [dict(type='KeypointPCKMetric'),
                 dict(type='MPJPEMetric', nonfinite_pred='ignore'),
                 dict(type='ReprojectionErrorMetric')]
test_evaluator = val_evaluator
