# The sleap-anipose minimal session: one mouse, 4 calibrated cameras (back, mid, side, top),
# 120 proofread frames, 15 SLEAP keypoints, triangulated 3D points. Ingest it first (the
# ingestion tool of smilfit.datasets.ingest_sleap), e.g.
#   python tools/preprocess_sleap.py \
#       ../shared/data/sleap_anipose_minimal_session/minimal_session \
#       data/mouse_session/minimal_session.h5
# Paths are relative to the working directory; point them elsewhere with e.g.
#   --cfg-options test_dataloader.dataset.data_root=/data/mouse \
#                 test_dataloader.dataset.ann_file=my_session.h5
# (the same for train_dataloader). Caveat: the 'side' camera's calibration is an upstream
# copy of 'top' (reprojection ~92 px there): a natural "bad camera" case.
#
# One session: frames are held out by contiguous time blocks (split_by='time': the 120
# frames in 10 blocks, 8 for training and 2 held out, chosen by the seed; 2 frames either
# side of a held-out block are left out of training too: neighbouring frames are near
# copies). The dataset's metainfo['split_frames'] names the frames of each split. The
# training loader decodes and augments the 1280 x 1024 frames; the validation and test
# loaders read the held-out blocks.
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
# 2D PCK, 3D keypoint error (the calibration's units) and 2D reprojection error
# (smilfit.evaluation, docs/metrics.md). The 2D errors are in the pixels of the recording
# (pixels='source': through each crop's matrix), as a fit's and the benchmarks' are, not
# in those of crops that vary in size with the animal's box. A config without a schedule
# that has them also sets val_cfg = dict(type='ValLoop') and test_cfg = dict(type='TestLoop').
val_evaluator = [dict(type='KeypointPCKMetric', pixels='source'),
                 dict(type='MPJPEMetric', nonfinite_pred='ignore'),
                 dict(type='ReprojectionErrorMetric', pixels='source')]
test_evaluator = val_evaluator
