# A tiny temporal (video) regressor on the synthetic 2-view 64 px data: clips of 4
# consecutive frames (ClipHDF5Dataset), the multi-view frame model of
# synthetic_multiview_resnet18.py plus a bidirectional GRU over each clip's fused
# features and a joint-smoothness term. A smoke-test-sized run (CPU): the synthetic
# frames of a session are independent poses, so the smoothness weight stays small; on real
# video raise it. Test-time adaptation of its checkpoint to one session:
#   python tools/train.py configs/regression/synthetic_temporal_resnet18.py
#   python tools/adapt.py configs/regression/synthetic_temporal_resnet18.py \
#       work_dirs/synthetic_temporal_resnet18/iter_100.pth --session synthetic_0003 \
#       --annotated-every 4
_base_ = ['./synthetic_multiview_resnet18.py']
custom_imports = dict(imports=['smilfit.models', 'smilfit.datasets.clip_dataset'],
                      allow_failed_imports=False)
clip_length = 4
model = dict(
    type='TemporalRegressor',
    temporal=dict(kind='gru', num_layers=1),
    temporal_losses=dict(smooth_joints=dict(
        target='joints', loss=dict(type='TemporalSmoothnessLoss', velocity_weight=1.0,
                                   acceleration_weight=1.0, normalize='mean'))),
    loss_weights=dict(smooth_joints=1e-2),
)
clip_common = dict(type='ClipHDF5Dataset', clip_length=clip_length)
train_dataloader = dict(
    batch_size=2,
    dataset=dict(clip_common, clip_stride=1, min_valid_frames=clip_length))
val_dataloader = dict(batch_size=4, dataset=dict(clip_common))
test_dataloader = val_dataloader
train_cfg = dict(type='IterBasedTrainLoop', max_iters=100, val_interval=100)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
                   dict(type='CosineAnnealingLR', by_epoch=False, begin=20, end=100,
                        eta_min=1e-5)]
default_hooks = dict(checkpoint=dict(interval=100))
# tools/adapt.py: SMAL4V-style online adaptation to one session (see smilfit/cli/adapt.py).
adapt_cfg = dict(split='val', clip_length=8, annotated_every=4, n_steps=30, lr=1e-4,
                 parameters='all', loss_weights=dict(smooth_joints=1e-2))
work_dir = 'work_dirs/synthetic_temporal_resnet18'
