"""``tools/train.py CONFIG``: train a model with mmengine's Runner.

The config is an mmengine config (model, train_dataloader, train_cfg, optim_wrapper,
param_scheduler, hooks, ...), usually built on ``configs/_base_/default_runtime.py`` and a
schedule from ``configs/_base_/schedules/``. Checkpoints and logs go to ``--work-dir``
(default ``work_dirs/<config name>``).

Every run gets four hooks added when the config lacks them: ``CheckpointMetaHook``
(checkpoints carry the config text, the smilfit version and the model's
``checkpoint_meta()``), ``RandomStateHook`` (checkpoints carry the random generators,
so ``--resume`` continues exactly as an uninterrupted run would), ``RigUnitsHook`` (a
regressor with calibrated cameras measures the rig's units from the training data before
the first step, so a calibration in millimetres and a model in its own units just work)
and ``DataSplitHook`` (the log's first lines say which frames of which sessions the run
trains and validates on, and what a fit used as labels left out).

Examples::

    python tools/train.py configs/regression/my_model.py
    python tools/train.py CONFIG --resume                   # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume work_dirs/x/epoch_10.pth
    python tools/train.py CONFIG --amp --amp-dtype fp16     # mixed precision (GPU only)
    python tools/train.py CONFIG --amp --cfg-options model.compile_loss=True  # GPU: fused losses
    python tools/train.py CONFIG --cfg-options train_cfg.max_epochs=5 randomness.seed=1
    tools/dist_train.sh CONFIG 4                             # 4 processes via torchrun
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from mmengine.config import Config, DictAction

from . import prog_name
from .errors import RUN_ERRORS, USER_ERRORS, SmilfitUserError, report_error
from .threads import training_threads, wait_passively_if_threaded

# Hooks tools/train.py adds to every run (by type name) unless the config has them.
REQUIRED_HOOKS = ('CheckpointMetaHook', 'RandomStateHook', 'RigUnitsHook', 'DataSplitHook')
AMP_DTYPES = {'bf16': 'bfloat16', 'fp16': 'float16'}
# Optimizer wrappers --amp may replace (anything else is a custom wrapper: refuse).
PLAIN_OPTIM_WRAPPERS = ('OptimWrapper', 'AmpOptimWrapper')


class TrainConfigError(SmilfitUserError, ValueError):
    """The command line or the config cannot make a training run."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog_name('train'), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='training config file (.py)')
    parser.add_argument('--work-dir', help='checkpoints and logs (default: the config\'s '
                        'work_dir, else work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CHECKPOINT',
                        help='resume training: without a value from the newest complete '
                             'checkpoint in the work dir (a fresh start, with a warning, when '
                             'there is none; an error when all there are truncated), or from '
                             'CHECKPOINT')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper); needs a GPU')
    parser.add_argument('--amp-dtype', choices=sorted(AMP_DTYPES), default='bf16',
                        help='autocast dtype with --amp (default bf16; fp16 adds dynamic loss '
                             'scaling)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE', help='override config entries, e.g. '
                        'train_cfg.max_epochs=5 randomness.seed=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher: none (one process), pytorch '
                        '(torchrun, see tools/dist_train.sh), slurm (srun, see '
                        'tools/slurm_train.sh) or mpi')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: OMP_NUM_THREADS if set, else the '
                             "cores this process may use, shared among a launcher's "
                             'processes on the machine; with more than one, OpenMP waits '
                             'passively, which keeps training fast beside other busy '
                             'processes)')
    # torch.distributed.launch (deprecated) passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    return parser


def _hook_type_name(hook) -> str:
    """'RandomStateHook' for dict(type='smilfit.RandomStateHook'), type=<class>, or an instance."""
    hook_type = hook.get('type') if isinstance(hook, dict) else type(hook)
    name = hook_type.__name__ if isinstance(hook_type, type) else str(hook_type)
    return name.rpartition('.')[2]


def _with_required_hooks(custom_hooks) -> list:
    """``custom_hooks`` plus each of :data:`REQUIRED_HOOKS` it does not list yet."""
    hooks = list(custom_hooks or [])
    present = {_hook_type_name(h) for h in hooks}
    hooks.extend(dict(type=name) for name in REQUIRED_HOOKS if name not in present)
    return hooks


def _accelerator_available() -> bool:
    from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                                 is_npu_available)
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


