# The multi-view regressor on a calibrated SLEAP session (the shared 4-camera mouse
# session, calibration in millimetres) with the SMIL mouse; CPU-sized: ResNet-18 on 128 px
# crops around the animal, 400 iterations. The crops are made on first use (data):
#   python tools/train.py configs/regression/mouse_session_resnet18.py
# The rig's units, the held-out time blocks and the fit as labels: docs/real_recordings.md.
_base_ = ['../_base_/default_runtime.py', '../_base_/schedules/adamw_cosine_300iter.py',
          '../_base_/models/multi_view_resnet.py', '../_base_/datasets/mouse_session.py']
custom_imports = dict(imports=['smilfit.models'], allow_failed_imports=False)
ann_file = 'minimal_session_128.h5'
# your session (the crops made as tools/preprocess_sleap.py makes them)
data = dict(path='data/mouse_session/minimal_session_128.h5',
            sleap=dict(input='../shared/data/sleap_anipose_minimal_session/minimal_session',
                       crop_mode='bbox_crop', target_size=128, units='mm', images=True))
num_views = 4
body_model = dict(type='SMILModel', model_path='../shared/models/SMILy_Mouse_static_joints.pkl',
                  propagate_scaling=False, reference_compat=False)
keypoint_names = ['Nose', 'Ear_R', 'Ear_L', 'TTI', 'TailTip', 'Head', 'Trunk', 'Tail_0',
                  'Tail_1', 'Tail_2', 'Shoulder_left', 'Shoulder_right', 'Haunch_left',
                  'Haunch_right', 'Neck']
model = dict(
    num_views=num_views,
    body_model=body_model,
    backbone=dict(model_name='resnet18'),
    neck=dict(dim=128, depth=1, num_heads=4),
    head=dict(dim=128, depth=2, num_heads=4, num_iterations=2),
    keypoint_names=keypoint_names,
    joint_lookup='configs/fitting/mouse_joint_lookup.csv',
    loss_weights=dict(kp2d=1e-2, kp3d=1.0),   # kp3d in squared model units
    keypoint_offsets=True,   # each label's learned offset from its joint
)
# The crops are 128 x 128 already: no resizing.
train_pipeline = [
    dict(type='PhotometricAugment', brightness=0.1, contrast=0.1, saturation=0.1, hue=0.0,
         noise_std=2.0, blur_prob=0.0),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(_delete_=True, type='InfiniteSampler', shuffle=True),
    dataset=dict(ann_file=ann_file, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(ann_file=ann_file, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(type='IterBasedTrainLoop', max_iters=400, val_interval=200)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
                   dict(type='CosineAnnealingLR', by_epoch=False, begin=20, end=400,
                        eta_min=1e-5)]
default_hooks = dict(logger=dict(interval=25),
                     checkpoint=dict(interval=400, by_epoch=False, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=10)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
work_dir = 'work_dirs/mouse_session_resnet18'
