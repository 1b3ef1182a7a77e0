# A short AdamW schedule (20 epochs) for smoke tests, small datasets and fine-tuning.
# Linear warm-up over the first 100 iterations, then the learning rate drops 10x at
# epochs 14 and 18. Gradients are clipped to a global L2 norm of 1.
train_cfg = dict(by_epoch=True, max_epochs=20, val_interval=5)
# A config with a validation set adds val_dataloader, val_evaluator and val_cfg = dict().

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2),
)

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=20, milestones=[14, 18], gamma=0.1),
]

# lr above is for this total batch size (GPUs x samples per GPU); with
# auto_scale_lr.enable=True mmengine scales it linearly to the actual one.
auto_scale_lr = dict(enable=False, base_batch_size=64)
