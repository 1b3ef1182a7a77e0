"""``tools/test.py CONFIG --holdout-views K [K ...]``: the held-out-view options of the test
tool and their run (:func:`smilfit.apis.holdout.evaluate_holdout_views`).

Kept out of :mod:`smilfit.cli.test` so that tool only adds the options and dispatches; like
every command-line module it imports torch only when run (``--help`` stays fast).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ['add_holdout_arguments', 'run_holdout']


def add_holdout_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--holdout-views`` options of ``tools/test.py``."""
    group = parser.add_argument_group(
        'held-out views (fitting configs)',
        # (the test tool's formatter keeps line breaks as written)
        'For every subset of K of the fitting views (the config\'s cameras, narrowed by\n'
        'data.views / data.exclude_views), fit on those views only and report the\n'
        'reprojection error in the views left out, side by side with DLT triangulation\n'
        'from the same K views: per K, per held-out camera and per keypoint, the median,\n'
        'the worst subset and the subsets where the fit wins. Writes holdout_views.txt,\n'
        'holdout_views.json and the fits (fits/, resumed on a rerun) to --out-dir\n'
        '(default <work dir>/holdout_views).')
    group.add_argument('--holdout-views', type=int, nargs='+', metavar='K',
                       help='subset sizes, e.g. --holdout-views 2 3 (K as large as the '
                            'fitting views only with --label-noise: nothing held out, '
                            'every method scored in 3D against the clean labels)')
    group.add_argument('--max-subsets', type=int, metavar='N',
                       help='at most N subsets per K, a random sample drawn with --seed '
                            '(default: all subsets)')
    group.add_argument('--seed', type=int, default=0,
                       help='seed of the --max-subsets sample (default 0)')
    group.add_argument('--frames', type=int, metavar='N',
                       help='fit and score only the first N samples (frames) of the dataset')
    group.add_argument('--label-noise', metavar='SIGMA,OUTLIERS,SWAPS',
                       help='give every view\'s labels a pose estimator\'s kind of errors '
                            'before fitting (px on every point, share of points moved 20-60 '
                            'px, share of instances with left and right exchanged; e.g. '
                            '3,0.05,0.03) and score against the labels as they were: how the '
                            'fit and DLT do on predictions rather than proofread labels')
    group.add_argument('--label-noise-seed', type=int, default=0,
                       help='seed of --label-noise (default 0)')


def run_holdout(args: argparse.Namespace, cfg, work_dir: Path) -> int:
    """Run the held-out evaluation of ``tools/test.py`` and print its table."""
    import torch

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.apis.holdout import HOLDOUT_JSON, HOLDOUT_TEXT, evaluate_holdout_views
    from smilfit.datasets.label_noise import LabelNoise
    from smilfit.evaluation.holdout_report import format_holdout
    if args.launcher != 'none' or args.max_samples is not None or args.split is not None:
        raise ValueError('--holdout-views runs in one process on the whole dataset: drop '
                         '--launcher, --split and --max-samples (use --frames N)')
    if args.threads < 1:
        raise ValueError('--threads must be >= 1')
    noise = (None if args.label_noise is None else
             LabelNoise.parse(args.label_noise, seed=args.label_noise_seed))
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir) if args.out_dir else work_dir / 'holdout_views'
    start = time.perf_counter()
    report = evaluate_holdout_views(cfg, out_dir, args.holdout_views,
                                    max_subsets=args.max_subsets, seed=args.seed,
                                    frames=args.frames, overwrite=args.overwrite,
                                    progress=not args.no_progress, device=args.device,
                                    config_name=str(args.config), noise=noise)
    print(format_holdout(report))
    print(f'(in {out_dir / HOLDOUT_TEXT} and {out_dir / HOLDOUT_JSON}; '
          f'{time.perf_counter() - start:.1f} s)')
    return 0
