# AdamW with linear warm-up and cosine decay, for full training runs (210 epochs).
# Warm-up over the first 500 iterations; cosine annealing to 1e-2 x lr from epoch 5 to
# the end, updated every iteration (convert_to_iter_based). Gradients are clipped to a
# global L2 norm of 1.
max_epochs = 210
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
# A config with a validation set adds val_dataloader, val_evaluator and val_cfg = dict().

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # No weight decay on norm layers and biases.
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=1.0, norm_type=2),
)

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=5, end=max_epochs,
         T_max=max_epochs - 5, eta_min_ratio=1e-2, convert_to_iter_based=True),
]

auto_scale_lr = dict(enable=False, base_batch_size=64)
