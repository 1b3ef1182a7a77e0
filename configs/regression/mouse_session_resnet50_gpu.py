# The GPU-sized recipe of mouse_session_resnet18.py (the CPU-sized one): ResNet-50 on
# 256 px crops, batch 32, 4000 iterations, the same session, splits, losses and learned
# keypoint offsets. On the CPU the 400-iteration ResNet-18 still improved with 200 more
# iterations (4.9 to 3.6 px held out, docs/benchmarks.md): this recipe trains it out.
#   python tools/train.py configs/regression/mouse_session_resnet50_gpu.py --amp \
#       --cfg-options train_dataloader.dataset.fit_results=work_dirs/mouse_fit/fit_results.h5 \
#       model.compile_loss=True
# (--amp: bf16 mixed precision; compile_loss compiles the head and the losses, worth it on
# a GPU only.) On one H200 (bf16, eager) 3300 of its iterations took 473 s and reached
# 3.78 / 14.5 px held out (median / p90; docs/benchmarks.md, "The GPU-sized regression
# recipe"); `bash benchmarks/cuda.sh OUT recipe` measures it on a lent GPU.
_base_ = ['./mouse_session_resnet18.py']
ann_file = 'minimal_session_256.h5'
data = dict(path='data/mouse_session/minimal_session_256.h5', sleap=dict(target_size=256))
model = dict(
    backbone=dict(model_name='resnet50'),
    neck=dict(dim=256, depth=1, num_heads=8),
    head=dict(dim=256, depth=2, num_heads=8, num_iterations=3),
)
train_dataloader = dict(batch_size=32, num_workers=8, persistent_workers=True,
                        dataset=dict(ann_file=ann_file))
val_dataloader = dict(dataset=dict(ann_file=ann_file))
test_dataloader = val_dataloader
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4000, val_interval=500)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=200),
                   dict(type='CosineAnnealingLR', by_epoch=False, begin=200, end=4000,
                        eta_min=1e-5)]
default_hooks = dict(checkpoint=dict(interval=1000, by_epoch=False, max_keep_ckpts=2))
env_cfg = dict(dist_cfg=dict(backend='nccl'))
work_dir = 'work_dirs/mouse_session_resnet50_gpu'