def set_amp(cfg: Config, amp_dtype: str) -> None:
    """Switch ``cfg.optim_wrapper`` to mmengine's AmpOptimWrapper with ``amp_dtype``."""
    if not _accelerator_available():
        raise TrainConfigError(
            f'--amp (--amp-dtype {amp_dtype}) needs a GPU: mmengine\'s AmpOptimWrapper runs on '
            'CUDA/NPU/MLU/MUSA devices only, and fp16 autocast has no CPU support; on the CPU '
            'train without --amp (float32)')
    import torch
    if amp_dtype == 'bf16' and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise TrainConfigError('--amp-dtype bf16: this GPU does not support bfloat16; '
                               'use --amp-dtype fp16')
    wrapper = cfg.get('optim_wrapper')
    if wrapper is None:
        raise TrainConfigError('--amp: the config has no optim_wrapper')
    wrapper_type = wrapper.get('type', 'OptimWrapper')
    if wrapper_type not in PLAIN_OPTIM_WRAPPERS:
        raise TrainConfigError(f'--amp replaces optim_wrapper.type with AmpOptimWrapper, but '
                               f'this config uses {wrapper_type!r}; configure AMP in the config')
    wrapper.type = 'AmpOptimWrapper'
    wrapper.dtype = AMP_DTYPES[amp_dtype]
    if amp_dtype == 'fp16':
        wrapper.setdefault('loss_scale', 'dynamic')


def build_config(args: argparse.Namespace) -> Config:
    """The Runner config for ``args`` (parsed by :func:`build_parser`).

    Raises:
        FileNotFoundError: the config or the ``--resume`` checkpoint does not exist.
        TrainConfigError: an option cannot apply to this config or machine.
    """
    if not Path(args.config).is_file():
        raise FileNotFoundError(f'config {args.config} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = str(Path('work_dirs') / Path(args.config).stem)
    cfg.setdefault('default_scope', 'smilfit')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None  # mmengine finds the latest in work_dir
    elif args.resume is not None:
        if not Path(args.resume).is_file():
            raise FileNotFoundError(f'--resume {args.resume}: no such checkpoint')
        cfg.resume, cfg.load_from = True, args.resume
    if args.amp:
        set_amp(cfg, args.amp_dtype)
    cfg.custom_hooks = _with_required_hooks(cfg.get('custom_hooks'))
    return cfg


def build_runner(cfg: Config):
    """mmengine's Runner (or ``cfg.runner_type`` from ``RUNNERS``) for ``cfg``."""
    from mmengine.runner import Runner

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.registry import RUNNERS
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def _warn_if_nothing_to_resume(cfg: Config) -> None:
    """Warn when ``--resume`` finds no checkpoint (a fresh start).

    Raises:
        TrainConfigError: the work dir holds checkpoints but none is complete (starting from
            scratch would silently throw them away).
    """
    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.engine.compat import find_latest_checkpoint  # the one the runner uses
    if cfg.get('resume') and cfg.get('load_from') is None and \
            find_latest_checkpoint(cfg.work_dir) is None:
        broken = sorted(p.name for p in Path(cfg.work_dir).glob('*.pth')) \
            if Path(cfg.work_dir).is_dir() else []
        if broken:
            raise TrainConfigError(
                f'--resume: no complete checkpoint in {cfg.work_dir} ({", ".join(broken)} '
                'truncated or unreadable); pass --resume CHECKPOINT, or move them away to '
                'start from scratch')
        print(f'train: warning: --resume found no checkpoint in {cfg.work_dir}; '
              'training starts from scratch', file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    try:
        threads = training_threads(args.threads)
    except ValueError as err:
        return report_error('train', err)
    wait_passively_if_threaded(threads)   # (before torch loads OpenMP)

    # Imported on use: --help and argument errors must not load torch or mmengine.
    import torch

    from smilfit.utils import register_all_modules
    torch.set_num_threads(threads)
    register_all_modules(init_default_scope=True)
    try:
        cfg = build_config(args)
        _warn_if_nothing_to_resume(cfg)
    except USER_ERRORS as err:
        return report_error('train', err)
    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.apis.fitting import prepare_data_once
    from smilfit.engine.data_check import check_runner_data
    try:
        prepare_data_once(cfg)
        runner = build_runner(cfg)
        check_runner_data(runner, ('train', 'val'))   # before any hook reads the data
        # Only smilfit's own errors and file errors: a ValueError from a bug in a training
        # step keeps its traceback.
        runner.train()
    except RUN_ERRORS as err:
        return report_error('train', err)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
