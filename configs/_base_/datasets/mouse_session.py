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
# One session only, so there is nothing to hold out: both loaders use every frame
# (split=None). Fitting reads keypoints and cameras only (load_images=False); the training
# loader decodes and augments the 1280 x 1024 frames.
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
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file=ann_file, split=None,
                 pipeline=train_pipeline))
test_dataloader = dict(
    batch_size=16,
    num_workers=0,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file=ann_file, split=None,
                 test_mode=True, load_images=False, pipeline=test_pipeline))
