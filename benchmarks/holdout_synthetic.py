"""Held-out views on synthetic sessions nobody tuned on: the pixel-constant config against
the noise-unit one (clean labels must be fitted close to their noise).

Sessions (``smilfit.datasets.synthetic_animals``, the embedded demo mouse, 6 cameras,
keypoints only): labels that are not joints (each keypoint off its joint by
``offset_std`` body lengths, in the joint's frame), bones moved by ``bone_std``, random
poses, Gaussian label noise. Cases: clean labels (0.5 px) and noisy ones (3 px), each on
60 frames and on the first 5; clean labels on 30 frames with one label placed 15-20 % of
the body length from its joint (a user's joint lookup mapping it to the wrong joint):
``displaced`` rows add that keypoint's held-out median over the other keypoints' median;
and ``video``: the frames a video (poses moving about 0.05 rad a frame, the heading a
random walk, 10 % of the frames missing: gaps), where the motion prior couples them
(``no_motion`` fits each alone); and ``skin``: labels that are points on the skin
(``skin_labels``: the back above the spine, the flanks at the shoulders, hips, elbows and
knees, no offsets besides; 1 px), the trunk label above ``spine_2`` mapped to ``spine_2``
(``skin``), ``spine_1`` or ``spine_3`` (``skin_spine_1``, ``skin_spine_3``; neither
labelled) or left out of the lookup, for the fit to place (``skin_unmapped``), written
besides as ``holdout_synthetic_skin.md`` (the trunk label's and the worst keypoint's
held-out medians against DLT's); ``no_markers`` fits them without placing markers.

Configs: ``shipped`` is ``configs/fitting/mouse_multiview.py``'s registrant (errors in
units of a noise scale from the residuals, skeleton prior in body lengths counted once
per animal, skeleton-only and pose-only stages in turn, keypoint offsets started from
the residuals); ``pixel constants`` is the registrant before errors were put in noise
units (GMoF sigma 10/20 px, priors weighted per frame in squared pixels against squared
model units); the others are ``benchmarks/holdout.py --variant``s of the same names
(``a+b``: both; ``before animal prior`` is
``fixed_pose_prior+no_exchange+no_motion+no_markers``), e.g. ``no_offset_start`` and
``joint`` (offsets started where the last stage left them; pose and skeleton in one
stage), ``no_motion``, ``root_motion``, ``final_data_x2``. All on the demo mouse's body
model, fitted on k of the 6 cameras (a random sample of the subsets, seeded) and scored in
the others, side by side with DLT from the same k.

``--noise SIGMA,OUTLIERS,SWAPS`` adds a pose estimator's kind of errors to every view's
labels (``3,0.05,0.03``: 3 px, 5 % of the points 20-60 px off, 3 % of the instances with
left and right exchanged) and scores against the labels as they were; anipose's
triangulations (``aniposelib``; ``--peers none`` leaves them out) are compared beside the
fit and DLT, and every method's 3D points against the true ones.

Usage::

    python benchmarks/holdout_synthetic.py [--out-dir work_dirs/holdout_synthetic]
        [--subsets 3] [--frames 60] [--configs shipped joint] [--cases clean noisy]
        [--noise 3,0.05,0.03] [--peers none] [--tables DIR]

Prints one row per case, config and k (held-out median, 90th percentile and worst
subset's median, px, of the fit and of DLT), then every method's held-out and 3D errors
(written to ``--tables`` as ``holdout_synthetic[<--table-suffix>][_noise].md``), and
writes each report under ``--out-dir``. Fits there are resumed when rerun with the same
code, config and data; fits made by other smilfit code stop the run (``--overwrite`` fits
again).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import holdout_methods  # noqa: E402  (benchmarks/holdout_methods.py)
from holdout import BEFORE_ANIMAL_PRIOR, apply_variant  # noqa: E402  (benchmarks/holdout.py)

#: The registrant of configs/fitting/mouse_multiview.py before its priors were put in
#: body and noise units: the "pixel constants" baseline.
PIXEL_CONSTANTS = dict(
    shared=dict(bone_trans=True, keypoint_offsets=True),
    handlers=[
        dict(type='Keypoint2DHandler', name='kp2d', offsets_frame='joint',
             loss=dict(type='KeypointMSELoss', robust='gmof', sigma=10.0)),
        dict(type='Keypoint2DHandler', name='kp2d_coarse', offsets_frame='joint',
             loss=dict(type='KeypointMSELoss', robust='gmof', sigma=20.0)),
        dict(type='ShapePriorHandler', name='shape_prior', weight=1.0,
             loss=dict(type='ShapePriorLoss')),
        dict(type='PosePriorHandler', name='pose_prior', weight=10.0,
             loss=dict(type='PoseL2Prior')),
        dict(type='ScaleTranslationPriorHandler', name='bone_prior', weight=100.0,
             loss=None, bone_trans_loss=dict(type='BoneTranslationPrior')),
        dict(type='ScaleTranslationPriorHandler', name='offset_prior', weight=100.0,
             loss=None, bone_trans_loss=dict(type='KeypointOffsetPrior'),
             bone_trans_key='keypoint_offsets'),
    ],
    stages=[
        dict(name='rigid', fit=['global_orient', 'transl', 'global_log_scale'], n_iter=15,
             optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             loss_weights=dict(kp2d=0.0, shape_prior=0.0, pose_prior=0.0, bone_prior=0.0,
                               offset_prior=0.0)),
        dict(name='pose_shape', fit=['global_orient', 'transl', 'body_pose',
                                     'global_log_scale'],
             n_iter=30, optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             loss_weights=dict(kp2d=0.0, bone_prior=0.0, offset_prior=0.0)),
        dict(name='skeleton', fit=['bone_trans', 'keypoint_offsets'], n_iter=10,
             optimizer=dict(type='LBFGS', max_iter=30, line_search_fn='strong_wolfe'),
             loss_weights=dict(kp2d_coarse=0.0)),
        dict(name='refine', fit=['global_orient', 'transl', 'body_pose', 'global_log_scale'],
             n_iter=20, optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             loss_weights=dict(kp2d_coarse=0.0, bone_prior=0.0, offset_prior=0.0)),
        dict(name='skeleton2', fit=['bone_trans', 'keypoint_offsets'], n_iter=10,
             optimizer=dict(type='LBFGS', max_iter=30, line_search_fn='strong_wolfe'),
             loss_weights=dict(kp2d_coarse=0.0)),
        dict(name='refine2', fit=['global_orient', 'transl', 'body_pose', 'global_log_scale'],
             n_iter=20, optimizer=dict(type='LevenbergMarquardt'), ftol=1e-8,
             loss_weights=dict(kp2d_coarse=0.0, bone_prior=0.0, offset_prior=0.0)),
    ],
)
#: name -> (label noise px, frames fitted, displaced label: (keypoint, body lengths) or None)
CASES = {'clean': (0.5, None, None), 'clean_f5': (0.5, 5, None), 'noisy': (3.0, None, None),
         'noisy_f5': (3.0, 5, None), 'displaced': (0.5, 30, ('hind_paw_R', 0.2)),
         'displaced_knee': (0.5, 30, ('knee_L', 0.15)), 'video': (0.5, None, None),
         'skin': (1.0, None, None), 'skin_spine_1': (1.0, None, None),
         'skin_spine_3': (1.0, None, None), 'skin_unmapped': (1.0, None, None)}
#: cases whose labels are points on the skin (``skin_labels``: the back above the spine,
#: the flanks at the shoulders, hips, elbows and knees) -> the model joint the trunk label
#: (``spine_2``, on the back) is mapped to (None: its lookup row is left out, and the fit
#: places it); its two neighbours are not labelled
SKIN = {'skin': 'spine_2', 'skin_spine_1': 'spine_1', 'skin_spine_3': 'spine_3',
        'skin_unmapped': None}
#: the trunk label of the skin cases and the joints left unlabelled beside it
TRUNK_LABEL, TRUNK_NEIGHBOURS = 'spine_2', ('spine_1', 'spine_3')
#: cases whose frames are a video: case -> the poses' frame-to-frame correlation
#: (``generate_animal_session(pose_correlation=)``: a step of about 0.05 rad a frame) and
#: the share of frames missing (gaps in the track)
VIDEO = {'video': (0.98, 0.1)}


#: label -> the registrant compared: a config dict, or a variant of benchmarks/holdout.py
CONFIGS = {'pixel constants': PIXEL_CONSTANTS, 'no_offset_start': 'no_offset_start',
           'joint': 'joint', 'animal_scale': 'animal_scale',
           'before animal prior': BEFORE_ANIMAL_PRIOR,
           'raw_scales': 'raw_scales', 'one_floor': 'one_floor',
           'floored_total': 'floored_total',
           'floored_total+no_motion': 'floored_total+no_motion',
           'animal_scale_prior': 'animal_scale_prior', 'posterior_spread': 'posterior_spread',
           'no_motion': 'no_motion', 'acceleration': 'acceleration',
           'no_markers': 'no_markers', 'shipped': 'shipped', 'root_motion': 'root_motion',
           'final_unsmoothed': 'final_unsmoothed', 'final_data_x2': 'final_data_x2',
           'posterior_spread+no_motion': 'posterior_spread+no_motion',
           'final_data_x2+no_motion': 'final_data_x2+no_motion', 'final_rounds': 'final_rounds'}


def _displacement(displaced):
    """(1, Kp, 3) keypoint offsets placing one label ``displaced = (name, body lengths)``
    from its joint, or None."""
    if displaced is None:
        return None
    from smilfit.datasets.synthetic import build_body_model
    from smilfit.datasets.synthetic_animals import displaced_label
    return displaced_label(build_body_model(None), displaced[0], displaced[1], seed=9)


def _session(out: Path, frames: int, noise: float, displaced, video=(0.0, 0.0),
             skin: bool = False):
    """The case's session (written once) and its true 3D keypoints (N, K, 3), kept beside
    it (``.truth.npy``): not in the session, where a fit would start from them."""
    from smilfit.datasets.synthetic import build_body_model
    from smilfit.datasets.synthetic_animals import generate_animal_session, skin_labels
    data = out / (f'session_{noise:g}px.h5' if displaced is None else
                  f'session_{noise:g}px_{displaced[0]}_{displaced[1]:g}.h5')
    definitions = None
    if skin:
        data = data.with_name(f'{data.stem}_skin_{frames}.h5')
        definitions = skin_labels(build_body_model(None).double(),
                                  leave_out=TRUNK_NEIGHBOURS)
    correlation, missing = video
    if correlation:
        data = data.with_name(f'{data.stem}_video{correlation:g}_gaps{missing:g}_{frames}.h5')
    truth = data.with_suffix('.truth.npy')
    data.parent.mkdir(parents=True, exist_ok=True)
    # one maker at a time: another run with this --out-dir waits for the session and its
    # truth, and never removes a session whose truth is still being written
    with _exclusive(data.with_suffix('.lock')):
        if not (data.exists() and truth.exists()):
            data.unlink(missing_ok=True)
            # labels on the skin are off their joints already: no offsets of their own
            made = generate_animal_session(data, num_animals=1, frames=frames, num_views=6,
                                           bone_std=0.03,
                                           offset_std=0.0 if skin else 0.05,
                                           pose_std=0.25,
                                           noise_px=noise, seed=7,
                                           keypoint_offsets=_displacement(displaced),
                                           return_keypoints_3d=True,
                                           pose_correlation=correlation,
                                           missing_frames=missing,
                                           keypoint_definitions=definitions)
            np.save(truth, made['keypoints_3d'])
    return data, np.load(truth)


@contextlib.contextmanager
def _exclusive(lock: Path):
    """Hold an exclusive lock on the file ``lock`` (made if absent) while inside; other
    processes asking for it wait."""
    with open(lock, 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _config(registrant, data_path):
    from mmengine.config import Config

    base = Config.fromfile(str(ROOT / 'configs' / '_base_' / 'body_models' / 'demo_mouse.py'))
    cfg = Config.fromfile(str(ROOT / 'configs' / 'fitting' / 'mouse_multiview.py'))
    cfg.body_model = base.body_model
    cfg.data = dict(path=str(data_path), batch_size=64)
    if isinstance(registrant, str):
        apply_variant(cfg, registrant)
    elif registrant is not None:
        reg = copy.deepcopy(registrant)
        reg['type'] = cfg.registrant.get('type', 'SMILRegistrant')
        reg['init'] = cfg.registrant.get('init', 'triangulation')
        cfg.registrant = reg
    return cfg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out-dir', default=str(ROOT / 'work_dirs' / 'holdout_synthetic'))
    parser.add_argument('--overwrite', action='store_true',
                        help='fit again where --out-dir holds earlier fits')
    parser.add_argument('--subsets', type=int, default=3, help='random subsets per k')
    parser.add_argument('--frames', type=int, default=60, help='frames per session')
    parser.add_argument('--ks', type=int, nargs='+', default=[2, 3])
    parser.add_argument('--configs', nargs='+', default=list(CONFIGS), choices=list(CONFIGS),
                        help='the configs compared (default: all)')
    parser.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES),
                        help='the cases run (default: all)')
    holdout_methods.add_arguments(parser)
    args = parser.parse_args()
    import torch

    from smilfit.apis.holdout import evaluate_holdout_views
    from smilfit.datasets import DatasetReader
    from smilfit.utils import register_all_modules
    torch.set_num_threads(1)
    register_all_modules()
    out = Path(args.out_dir)
    fits = out if args.noise is None else (
        out / f'noise_{args.noise.replace(",", "_")}_seed{args.noise_seed}')
    rows, reports = [], []
    for case in args.cases:
        noise, frames, displaced = CASES[case]
        data, truth = _session(out, args.frames, noise, displaced,
                               VIDEO.get(case, (0.0, 0.0)), case in SKIN)
        peers = holdout_methods.make_peers(args, DatasetReader(data).skeleton_edges)
        for label in args.configs:
            registrant = CONFIGS[label]
            start = time.perf_counter()
            cfg = _config(registrant, data)
            if case in SKIN:
                cfg.data['joint_lookup'] = _skin_lookup(DatasetReader(data).keypoint_names,
                                                        SKIN[case])
            report = evaluate_holdout_views(
                cfg, fits / case / label.replace(' ', '_'), args.ks,
                max_subsets=args.subsets, frames=frames, progress=False,
                overwrite=args.overwrite,
                config_name=label, noise=holdout_methods.label_noise(args), peers=peers,
                reference_3d=truth)
            seconds = time.perf_counter() - start
            reports.append((case, label, report))
            for k, block in report['k'].items():
                g = block['all']
                ratio = ''
                marked = displaced[0] if displaced is not None else (
                    TRUNK_LABEL if case in SKIN else None)
                if marked is not None:
                    kp = block['keypoints']
                    others = [v['fit_median_px'] for n, v in kp.items()
                              if n != marked and v['fit_median_px'] is not None]
                    ratio = f"{kp[marked]['fit_median_px'] / np.median(others):.2f}"
                rows.append((case, noise, report['samples'], label, k, g['dlt_median_px'],
                             g['fit_median_px'], g['dlt_p90_px'], g['fit_p90_px'],
                             g['dlt_worst']['median_px'], g['fit_worst']['median_px'],
                             f"{g['fit_wins']} of {g['compared_subsets']}", seconds, ratio))
    print(f'{"case":<15}{"noise px":>9}{"frames":>7}  {"config":<17}{"k":>2}{"DLT med":>9}'
          f'{"fit med":>9}{"DLT p90":>9}{"fit p90":>9}{"DLT worst":>10}{"fit worst":>10}'
          f'{"fit wins":>10}{"s":>6}{"displaced/others":>18}')
    for (case, noise, n, label, k, dlt, fit, dlt90, fit90, dlt_worst, fit_worst, wins,
         seconds, ratio) in rows:
        print(f'{case:<15}{noise:>9.1f}{n:>7}  {label:<17}{k:>2}{dlt:>9.2f}{fit:>9.2f}'
              f'{dlt90:>9.2f}{fit90:>9.2f}{dlt_worst:>10.2f}{fit_worst:>10.2f}'
              f'{wins:>10}{seconds:>6.0f}{ratio:>18}')
    write_tables(reports, args)
    return 0


def write_tables(reports, args) -> None:
    """The summary tables, of the skin cases (``holdout_synthetic_skin[...]``) and of the
    others (``holdout_synthetic[...]``) apart: a run of the skin cases alone never writes
    over the other cases' table."""
    plain = [r for r in reports if r[0] not in SKIN]
    skin = [r for r in reports if r[0] in SKIN]
    if plain:
        write_summary(plain, args)
    if skin:
        write_skin_summary(skin, args)


