# Runtime defaults for training with tools/train.py (mmengine Runner). A training config:
#   _base_ = ['../_base_/default_runtime.py', '../_base_/schedules/adamw_cosine.py',
#             '../_base_/datasets/synthetic_multiview.py']
#   model = dict(type=..., ...)
# tools/train.py adds CheckpointMetaHook (config text, smilfit version and the model's
# checkpoint_meta() in every checkpoint), RandomStateHook (exact --resume), RigUnitsHook
# (a calibrated rig's units measured before training) and DataSplitHook (the frames the run
# trains and validates on, in the log's first lines) when they are missing from
# custom_hooks; they are listed here so the config says what runs.
default_scope = 'smilfit'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # by_epoch follows the schedule: an iteration-based schedule sets by_epoch=False here.
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [
    dict(type='CheckpointMetaHook'),
    dict(type='RandomStateHook'),
    dict(type='RigUnitsHook'),
    dict(type='DataSplitHook'),
    # Optional: an exponential moving average of the weights (mmengine's EMAHook; the
    # checkpoint then holds both, and validation uses the averaged weights):
    # dict(type='EMAHook', momentum=2e-4, update_buffers=True),
    # Optional: a loss-weight curriculum, {epoch: {loss name: weight}} (0-based epochs):
    # dict(type='LossWeightCurriculumHook', schedule={0: dict(shape_prior=0.0),
    #                                                 10: dict(shape_prior=1e-2)}),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # nccl on GPUs; without a GPU smilfit's mmengine fixes switch to gloo.
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
# No visualizer name: the Runner names it after the experiment, so two runs in one
# process (notebooks, tests) do not share one instance and its save_dir.
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'

load_from = None  # initial weights (fine-tuning); --resume continues a run instead
resume = False
# seed fixes initialisation, sampling and augmentation; deterministic=True also makes
# cuDNN/CUDA kernels deterministic (slower) for bit-exact reruns on GPU.
randomness = dict(seed=0, deterministic=False)
