# The shared 4-camera mouse session (back, mid, side, top; 120 proofread frames, 15
# keypoints), prepared with tools/preprocess_sleap.py into data_root/ann_file (another
# file: --cfg-options train_dataloader.dataset.ann_file=... and val's). The 'side'
# camera's calibration is a copy of 'top' (~92 px off): a natural "bad camera" case.
# Frames are held out in contiguous time blocks (10 blocks, 8 train, 2 held out, 2 frames
# of gap): neighbouring frames are near copies. metainfo['split_frames'] names them.
split = dict(split_by='time', split_ratios=(0.8, 0.2, 0.0), time_blocks=10, time_gap=2)
dataset_type = 'MultiViewHDF5Dataset'
data_root = 'data/mouse_session'
ann_file = 'minimal_session.h5'
image_size = (320, 256)  # (W, H) of the training loader's images, same aspect as 1280 x 1024
flip_pairs = [('Ear_L', 'Ear_R'), ('Shoulder_left', 'Shoulder_right'),
              ('Haunch_left', 'Haunch_right')]

train_pipeline = [
    dict(type='ResizeViews', size=image_size),
    dict(type='PhotometricAugment'),
    dict(type='GeometricAugment', scale_range=(0.9, 1.1), rotation=10.0, translate=0.05,
         flip_prob=0.0, flip_pairs=flip_pairs),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='ResizeViews', size=image_size), dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file=ann_file, split='train',
                 pipeline=train_pipeline, **split))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file=ann_file, split='val',
                 test_mode=True, pipeline=test_pipeline, **split))
test_dataloader = val_dataloader
# 2D errors in the recording's pixels (through each crop's matrix), 3D in the calibration's
# units (docs/metrics.md); a config without a schedule also sets val_cfg and test_cfg.
val_evaluator = [dict(type='KeypointPCKMetric', pixels='source'),
                 dict(type='MPJPEMetric', nonfinite_pred='ignore'),
                 dict(type='ReprojectionErrorMetric', pixels='source')]
test_evaluator = val_evaluator