def _skin_lookup(names, trunk_joint: Optional[str]):
    """Data keypoint -> itself, but the trunk label carried by ``trunk_joint`` (None: left
    out of the lookup, for the fit to place)."""
    lookup = {n: n for n in names}
    lookup[TRUNK_LABEL] = None
    if trunk_joint is not None:
        lookup[trunk_joint] = TRUNK_LABEL
    return lookup


def write_skin_summary(reports, args) -> str:
    """The skin cases: the trunk label's held-out median mapped to each of the three
    spine joints nearest it, and every keypoint's against DLT's (Markdown; written to
    ``--tables`` as ``holdout_synthetic_skin[_noise].md``)."""
    from tables import emit
    rows = []
    for case, label, report in reports:
        for k, block in report['k'].items():
            kp = block['keypoints']
            ratios = {n: v['fit_median_px'] / v['dlt_median_px'] for n, v in kp.items()
                      if v['fit_median_px'] is not None and v['dlt_median_px']}
            worst = max(ratios, key=ratios.get)
            g = block['all']
            trunk = kp[TRUNK_LABEL]
            rows.append([SKIN[case] or 'left out (placed)', label, report['samples'], k,
                         f"{g['fit_median_px']:.2f}", f"{g['dlt_median_px']:.2f}",
                         f"{trunk['fit_median_px']:.2f}", f"{trunk['dlt_median_px']:.2f}",
                         f'{worst} {ratios[worst]:.2f}'])
    header = ['trunk label mapped to', 'config', 'frames', 'k', 'fit px', 'DLT px',
              'trunk label fit px', 'trunk label DLT px', 'worst keypoint fit / DLT']
    print('\nLabels on the skin: held-out px medians, the trunk label mapped to each spine '
          'joint')
    suffix = args.table_suffix + holdout_methods.noise_suffix(args)
    return emit(f'holdout_synthetic_skin{suffix}', header, rows, args.tables)


def write_summary(reports, args) -> str:
    """Every case's held-out and 3D errors of each method (Markdown; written to
    ``--tables`` as ``holdout_synthetic[_noise].md``)."""
    from tables import emit
    names = holdout_methods.method_names([r for _, _, r in reports])
    rows = [[case, CASES[case][0], label, report['samples'], k]
            + holdout_methods.method_cells(block, names)
            for case, label, report in reports for k, block in report['k'].items()]
    header = (['case', 'label noise px', 'config', 'frames', 'k']
              + holdout_methods.method_header(names))
    print('\nHeld-out px median (p90) on the points every method gives; 3D median (p90) '
          'against the true points, model units')
    suffix = args.table_suffix + holdout_methods.noise_suffix(args)
    return emit(f'holdout_synthetic{suffix}', header, rows, args.tables)


if __name__ == '__main__':
    raise SystemExit(main())
