"""Held-out-view evaluation of ``configs/fitting/mouse_multiview.py`` on the shared 4-camera
session: the fit on k cameras against DLT triangulation from the same k cameras, scored in
the cameras left out (the fit must beat triangulation there).

Cases: every 2- and 3-camera subset of back, mid, side, top ("with side"; the side camera's
calibration is a copy of top's, ~92 px off), and every 2-camera subset of back, mid, top
("without side": ``data.exclude_views=['side']``; with 3 cameras a 3-camera subset holds
nothing out), each on all 120 frames and on the first 10. Prints one summary row per case
and k, and each case's full table (per held-out camera, per keypoint, per subset); the
reports are ``<out-dir>/<case>/holdout_views.{txt,json}``. Fits are resumed from
``<out-dir>/<case>/fits`` when rerun. About a minute on one CPU thread; skips when
../shared is absent. The slow twin of ``tests/apis/test_holdout.py`` (synthetic, seconds).
``--cases`` runs some of the cases, ``--cfg-options`` changes the config (e.g. to measure
one constant's effect).

Usage::

    python benchmarks/holdout.py [--out-dir work_dirs/holdout_benchmark] [--device cuda]
        [--cases all_no_side] [--cfg-options registrant.stages.1.n_iter=40]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mmengine.config import DictAction

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SESSION = ROOT.parent / 'shared' / 'data' / 'sleap_anipose_minimal_session' / 'minimal_session'
MODEL = ROOT.parent / 'shared' / 'models' / 'SMILy_Mouse_static_joints.pkl'
CONFIG = ROOT / 'configs' / 'fitting' / 'mouse_multiview.py'
#: name -> (k values, frames, data overrides)
CASES = {
    'all_with_side': ((2, 3), None, {}),
    'f10_with_side': ((2, 3), 10, {}),
    'all_no_side': ((2,), None, dict(exclude_views=['side'])),
    'f10_no_side': ((2,), 10, dict(exclude_views=['side'])),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out-dir', default=str(ROOT / 'work_dirs' / 'holdout_benchmark'))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--overwrite', action='store_true', help='fit again')
    parser.add_argument('--cases', nargs='+', choices=sorted(CASES), default=list(CASES),
                        help='the cases to run (default: all)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE',
                        help='overrides of the fitting config, as in tools/fit.py')
    args = parser.parse_args()
    if not SESSION.is_dir() or not MODEL.is_file():
        print(f'skipped: {SESSION} or {MODEL} is not available')
        return 0
    import torch
    from mmengine.config import Config

    from smilfit.apis.holdout import evaluate_holdout_views
    from smilfit.evaluation.holdout_report import format_holdout
    from smilfit.utils import register_all_modules
    torch.set_num_threads(1)
    register_all_modules()
    rows, tables = [], []
    for name in args.cases:
        ks, frames, data = CASES[name]
        cfg = Config.fromfile(str(CONFIG))
        cfg.merge_from_dict(args.cfg_options)
        cfg.body_model.model_path = str(MODEL)
        cfg.data.sleap.input = str(SESSION)
        cfg.data.path = str(Path(args.out_dir) / 'minimal_session_keypoints.h5')
        cfg.data.update(data)
        start = time.perf_counter()
        report = evaluate_holdout_views(cfg, Path(args.out_dir) / name, ks, frames=frames,
                                        overwrite=args.overwrite, device=args.device,
                                        config_name=str(CONFIG.relative_to(ROOT)))
        seconds = time.perf_counter() - start
        tables.append(format_holdout(report))
        for k, block in report['k'].items():
            g = block['all']
            rows.append((name, report['samples'], '+'.join(report['views']), k,
                         block['selection']['count'], g['dlt_median_px'], g['fit_median_px'],
                         f"{g['fit_wins']} of {g['compared_subsets']}",
                         'yes' if g['fit_median_px'] <= g['dlt_median_px'] else 'NO', seconds))
    for table in tables:
        print(table, end='\n\n')
    print(f'{"case":<15}{"frames":>7}  {"fitting views":<20}{"k":>2}{"subsets":>8}'
          f'{"DLT med":>9}{"fit med":>9}{"fit wins":>10}  fit <= DLT{"s":>7}')
    for name, n, views, k, count, dlt, fit, wins, ok, seconds in rows:
        print(f'{name:<15}{n:>7}  {views:<20}{k:>2}{count:>8}{dlt:>9.2f}{fit:>9.2f}{wins:>10}'
              f'  {ok:<10}{seconds:>7.0f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
