# Synthetic multi-view data rendered from the demo mouse (GT images, masks, 2D/3D keypoints,
# cameras and body parameters). Make the file first:
#   python tools/make_synthetic_dataset.py data/synthetic/synthetic_multiview.h5 \
#       --sessions 40 --frames 50 --views 4
# Paths are relative to the working directory; point them elsewhere with e.g.
#   --cfg-options train_dataloader.dataset.data_root=/data/synth \
#                 val_dataloader.dataset.data_root=/data/synth \
#                 test_dataloader.dataset.data_root=/data/synth
# Splits are by session (animal), deterministic given split_seed.
dataset_type = 'MultiViewHDF5Dataset'
data_root = 'data/synthetic'
ann_file = 'synthetic_multiview.h5'
image_size = (256, 256)  # (W, H) after ResizeViews
split_ratios = (0.8, 0.1, 0.1)
split_seed = 0
max_views = 4
flip_pairs = [('ear_L', 'ear_R'), ('hip_L', 'hip_R'), ('knee_L', 'knee_R'),
              ('hind_paw_L', 'hind_paw_R'), ('shoulder_L', 'shoulder_R'),
              ('elbow_L', 'elbow_R'), ('front_paw_L', 'front_paw_R'),
              ('ear_L_tip', 'ear_R_tip'), ('front_paw_L_tip', 'front_paw_R_tip'),
              ('hind_paw_L_tip', 'hind_paw_R_tip')]

train_pipeline = [
    dict(type='PhotometricAugment', brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02,
         noise_std=4.0, blur_prob=0.2),
    dict(type='GeometricAugment', scale_range=(0.85, 1.15), rotation=15.0, translate=0.05,
         flip_prob=0.0, flip_pairs=flip_pairs),
    dict(type='ResizeViews', size=image_size),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='ResizeViews', size=image_size),
    dict(type='PackInputs'),
]

dataset_common = dict(type=dataset_type, data_root=data_root, ann_file=ann_file,
                split_ratios=split_ratios, seed=split_seed, max_views=max_views)

train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(dataset_common, split='train', pipeline=train_pipeline))
# Validation and test loaders differ only in the split.
eval_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'))
val_dataloader = dict(
    eval_dataloader,
    dataset=dict(dataset_common, split='val', test_mode=True, pipeline=test_pipeline))
test_dataloader = dict(
    eval_dataloader,
    dataset=dict(dataset_common, split='test', test_mode=True, pipeline=test_pipeline))
