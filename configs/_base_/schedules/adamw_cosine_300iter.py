# A short iteration-based AdamW schedule (300 iterations) for the CPU regression demo:
# linear warm-up from 0.1 x lr over the first 20 iterations, then cosine decay to 1e-5 by
# iteration 300; validation every 150 iterations. Gradients are clipped to a global L2
# norm of 5.
# Iteration-based: a config on this schedule also sets
#   default_hooks = dict(checkpoint=dict(by_epoch=False))
#   log_processor = dict(by_epoch=False)
# (not here: ../default_runtime.py sets both, and mmengine refuses a key in two bases).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=300, val_interval=150)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3,
                                                         weight_decay=1e-4),
                     clip_grad=dict(max_norm=5.0))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
                   dict(type='CosineAnnealingLR', by_epoch=False, begin=20, end=300,
                        eta_min=1e-5)]
