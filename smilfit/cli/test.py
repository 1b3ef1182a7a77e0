"""``tools/test.py CONFIG [CHECKPOINT]``: benchmark a regressor or a fitting config.

- A **regression** config (it has a ``model``) with a CHECKPOINT from ``tools/train.py``
  is tested with mmengine's Runner on the config's ``test_dataloader`` (split by
  session) and ``test_evaluator`` (default: 2D PCK, MPJPE and reprojection error).
  ``tools/test.py CHECKPOINT`` alone uses the config stored in the checkpoint.
  Single- or multi-view comes from the model (``num_views``).
- A **fitting** config (it has a ``registrant``; or any config with ``--fit``) fits the
  same split's samples with ``smilfit.registrants`` and scores the fitted keypoints
  with the same metrics, so fitting and regression are compared on the same data.
- A fitting config with ``--holdout-views K [K ...]`` is fitted on every subset of K of
  its views and scored in the views left out, against DLT triangulation from the same
  views (options below; :mod:`smilfit.apis.holdout`).

Writes a report directory (default ``<work dir>/test_report``): ``summary.txt``,
``summary.json`` (every metric), ``run_info.json`` (what was evaluated),
``pck_curve.png``, ``error_histograms.png``, per-joint and per-camera bar plots,
``keypoints_3d_error.png`` and ``raw/<metric>/<array>.npy``.

Examples::

    python tools/test.py configs/regression/synthetic_multiview_resnet18.py \\
        work_dirs/synthetic_multiview_resnet18/iter_300.pth
    python tools/test.py work_dirs/synthetic_multiview_resnet18/iter_300.pth
    python tools/test.py configs/benchmark/synthetic_fit_2view.py       # fit, then score
    python tools/test.py CONFIG CHECKPOINT --split val --out-dir report --overwrite
    python tools/test.py configs/fitting/mouse_multiview.py --holdout-views 2 3  # held-out
    torchrun --nproc_per_node 2 tools/test.py CONFIG CHECKPOINT --launcher pytorch
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import List, Optional

from mmengine.config import DictAction

from . import prog_name
from .errors import USER_ERRORS, report_error
from .holdout_views import add_holdout_arguments, run_holdout
from .threads import wait_passively_if_threaded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog_name('test'), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file (.py), or a checkpoint (.pth) carrying '
                        'its training config')
    parser.add_argument('checkpoint', nargs='?', help='regressor checkpoint (.pth); omit '
                        'for a fitting config')
    parser.add_argument('--fit', action='store_true',
                        help='evaluate the config by fitting (its registrant), not a model')
    parser.add_argument('--out-dir', help='report directory (default <work dir>/test_report)')
    parser.add_argument('--work-dir', help="the run's work dir (default: the config's "
                        'work_dir, else work_dirs/<config name>)')
    parser.add_argument('--split', choices=['train', 'val', 'test', 'all'],
                        help="override the test dataset's split ('all': every session)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE', help='override config entries, e.g. '
                        'test_dataloader.batch_size=4 registrant.stages.1.n_iter=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='distributed launcher (pytorch under torchrun)')
    parser.add_argument('--device', default='cpu', help='torch device for fitting')
    parser.add_argument('--max-samples', type=int,
                        help='fitting: evaluate only the first N samples of the split')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing report directory')
    parser.add_argument('--no-plots', action='store_true', help='summaries and arrays only')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads for fitting (default 1)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    add_holdout_arguments(parser)
    return parser


def _load_config(args):
    from mmengine.config import Config

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.apis.evaluation import load_checkpoint_config
    checkpoint = args.checkpoint
    if Path(args.config).suffix in ('.pth', '.pt', '.ckpt'):
        if checkpoint is not None:
            raise ValueError(f'{args.config} is a checkpoint; give CONFIG CHECKPOINT or '
                             'CHECKPOINT alone')
        checkpoint = args.config
        cfg = load_checkpoint_config(checkpoint)
        name = Path(checkpoint).parent.name or 'checkpoint'
    else:
        if not Path(args.config).is_file():
            raise FileNotFoundError(f'config {args.config} does not exist')
        cfg = Config.fromfile(args.config)
        name = Path(args.config).stem
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg, checkpoint, name


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    wait_passively_if_threaded(args.threads)   # (before the first torch import)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    import torch

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.apis.evaluation import (EvaluationConfigError, detect_task,
                                         evaluate_fitting, evaluate_regressor)
    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    start = time.perf_counter()
    try:
        cfg, checkpoint, name = _load_config(args)
        task = 'fitting' if args.fit else detect_task(cfg)
        if task == 'regression' and checkpoint is None:
            raise EvaluationConfigError('a regression config needs a CHECKPOINT (or pass '
                                        '--fit to evaluate its registrant)')
        if task == 'fitting' and checkpoint is not None:
            raise EvaluationConfigError('fitting needs no CHECKPOINT; drop it or give a '
                                        'regression config')
        work_dir = Path(args.work_dir or cfg.get('work_dir') or Path('work_dirs') / name)
        if args.holdout_views:
            if task != 'fitting':
                raise EvaluationConfigError('--holdout-views evaluates a fitting config')
            return run_holdout(args, cfg, work_dir)
        out_dir = Path(args.out_dir) if args.out_dir else work_dir / 'test_report'
        if task == 'regression':
            result = evaluate_regressor(cfg, checkpoint, out_dir, work_dir=work_dir,
                                        split=args.split, launcher=args.launcher,
                                        overwrite=args.overwrite, plots=not args.no_plots)
        else:
            if args.threads < 1:
                raise ValueError('--threads must be >= 1')
            torch.set_num_threads(args.threads)
            result = evaluate_fitting(cfg, out_dir, split=args.split, launcher=args.launcher,
                                      device=args.device, progress=not args.no_progress,
                                      max_samples=args.max_samples,
                                      overwrite=args.overwrite, plots=not args.no_plots)
    except USER_ERRORS as err:
        return report_error('test', err)
    if result['report_dir'] is not None:
        info = result['info']
        print(f"{info['task']} ({info['mode']}) on {info['num_samples']} samples of split "
              f"{info['split']!r}: report in {result['report_dir']} "
              f'({time.perf_counter() - start:.1f} s)')
        for key in sorted(result['metrics']):
            if '/per_' not in key and '/' in key:
                print(f'  {key}: {result["metrics"][key]:.4g}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
