"""Held-out-view evaluation of ``configs/fitting/mouse_multiview.py`` on the shared 4-camera
session: the fit on k cameras against DLT triangulation from the same k cameras, scored in
the cameras left out (the fit must beat triangulation there).

Cases: every 2- and 3-camera subset of back, mid, side, top ("with side"; the side camera's
calibration is a copy of top's, ~92 px off), and every 2-camera subset of back, mid, top
("without side": ``data.exclude_views=['side']``; with 3 cameras a 3-camera subset holds
nothing out), each on all 120 frames and on the first 10; and every 2- and 3-camera
subset of sleap-io's 8-camera test recording (two mice, 3 frames, noisy labels;
``eight_cameras``), on which nothing was tuned. Prints one summary row per case
and k (median, 90th percentile and worst subset's median, of the fit and of DLT), and
each case's full table (per held-out camera, per keypoint, per subset); the
reports are ``<out-dir>/<case>/holdout_views.{txt,json}`` (under ``variant_<name>/`` for
a ``--variant``, ``noise_<...>/`` with ``--noise``). Fits are resumed from
``<out-dir>/<case>/fits`` when rerun with the same code, config and data; fits made by
other smilfit code stop the run (``--overwrite`` fits again). A few minutes on one CPU
thread (most of it the 8-camera case); skips when ../shared is absent. The slow twin of
``tests/apis/test_holdout.py`` (synthetic, seconds).
``--cases`` runs some of the cases, ``--ks`` other numbers of fitting cameras than a
case's own (e.g. every k on the 8 cameras), ``--cfg-options`` changes the config (e.g. to
measure one constant's effect), ``--variant`` runs one of the alternatives the config was
chosen over (:data:`VARIANTS`).

``--spread`` also fits every case with the Levenberg-Marquardt's initial damping changed
(:data:`SPREAD_DAMPINGS`: a change of the path to the optimum, not of what is minimised)
and prints each case's fit median beside its range over those runs: the noise level to
read a comparison of two configs against. The shared session's two-camera and ``side``
cases' pooled medians move by 0.1-3.7 px that way (their points are sparse around the
median), so a difference inside the range is no evidence either way.

``--noise SIGMA,OUTLIERS,SWAPS`` gives every view's labels a pose estimator's kind of
errors before fitting and triangulating (``3,0.05,0.03``: 3 px, 5 % of the points 20-60 px
off, 3 % of the instances with left and right exchanged) and scores the held-out views
against the labels as they were. Beside the fit and DLT, anipose's own triangulations
(``aniposelib``: plain, RANSAC, and with the skeleton's edges as limb-length constraints;
``--peers none`` leaves them out) from the same views and labels; every method is also
measured in 3D against DLT of the labels as they are in every fitting view (on clean
labels that reference shares k views' labels with DLT from k views, which favours DLT). ``--tables DIR`` writes the summary as
``holdout_session[_noise].md``.

Usage::

    python benchmarks/holdout.py [--out-dir work_dirs/holdout_benchmark] [--device cuda]
        [--cases all_no_side] [--cfg-options registrant.stages.1.n_iter=40]
        [--variant joint] [--spread] [--noise 3,0.05,0.03] [--peers none] [--tables DIR]
        [--keypoints Neck Trunk] [--ks 2 3 4 5 6 7]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence, Tuple

from mmengine.config import DictAction

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import SHARED  # noqa: E402  (benchmarks/shared_data.py)
import holdout_methods  # noqa: E402  (benchmarks/holdout_methods.py)

SESSION = SHARED / 'data' / 'sleap_anipose_minimal_session' / 'minimal_session'
#: sleap-io's test recording: 8 cameras, two mice (instance groups), 3 frames, the same 15
#: keypoint names; nobody tuned on it.
EIGHT_CAMERAS = (SHARED / 'data' / 'sleap_io_js_testdata' / 'tests' / 'data'
                 / 'slp' / 'multiview.slp')
MODEL = SHARED / 'models' / 'SMILy_Mouse_static_joints.pkl'
CONFIG = ROOT / 'configs' / 'fitting' / 'mouse_multiview.py'
#: name -> (k values, frames, data overrides, the recording); the cases nobody tuned the
#: config on are :data:`UNTUNED`. A k as large as the views (three without ``side``) holds
#: nothing out: it runs with ``--noise`` only, scored in 3D against the clean labels' DLT.
CASES = {
    'all_with_side': ((2, 3), None, {}, SESSION),
    'f10_with_side': ((2, 3), 10, {}, SESSION),
    'all_no_side': ((2, 3), None, dict(exclude_views=['side']), SESSION),
    'f10_no_side': ((2, 3), 10, dict(exclude_views=['side']), SESSION),
    'eight_cameras': ((2, 3), None, {}, EIGHT_CAMERAS),
}
UNTUNED = ('eight_cameras',)


#: The labels of the trunk and shoulders, whose joints a user is least sure of (the
#: ``trunk_unmapped`` variant leaves their lookup rows out).
TRUNK_LABELS = ('Neck', 'Trunk', 'Shoulder_left', 'Shoulder_right')
#: Alternatives to the shipped config's choices, measured against it (the config's
#: comments give the results): name -> what it changes.
VARIANTS = {
    'shipped': 'the config as it is',
    'no_offset_start': 'keypoint offsets not started from the residuals in the skeleton '
                       'stages (Keypoint2DHandler offsets_from_residuals=False)',
    'joint': 'pose and skeleton fitted together (one group Levenberg-Marquardt, two '
             'rounds) instead of alternating skeleton-only and pose-only stages',
    'animal_scale': 'one global scale per animal (shared like its skeleton) instead of one '
                    'per frame',
    'fixed_pose_prior': 'one fixed pose prior scale per joint and axis (PosePriorHandler, '
                        "PoseL2Prior) instead of each animal's own poses",
    'no_exchange': 'labels fitted as they are, never with left and right exchanged '
                   '(Keypoint2DHandler exchange_left_right=False)',
    'animal_scale_prior': "each frame's global scale pulled to its animal's (the animal "
                          'prior on global_log_scale, no fixed prior)',
    'posterior_spread': "the animal pose prior's spread with each frame's posterior "
                        'variance added (AnimalPosePriorHandler posterior_spread=True)',
    'no_motion': 'every frame fitted alone, without the motion prior coupling consecutive '
                 'frames (MotionPriorHandler left out)',
    'acceleration': 'the motion prior on the parameters\' accelerations instead of their '
                    'velocities (MotionPriorHandler order=2)',
    'no_markers': 'labels carried by the looked-up joints throughout (no stage places '
                  'markers on the body)',
    'root_motion': "the motion prior on the root's turn and place and the global scale "
                   'only, not on the body pose (MotionPriorHandler params)',
    'final_unsmoothed': 'the last pose stage fitted frame by frame (its motion weight 0)',
    'final_data_x2': "the last pose stage's keypoint term weighted twice (its noise "
                     'scales divided by sqrt(2))',
    'trunk_unmapped': 'the joint lookup without the rows of the labels on the trunk and '
                      f'shoulders ({", ".join(TRUNK_LABELS)}): the fit places them '
                      '(place_unmapped)',
    'one_floor': "the noise scales floored at 1 % of the animal's extent wherever three or "
                 'more views see a point too, as where two do (Keypoint2DHandler '
                 'resolved_min_relative_scale=min_relative_scale)',
    'raw_scales': 'noise scales measured on the raw residuals, not studentized by the '
                  "labels' leverage on the fit (Keypoint2DHandler studentize=False)",
    'floored_total': 'the floored noise scales as they are: labels more precise than the '
                     'floor weigh against the priors as no more precise than it '
                     '(Keypoint2DHandler keep_measured_total=False)',
    'final_rounds': "the last pose stage run in two rounds (the animal's pose prior "
                    'centred afresh where the skeleton stages took the poses)',
}
#: The config before its pose prior came from the animal's frames and instances were
#: fitted with left and right exchanged (and so before the motion prior, the markers and
#: the studentized noise scales, which came later; ``--variant``: variants joined by ``+``
#: apply in turn).
BEFORE_ANIMAL_PRIOR = 'fixed_pose_prior+no_exchange+no_motion+no_markers+raw_scales'


def apply_variant(cfg, variant: str):
    """``cfg`` (a config of ``configs/fitting/mouse_multiview.py``'s registrant) changed
    as :data:`VARIANTS` says (``a+b``: ``a``, then ``b``)."""
    if '+' in variant:
        for part in variant.split('+'):
            apply_variant(cfg, part)
        return cfg
    if variant == 'no_offset_start':
        for handler in cfg.registrant.handlers:
            if handler['type'] == 'Keypoint2DHandler':
                handler['offsets_from_residuals'] = False
    elif variant == 'joint':
        stages = {s['name']: s for s in cfg.registrant.stages}
        pose = list(stages['refine']['fit'])
        cfg.registrant.stages = [
            stages['rigid'], stages['pose'],
            dict(stages['skeleton'], name='pose_skeleton', n_iter=30,
                 fit=pose + list(stages['skeleton']['fit'])),
            stages['refine']]
    elif variant == 'animal_scale':
        cfg.registrant.shared = dict(cfg.registrant.shared, global_log_scale=True)
    elif variant == 'animal_scale_prior':
        cfg.registrant.handlers = list(cfg.registrant.handlers) + [
            dict(type='AnimalPosePriorHandler', name='scale_prior', param='global_log_scale',
                 prior_scale=None)]
    elif variant == 'one_floor':
        import inspect

        from smilfit.handlers.keypoint2d import Keypoint2DHandler
        default = inspect.signature(Keypoint2DHandler).parameters['min_relative_scale'].default
        for handler in cfg.registrant.handlers:
            if handler['type'] == 'Keypoint2DHandler':
                handler['resolved_min_relative_scale'] = handler.get('min_relative_scale',
                                                                     default)
    elif variant in ('no_exchange', 'raw_scales', 'floored_total'):
        option = {'no_exchange': 'exchange_left_right', 'raw_scales': 'studentize',
                  'floored_total': 'keep_measured_total'}[variant]
        for handler in cfg.registrant.handlers:
            if handler['type'] == 'Keypoint2DHandler':
                handler[option] = False
    elif variant == 'posterior_spread':
        for handler in cfg.registrant.handlers:
            if handler['type'] == 'AnimalPosePriorHandler':
                handler['posterior_spread'] = True
    elif variant == 'fixed_pose_prior':
        cfg.registrant.handlers = [
            dict(type='PosePriorHandler', name=h['name'], weight=h.get('weight', 1.0),
                 loss=dict(type='PoseL2Prior'))
            if h['type'] == 'AnimalPosePriorHandler' else h for h in cfg.registrant.handlers]
    elif variant == 'no_motion':
        cfg.registrant.handlers = [h for h in cfg.registrant.handlers
                                   if h['type'] != 'MotionPriorHandler']
        cfg.registrant.stages = [
            dict(s, loss_weights={k: v for k, v in s.get('loss_weights', {}).items()
                                  if k != 'motion'}) for s in cfg.registrant.stages]
    elif variant == 'acceleration':
        for handler in cfg.registrant.handlers:
            if handler['type'] == 'MotionPriorHandler':
                handler.update(order=2)
    elif variant == 'trunk_unmapped':
        from smilfit.body_models.joint_lookup import joint_lookup_dict
        path = Path(cfg.data.joint_lookup)
        lookup = joint_lookup_dict(path if path.is_absolute() else ROOT / path)
        cfg.data.joint_lookup = {m: d for m, d in lookup.items() if d not in TRUNK_LABELS}
    elif variant == 'no_markers':
        cfg.registrant.stages = [dict(s, place_markers=False) for s in cfg.registrant.stages]
    elif variant == 'root_motion':
        from smilfit.handlers.motion_prior import DEFAULT_PARAMS
        for handler in cfg.registrant.handlers:
            if handler['type'] == 'MotionPriorHandler':
                handler.update(params=[p for p in handler.get('params', DEFAULT_PARAMS)
                                       if p != 'body_pose'])
    elif variant in ('final_rounds', 'final_unsmoothed', 'final_data_x2'):
        last = max(i for i, s in enumerate(cfg.registrant.stages) if 'body_pose' in s['fit'])
        stages = list(cfg.registrant.stages)
        if variant == 'final_rounds':
            stages[last] = dict(stages[last], rounds=2)
        else:
            kind, weight = (('MotionPriorHandler', 0.0) if variant == 'final_unsmoothed'
                            else ('Keypoint2DHandler', 2.0))
            change = {h['name']: weight for h in cfg.registrant.handlers if h['type'] == kind}
            stages[last] = dict(stages[last], loss_weights=dict(
                stages[last].get('loss_weights', {}), **change))
        cfg.registrant.stages = stages
    elif variant != 'shipped':
        raise ValueError(f'variant must be one of {sorted(VARIANTS)}, got {variant!r}')
    return cfg


#: The initial dampings (``lambda_init``, relative to the mean diagonal of ``J^T J``; the
#: config's stages use :class:`~smilfit.registrants.solver.LMOptions`' 1e-3 unless they
#: say otherwise) of ``--spread``'s extra runs.
SPREAD_DAMPINGS = (1e-4, 1e-5)


def variant_name(text: str) -> str:
    """``--variant``'s value checked: names of :data:`VARIANTS` joined by ``+``."""
    unknown = [part for part in text.split('+') if part not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f'unknown variant(s) {unknown}; choose from '
                                         f'{sorted(VARIANTS)}')
    return text


def with_initial_damping(cfg, lambda_init: float):
    """``cfg`` with every Levenberg-Marquardt stage's ``lambda_init`` set (other stages
    and every other setting as they were)."""
    from smilfit.registrants.solver import LM_NAMES
    for stage in cfg.registrant.stages:
        optimizer = dict(stage.get('optimizer') or {})
        if optimizer.get('type') in LM_NAMES:
            stage['optimizer'] = dict(optimizer, lambda_init=float(lambda_init))
    return cfg


def run_case(name: str, args, out_dir: Path, lambda_init=None) -> dict:
    """The held-out report of case ``name`` with ``args``' config changes (and the
    initial damping ``lambda_init``, where given), fitted in ``out_dir/<name>``."""
    from mmengine.config import Config

    from smilfit.apis.fitting import prepare_data
    from smilfit.apis.holdout import evaluate_holdout_views, fitting_views
    from smilfit.datasets import DatasetReader
    own_ks, frames, data, recording = CASES[name]
    cfg = Config.fromfile(str(CONFIG))
    cfg.merge_from_dict(args.cfg_options)
    apply_variant(cfg, args.variant)
    if lambda_init is not None:
        with_initial_damping(cfg, lambda_init)
    cfg.body_model.model_path = str(MODEL)
    cfg.data.sleap.input = str(recording)
    cfg.data.path = str(Path(args.out_dir) / f'{recording.stem}_keypoints.h5')
    cfg.data.update(data)
    prepare_data(cfg, progress=False)
    reader = DatasetReader(cfg.data.path)
    views, _ = fitting_views(reader, cfg.data)
    ks = case_ks(getattr(args, 'ks', None) or own_ks, len(views), args.noise is not None)
    peers = holdout_methods.make_peers(args, reader.skeleton_edges)
    return evaluate_holdout_views(cfg, out_dir / name, ks, frames=frames,
                                  overwrite=args.overwrite, device=args.device,
                                  config_name=str(CONFIG.relative_to(ROOT)),
                                  noise=holdout_methods.label_noise(args), peers=peers)


def case_ks(ks: Sequence[int], views: int, noisy: bool) -> Tuple[int, ...]:
    """The k values a case runs from ``ks`` (its own, or ``--ks``) with ``views``
    fitting views to draw from: those below ``views``; ``views`` itself only with label
    noise (every view fitted, nothing held out: scored in 3D against the clean labels)."""
    return tuple(k for k in ks if k < views or (noisy and k == views))


def write_summary(reports, args) -> str:
    """Every case's held-out and 3D errors of each method (Markdown; written to
    ``--tables`` as ``holdout_session[<--table-suffix>][_noise][_<variant>].md``)."""
    from tables import emit
    names = holdout_methods.method_names([r for _, r in reports])
    rows = []
    for name, report in reports:
        for k, block in report['k'].items():
            rows.append([name, 'no' if name in UNTUNED else 'yes', report['samples'], k,
                         block['selection']['count']]
                        + holdout_methods.method_cells(block, names))
    header = (['case', 'tuned on', 'frames', 'k', 'subsets']
              + holdout_methods.method_header(names))
    print('\nHeld-out px median (p90) on the points every method gives; 3D median (p90) '
          'against DLT of the labels as they are in every fitting view, world units')
    suffix = (args.table_suffix + holdout_methods.noise_suffix(args)
              + holdout_methods.variant_suffix(args.variant))
    return emit(f'holdout_session{suffix}', header, rows, args.tables)


def write_keypoint_table(reports, args) -> str:
    """The held-out medians of the keypoints ``args.keypoints``, fit and DLT, per case and
    k (Markdown; written to ``--tables`` as ``holdout_session_keypoints[...].md``)."""
    from tables import emit
    rows = []
    for name, report in reports:
        for k, block in report['k'].items():
            if not block['all']['points']:      # every view fitted: nothing held out
                continue
            for keypoint in args.keypoints:
                row = block['keypoints'].get(keypoint) or {}
                fit, dlt = row.get('fit_median_px'), row.get('dlt_median_px')
                cells = [f'{v:.2f}' if v is not None else 'n/a' for v in (fit, dlt)]
                ratio = f'{fit / dlt:.2f}' if fit is not None and dlt else 'n/a'
                rows.append([name, 'no' if name in UNTUNED else 'yes', k, keypoint]
                            + cells + [ratio])
    print('\nHeld-out px medians of the keypoints named')
    suffix = (args.table_suffix + holdout_methods.noise_suffix(args)
              + holdout_methods.variant_suffix(args.variant))
    return emit(f'holdout_session_keypoints{suffix}',
                ['case', 'tuned on', 'k', 'keypoint', 'fit px', 'DLT px', 'fit / DLT'], rows,
                args.tables)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out-dir', default=str(ROOT / 'work_dirs' / 'holdout_benchmark'))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--overwrite', action='store_true', help='fit again')
    parser.add_argument('--cases', nargs='+', choices=sorted(CASES), default=list(CASES),
                        help='the cases to run (default: all)')
    parser.add_argument('--variant', type=variant_name, default='shipped',
                        help='an alternative to the shipped config (several joined by +; '
                        f'{BEFORE_ANIMAL_PRIOR} is the config before the animal\'s own pose '
                        'prior and the left/right exchanges): '
                        + '; '.join(f'{k}: {v}' for k, v in VARIANTS.items()).replace('%', '%%'))
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE',
                        help='overrides of the fitting config, as in tools/fit.py')
    parser.add_argument('--spread', action='store_true',
                        help='also fit every case with the initial dampings of '
                        f'SPREAD_DAMPINGS ({", ".join(map(str, SPREAD_DAMPINGS))}) and '
                        "print each case's range (about 3x the time)")
    parser.add_argument('--ks', nargs='+', type=int, default=None, metavar='K',
                        help="the numbers of fitting cameras, in place of each case's own "
                        '(those below its views; all of them too with --noise, scored in '
                        '3D only), e.g. --cases eight_cameras --ks 2 3 4 5 6 7')
    parser.add_argument('--keypoints', nargs='+', default=[], metavar='NAME',
                        help='also tabulate these keypoints\' held-out medians, fit and DLT '
                        '(holdout_session_keypoints[...].md)')
    holdout_methods.add_arguments(parser)
    args = parser.parse_args()
    if args.ks is not None and min(args.ks) < 2:
        parser.error(f'--ks: a held-out fit needs at least 2 fitting cameras, got {args.ks}')
    if not SESSION.is_dir() or not MODEL.is_file():
        print(f'skipped: {SESSION} or {MODEL} is not available')
        return 0
    cases = [c for c in args.cases if CASES[c][3].exists()]
    if len(cases) < len(args.cases):
        print(f'skipped (recording not available): {sorted(set(args.cases) - set(cases))}')
    import torch

    from smilfit.evaluation.holdout_report import format_holdout
    from smilfit.utils import register_all_modules
    torch.set_num_threads(1)
    register_all_modules()
    rows, tables, spread, reports = [], [], [], []
    out_dir = Path(args.out_dir)
    if args.variant != 'shipped':      # another config: fits of their own
        out_dir = out_dir / f'variant_{args.variant.replace("+", "_")}'
    if args.noise is not None:
        out_dir = out_dir / f'noise_{args.noise.replace(",", "_")}_seed{args.noise_seed}'
    for name in cases:
        start = time.perf_counter()
        report = run_case(name, args, out_dir)
        reports.append((name, report))
        seconds = time.perf_counter() - start
        if args.spread:
            medians = {k: [b['all']['fit_median_px']] for k, b in report['k'].items()
                       if b['all']['points']}
            for damping in SPREAD_DAMPINGS:
                other = run_case(name, args, out_dir / f'lambda_init_{damping:g}',
                                 lambda_init=damping)
                for k, b in other['k'].items():
                    if k in medians:
                        medians[k].append(b['all']['fit_median_px'])
            spread += [(name, k, m[0], min(m), max(m)) for k, m in medians.items()]
        tables.append(format_holdout(report))
        for k, block in report['k'].items():
            g = block['all']
            if not g['points']:         # every view fitted: 3D only (the Markdown table)
                continue
            rows.append((name, report['samples'], '+'.join(report['views']), k,
                         block['selection']['count'], g['dlt_median_px'], g['fit_median_px'],
                         g['dlt_p90_px'], g['fit_p90_px'], g['dlt_worst']['median_px'],
                         g['fit_worst']['median_px'],
                         f"{g['fit_wins']} of {g['compared_subsets']}",
                         'yes' if g['fit_median_px'] <= g['dlt_median_px'] else 'NO', seconds))
    for table in tables:
        print(table, end='\n\n')
    print(f'{"case":<15}{"frames":>7}  {"fitting views":<20}{"k":>2}{"subsets":>8}'
          f'{"DLT med":>9}{"fit med":>9}{"DLT p90":>9}{"fit p90":>9}{"DLT worst":>10}'
          f'{"fit worst":>10}{"fit wins":>10}  fit <= DLT{"s":>7}')
    for (name, n, views, k, count, dlt, fit, dlt90, fit90, dlt_worst, fit_worst, wins, ok,
         seconds) in rows:
        print(f'{name:<15}{n:>7}  {views:<20}{k:>2}{count:>8}{dlt:>9.2f}{fit:>9.2f}'
              f'{dlt90:>9.2f}{fit90:>9.2f}{dlt_worst:>10.2f}{fit_worst:>10.2f}{wins:>10}'
              f'  {ok:<10}{seconds:>7.0f}')
    write_summary(reports, args)
    if args.keypoints:
        write_keypoint_table(reports, args)
    if spread:
        print('\nThe fit median against its range over the initial dampings '
              f'{", ".join(map(str, SPREAD_DAMPINGS))} (and the config\'s): a difference '
              'inside the range is no evidence either way.')
        print(f'{"case":<15}{"k":>2}{"fit med":>9}{"min":>9}{"max":>9}{"range":>9}')
        for name, k, median, low, high in spread:
            print(f'{name:<15}{k:>2}{median:>9.2f}{low:>9.2f}{high:>9.2f}{high - low:>9.2f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
