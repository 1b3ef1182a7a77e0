# The multi-view regressor on a real calibrated SLEAP session: the shared 4-camera mouse
# session (1280 x 1024 frames, calibration in millimetres) with the SMIL mouse (its own
# units, about 3 long). CPU-sized: ResNet-18 on 128 px crops around the animal, 400
# iterations. The crops are prepared on first use (data below):
#   python tools/train.py configs/regression/mouse_session_resnet18.py
# The rig's units need no setting: before training, RigUnitsHook measures how many of the
# calibration's units one model unit is (the animal's size against the model's, from the
# triangulated keypoints) and how far the animal is from the cameras; the network works
# in model units and its predictions come back in the calibration's.
# Frames are held out by contiguous time blocks of the session (neighbouring frames are
# near copies): train on 80 %, validate on 20 % (_base_/datasets/mouse_session.py).
_base_ = ['../_base_/default_runtime.py', '../_base_/schedules/adamw_cosine_300iter.py',
          '../_base_/models/multi_view_resnet.py', '../_base_/datasets/mouse_session.py']
custom_imports = dict(imports=['smilfit.models'], allow_failed_imports=False)
ann_file = 'minimal_session_128.h5'
# Made on first use from the session (128 px crops around the animal, as
# tools/preprocess_sleap.py makes them); point data.sleap.input at your own session.
data = dict(path='data/mouse_session/minimal_session_128.h5',
            sleap=dict(input='../shared/data/sleap_anipose_minimal_session/minimal_session',
                       crop_mode='bbox_crop', target_size=128, units='mm', images=True))
num_views = 4
# The SMIL mouse (as _base_/body_models/mouse.py; the model base names a body model too).
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
    # the base model's losses; kp3d in squared model units (the mouse is about 3 long),
    # weighted to count like a few pixels of 2D error at 10 % of the body length
    loss_weights=dict(kp2d=1e-2, kp3d=1.0),
    # labels sit where the labellers click (e.g. 'Trunk' on the fur above the spine), not
    # on the model's joints: one learned offset per keypoint in its joint's frame
    keypoint_offsets=True,
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
