"""``tools/render_rig.py CONFIG FIT_RESULTS OUTPUT``: render training samples of the fitted
animal in the recording's own rig, for a network to learn poses before (or beside) the
few real frames.

CONFIG is the regression config that trains on the session: its training dataset (a
``bbox_crop`` session from ``tools/preprocess_sleap.py``, with its split), its body model
and its joint lookup. FIT_RESULTS is ``tools/fit.py``'s ``fit_results.h5`` of that
session. Poses are drawn around the fits of the training split's frames only (frames
held out for testing never reach the renders); cameras, crop rule and size are the
session's; the background is the median of the videos without the animal; the animal's
colours are read from the real crops where the fitted mesh is seen
(:mod:`smilfit.datasets.rig_renders`).

Then train on OUTPUT first and fine-tune on the real frames, e.g.::

    python tools/render_rig.py configs/regression/mouse_session_resnet18.py \\
        work_dirs/mouse_fit/fit_results.h5 data/mouse_session/renders.h5
    python tools/train.py configs/regression/mouse_session_resnet18_rendered.py
    python tools/train.py configs/regression/mouse_session_resnet18.py --cfg-options \\
        load_from=work_dirs/mouse_session_resnet18_rendered/iter_400.pth \\
        train_dataloader.dataset.fit_results=work_dirs/mouse_fit/fit_results.h5
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional

from mmengine.config import DictAction

from . import prog_name
from .errors import USER_ERRORS, report_error
from .threads import wait_passively_if_threaded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog_name('render_rig'), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='regression config (.py) training on the session')
    parser.add_argument('fit_results', help="tools/fit.py's fit_results.h5 of the session")
    parser.add_argument('output', help='HDF5 file to write (.h5)')
    parser.add_argument('--num-samples', type=int, default=1000,
                        help='rendered samples (1000)')
    parser.add_argument('--pose-spread', type=float, default=0.5,
                        help="body-pose noise in multiples of the fitted poses' spread "
                             'per component (0.5)')
    parser.add_argument('--heading-range', type=float, default=360.0,
                        help='headings drawn in +- half this many degrees about a fitted '
                             "frame's, about the body's up axis (360)")
    parser.add_argument('--shift-std', type=float, default=0.1,
                        help='floor-plane shift of the animal, body lengths (0.1)')
    parser.add_argument('--background-frames', type=int, default=60,
                        help='frames per video whose median is the background (60)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (0)')
    parser.add_argument('--threads', type=int, default=1,
                        help='CPU threads: torch threads, and samples rendered at once '
                             '(the output is the same for any number; default 1)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE', help='override config entries, e.g. '
                        'train_dataloader.dataset.ann_file=my_session.h5')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def training_rows(dataset_cfg) -> tuple:
    """(dataset file, rows of its training split) of a training dataset config."""
    from smilfit.datasets import MultiViewHDF5Dataset
    cfg = dict(dataset_cfg)
    keep = ('ann_file', 'data_root', 'split', 'split_ratios', 'split_sessions', 'seed',
            'split_by', 'time_blocks', 'time_gap', 'fit_results', 'fit_max_error_ratio',
            'min_valid_views')
    dataset = MultiViewHDF5Dataset(**{k: v for k, v in cfg.items() if k in keep},
                                   load_images=False)
    rows = [int(dataset.get_data_info(i)['index']) for i in range(len(dataset))]
    return Path(dataset.reader.path), rows


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    wait_passively_if_threaded(args.threads)   # (before the first torch import)
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        return report_error('render_rig', FileExistsError(
            f'{output} exists; pass --overwrite to replace it'))
    if args.threads < 1:
        return report_error('render_rig', ValueError('--threads must be >= 1'))
    # Imported on use: --help and argument errors must not load torch or mmengine.
    import torch
    from mmengine.config import Config

    from smilfit.datasets.rig_renders import RigRenderOptions, generate_rig_renders
    from smilfit.utils import register_all_modules
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        register_all_modules()
        if not Path(args.config).is_file():
            raise FileNotFoundError(f'config {args.config} does not exist')
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        model = cfg.get('model') or {}
        if 'body_model' not in model:
            raise ValueError(f'{args.config} has no model.body_model: pass the regression '
                             'config that trains on the session')
        dataset, rows = training_rows(cfg.train_dataloader.dataset)
        options = RigRenderOptions(num_samples=args.num_samples, pose_spread=args.pose_spread,
                                   heading_range_deg=args.heading_range,
                                   shift_std=args.shift_std,
                                   background_frames=args.background_frames, seed=args.seed)
        path = generate_rig_renders(output, dataset=dataset, fit_results=args.fit_results,
                                    body_model=model['body_model'],
                                    joint_lookup=model.get('joint_lookup'), rows=rows,
                                    options=options, overwrite=args.overwrite,
                                    progress=not args.no_progress, workers=args.threads)
    except USER_ERRORS as err:
        return report_error('render_rig', err)
    print(f'wrote {path}: {args.num_samples} samples drawn around the fits of {len(rows)} '
          f'training samples of {dataset} in {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
