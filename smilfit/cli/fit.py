"""``tools/fit.py CONFIG``: fit a body model to every sample of a dataset.

The config names the body model, the registrant (handlers and stages) and the data::

    _base_ = ['../_base_/body_models/demo_mouse.py']
    registrant = dict(type='SMILRegistrant', handlers=[...], stages=[...])
    data = dict(path='dataset.h5', batch_size=64, joint_lookup=None)

Results go to ``--work-dir`` (default ``work_dirs/<config name>``): ``fit_results.h5``
with per-sample parameters, joints, keypoints, losses and reprojection errors;
``anipose/``, the fitted 3D keypoints as anipose CSVs and sleap-anipose ``points3d.h5``;
``fit_quality.txt``/``.json``, the reprojection error per camera and per keypoint (printed
at the end, naming cameras and keypoints far above the rest); ``fit_<time>.log``, everything
printed. Finished batches are kept in ``chunks/`` so ``--resume`` continues an interrupted
run (of the same config and data).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

from mmengine.config import DictAction

from . import prog_name
from .errors import USER_ERRORS, report_error
from .threads import wait_passively_if_threaded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog_name('fit'), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='fitting config file (.py)')
    parser.add_argument('--work-dir', help='output directory (default work_dirs/<config>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE', help='override config entries, e.g. '
                        'data.batch_size=16 data.path=my.h5')
    parser.add_argument('--resume', action='store_true', help='continue an interrupted run')
    parser.add_argument('--overwrite', action='store_true', help='replace existing results')
    parser.add_argument('--device', default='cpu', help="torch device (default 'cpu')")
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1: fitting runs many small tensor '
                             'operations, which extra threads slow down; run several '
                             'processes on separate data instead)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='shard the batches over processes (torchrun: '
                        'pytorch); rank 0 merges and writes the outputs')
    parser.add_argument('--no-slp', action='store_true',
                        help='do not export the fitted keypoints as a SLEAP .slp')
    parser.add_argument('--no-anipose', action='store_true',
                        help="do not export the fitted 3D keypoints in anipose's formats "
                             '(anipose/<session>.csv and <session>_points3d.h5)')
    parser.add_argument('--visualize', dest='visualize', action='store_true', default=None,
                        help="also write overlay videos, meshes, animations and plots "
                             "(tools/visualize.py); default: the config's 'visualize' dict")
    parser.add_argument('--no-visualize', dest='visualize', action='store_false',
                        help="skip the visual outputs even if the config asks for them")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    wait_passively_if_threaded(args.threads)   # (before the first torch import)
    from mmengine.config import Config

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.utils import register_all_modules
    from smilfit.utils.allocator import keep_freed_memory
    from smilfit.utils.setup_env import FITTING_PACKAGES
    from smilfit.utils.run_log import tee_to_log
    keep_freed_memory()  # the solver's large buffers are reused, not faulted in anew

    if args.threads < 1:
        return report_error('fit', ValueError('--threads must be >= 1'))
    try:
        register_all_modules(packages=FITTING_PACKAGES)  # not mmengine's runner side
        if not Path(args.config).is_file():
            raise FileNotFoundError(f'config {args.config} does not exist')
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
    except USER_ERRORS as err:
        return report_error('fit', err)
    work_dir = Path(args.work_dir or cfg.get('work_dir') or
                    Path('work_dirs') / Path(args.config).stem)
    if os.environ.get('RANK', '0') != '0':  # rank 0 keeps the log
        return _run(args, cfg, work_dir)
    with tee_to_log(work_dir, 'fit') as log:
        print(f'fit {args.config}: log in {log}')
        return _run(args, cfg, work_dir)


def _export(what: str, write) -> None:
    """Run one export after the fit; a fit it cannot be made from (e.g. no 2D keypoint
    handler) is reported, not fatal: the results are written already."""
    try:
        print(write())
    except ValueError as err:  # FittingConfigError is one
        print(f'fit: no {what} export: {err}', file=sys.stderr)


def _run(args, cfg, work_dir: Path) -> int:
    import torch

    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.apis.fitting import QUALITY_TEXT, export_fit_slp, fit_dataset, prepare_data_once
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        prepare_data_once(cfg, progress=not args.no_progress)
        results = fit_dataset(cfg, work_dir, resume=args.resume, overwrite=args.overwrite,
                              progress=not args.no_progress, device=args.device,
                              launcher=args.launcher)
    except USER_ERRORS as err:
        return report_error('fit', err)
    from mmengine.dist import get_rank
    if get_rank() != 0:   # rank 0 wrote the results and writes the exports
        return 0
    print(f'wrote {results} in {time.perf_counter() - start:.1f} s')
    quality = work_dir / QUALITY_TEXT
    if quality.is_file():
        print(quality.read_text().rstrip())
        print(f'(also in {quality} and {quality.with_suffix(".json")})')
    if not args.no_slp:
        slp = work_dir / 'fitted_keypoints.slp'
        _export('.slp', lambda: f'wrote {export_fit_slp(results, slp)} (fitted keypoints as '
                'SLEAP predictions)')
    if not args.no_anipose:
        # Imported only when this branch runs (a heavy or optional part).
        from smilfit.datasets.anipose_export import export_fit_anipose
        _export('anipose', lambda: 'wrote anipose files: ' + ', '.join(
            p.name for p in export_fit_anipose(results, work_dir / 'anipose')))
    visual = cfg.get('visualize') if args.visualize is None else (
        (cfg.get('visualize') or {}) if args.visualize else None)
    if visual is not None and visual is not False:
        # Imported only when this branch runs (a heavy or optional part).
        from smilfit.visualization import export_fit_visuals
        written = export_fit_visuals(work_dir, progress=not args.no_progress,
                                     **dict(visual if isinstance(visual, dict) else {}))
        for kind, paths in written.items():
            if paths:
                print(f'wrote {len(paths)} {kind} file(s), e.g. {paths[0]}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
