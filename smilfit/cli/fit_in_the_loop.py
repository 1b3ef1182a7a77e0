"""``tools/fit_in_the_loop.py TRAIN_CONFIG FIT_CONFIG CHECKPOINT``: refine a network from its
own fitted predictions on every frame of its training file (fit-in-the-loop, as SPIN
does for human bodies).

Each round: the network predicts every sample of the training config's dataset (a
file of tools/preprocess_sleap.py with images: proofread frames and frames with a SLEAP
model's predictions alike); every sample is fitted with FIT_CONFIG from the best of its
default start and the network's prediction (``data.init_from``); the network trains on
from its weights with those fits as labels (``fit_results``: failed and poor fits left
out, a camera the fit names as far off silenced). Outputs in ``--work-dir``:
``round_<r>/predictions``, ``round_<r>/fit``, ``round_<r>/train`` (checkpoints) and
``rounds.json``: per round the samples started from the network, LM iterations, the
fits' median error (in the file's stored pixels), training seconds and the validation
metrics on the frames the training config holds out; ``start_metrics``, the starting
network's. The held-out frames are fitted too but never trained on.

Examples::

    python tools/fit_in_the_loop.py configs/regression/mouse_session_resnet18.py \\
        configs/fitting/mouse_multiview.py work_dirs/mouse_session_resnet18/iter_400.pth \\
        --rounds 2 --iters 200
    python tools/fit_in_the_loop.py TRAIN FIT CKPT --resume            # after a stop
    python tools/fit_in_the_loop.py TRAIN FIT CKPT \\
        --fit-cfg-options body_model.model_path=my_mouse.pkl data.batch_size=64
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import List, Optional

from mmengine.config import DictAction

from . import prog_name
from .errors import RUN_ERRORS, USER_ERRORS, report_error
from .threads import wait_passively_if_threaded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog_name('fit_in_the_loop'), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('train_config', help="the network's training config (.py)")
    parser.add_argument('fit_config', help='the fitting config (.py, as for tools/fit.py)')
    parser.add_argument('checkpoint', help='the network that starts round 1 (.pth)')
    parser.add_argument('--rounds', type=int, default=1, help='rounds of predict, fit and '
                        'train (default 1)')
    parser.add_argument('--iters', type=int, help='training iterations per round (the '
                        "schedule's steps scaled to them; default: the config's schedule)")
    parser.add_argument('--work-dir', help='output folder (default work_dirs/'
                        'fit_in_the_loop/<training config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE', help='training config overrides')
    parser.add_argument('--fit-cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE', help='fitting config overrides')
    parser.add_argument('--resume', action='store_true',
                        help="continue an interrupted run (keeps every finished step)")
    parser.add_argument('--overwrite', action='store_true', help='replace an earlier run')
    parser.add_argument('--device', default='cpu', help="torch device (default 'cpu')")
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser


#: Validation metrics the summary table shows (all of them are in rounds.json).
SUMMARY_METRICS = ('reproj/median', 'reproj/p90', 'kp3d/mpjpe', 'kp3d/pa_mpjpe')


def _metrics(metrics) -> str:
    shown = [k for k in SUMMARY_METRICS if k in metrics] or list(metrics)[:4]
    return ', '.join(f'{k} {metrics[k]:.4g}' for k in shown)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    wait_passively_if_threaded(args.threads)   # (before the first torch import)
    os.environ.setdefault('LOCAL_RANK', '0')
    import torch
    from mmengine.config import Config

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.apis.fit_in_the_loop import run_fit_in_the_loop
    from smilfit.utils import register_all_modules

    from .train import _with_required_hooks
    try:
        if args.threads < 1:
            raise ValueError('--threads must be >= 1')
        torch.set_num_threads(args.threads)
        register_all_modules(init_default_scope=True)
        configs = []
        for path, options in ((args.train_config, args.cfg_options),
                              (args.fit_config, args.fit_cfg_options)):
            if not Path(path).is_file():
                raise FileNotFoundError(f'config {path} does not exist')
            cfg = Config.fromfile(path)
            if options:
                cfg.merge_from_dict(options)
            configs.append(cfg)
        train_cfg, fit_cfg = configs
        train_cfg.setdefault('default_scope', 'smilfit')
        train_cfg.launcher = 'none'
        train_cfg.custom_hooks = _with_required_hooks(train_cfg.get('custom_hooks'))
        work_dir = Path(args.work_dir) if args.work_dir else \
            Path('work_dirs') / 'fit_in_the_loop' / Path(args.train_config).stem
        report = run_fit_in_the_loop(
            train_cfg, fit_cfg, args.checkpoint, work_dir, rounds=args.rounds,
            iters=args.iters, resume=args.resume, overwrite=args.overwrite,
            progress=not args.no_progress, device=args.device)
    except USER_ERRORS + RUN_ERRORS as err:
        return report_error('fit_in_the_loop', err)
    print(f'{"round":<7}{"network starts":>16}{"LM iterations":>15}{"fit px":>8}'
          f'{"train s":>9}  validation')
    print(f'{0:<7}{"":>48}  {_metrics(report.get("start_metrics") or {})}')
    for row in report['rounds']:
        px = row['median_error_px']
        print(f'{row["round"]:<7}{row["network_starts"]:>10} of {row["samples"]:<3}'
              f'{row["lm_iterations"]:>15}{"" if px is None else f"{px:.2f}":>8}'
              f'{row["train_seconds"]:>9.0f}  {_metrics(row["val_metrics"])}')
    print(f'checkpoint: {report["rounds"][-1]["checkpoint"]}; report: '
          f'{work_dir / "rounds.json"}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
