"""Long sessions with one skeleton per animal: time and peak memory against frames.

A keypoint-only synthetic session (:mod:`smilfit.datasets.synthetic_animals`: 4 cameras,
``--animals`` animals with their own bone translations, interleaved) is fitted by
:func:`smilfit.apis.fitting.fit_dataset` with ``configs/fitting/animal_skeletons.py``
(the skeleton, ``bone_trans``, shared per animal): each
animal's skeleton is estimated once from up to ``--skeleton-frames`` of its frames, then
every frame is fitted in batches with it fixed. Each size runs in its own process (peak
memory is the process's); prints a table:

- with and without the motion prior coupling each animal's consecutive frames (its
  cost: the fit's time against the time without it, and per sample);
- seconds to make the data, to estimate the skeletons and to fit in all;
- peak resident memory (MB) of the fitting process (the session is made in a process of
  its own), and the largest resident memory right after a batch was fitted: the peak
  includes a batch's passing need, the other is what stays between batches (it would grow
  batch after batch if something piled up);
- the skeletons' worst bone-length error, in % of the body length.

``--repeats R`` runs each fit R times, without and with the prior in turn, and gives the
medians; the ratio is the median of the R ratios of runs side by side, with their range:
on a machine shared with other work one run's time moves by a third.

The labels are exact unless ``--noise SIGMA[,OUTLIERS[,SWAPS]]`` gives every view a pose
estimator's kind of errors (:class:`smilfit.datasets.label_noise.LabelNoise`; the table is
then ``long_session_noise``): without noise every frame alone fits its labels exactly and
its Levenberg-Marquardt converges fast, which flatters the time without the motion prior.

Usage::

    python benchmarks/long_session.py                       # 2,000 and 20,000 frames
    python benchmarks/long_session.py --frames 500 --animals 3
    python benchmarks/long_session.py --noise 2 --frames 2000
    python benchmarks/long_session.py --frames 2000 --repeats 3   # on a machine shared with others
    python benchmarks/long_session.py --tables docs/tables   # the docs' table
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
#: The session is a video: each animal's poses move about 0.05 rad a frame
#: (``generate_animal_session(pose_correlation=)``).
VIDEO_CORRELATION = 0.98
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tables import command_line, emit  # noqa: E402  (benchmarks/tables.py)


def config(path: Path, batch_size: Optional[int], skeleton_frames: int, motion: bool = False,
           chain_frames: Optional[int] = None):
    """``configs/fitting/animal_skeletons.py`` on the session at ``path``; ``motion``: with
    the motion prior coupling each animal's consecutive frames in its last stage (as
    ``configs/fitting/mouse_multiview.py`` has it after its first pose stage), its chains
    cut to ``chain_frames`` frames where given (else the handler's default); the config's
    batch unless ``batch_size`` is given."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / 'configs' / 'fitting' / 'animal_skeletons.py'))
    cfg.data = dict(cfg.data, path=str(path), skeleton_frames=skeleton_frames,
                    **({} if batch_size is None else dict(batch_size=batch_size)))
    if motion:
        cfg.registrant.handlers = list(cfg.registrant.handlers) + [
            dict(type='MotionPriorHandler', name='motion',
                 **({} if chain_frames is None else dict(chain_frames=chain_frames)))]
        cfg.registrant.stages = [
            dict(s, loss_weights=dict(s.get('loss_weights', {}), motion=0.0))
            if s['name'] in ('rigid', 'pose') else s for s in cfg.registrant.stages]
    return cfg


def one(frames: int, animals: int, batch_size: Optional[int], skeleton_frames: int,
        motion: bool = False, noise: Optional[str] = None,
        chain_frames: Optional[int] = None) -> dict:
    """Make and fit one session in this process; the measurements."""
    import h5py
    import numpy as np
    import torch

    import smilfit.apis.fitting as fitting
    import smilfit.apis.fitting.dataset_fit as dataset_fit
    from smilfit.datasets.synthetic_animals import bone_lengths

    torch.set_num_threads(1)
    spent = {'skeleton': 0.0}
    estimate = dataset_fit.estimate_skeletons

    def timed_skeletons(*args, **kwargs):
        start = time.perf_counter()
        try:
            return estimate(*args, **kwargs)
        finally:
            spent['skeleton'] += time.perf_counter() - start
    dataset_fit.estimate_skeletons = timed_skeletons
    between_batches = watch_batches(dataset_fit)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        # (in a process of its own: the peak memory reported is the fit's, not the
        # making's, whose freed memory the allocator would keep)
        subprocess.run([sys.executable, __file__, '--make', str(tmp), '--frames', str(frames),
                        '--animals', str(animals)] + (['--noise', noise] if noise else []),
                       check=True)
        made = time.perf_counter() - start
        with np.load(tmp / 'truth.npz') as z:
            truth = dict(bone_trans=torch.as_tensor(z['bone_trans']), length=float(z['length']))
        start = time.perf_counter()
        results = fitting.fit_dataset(config(tmp / 'session.h5', batch_size, skeleton_frames,
                                             motion, chain_frames), tmp / 'fit',
                                      progress=False)
        fitted = time.perf_counter() - start
        with h5py.File(results) as f:
            skeletons = f['animals/param_bone_trans'][:]
            reproj = float(np.nanmedian(f['metrics/reprojection_px'][:]))
    from smilfit.datasets.synthetic import build_body_model
    model = build_body_model(None)
    err = max(float((bone_lengths(model, bone_trans=skeletons[a])
                     - bone_lengths(model, bone_trans=truth['bone_trans'][a])).abs().max())
              for a in range(animals)) / truth['length']
    return dict(frames=frames, animals=animals, motion=motion, samples=frames * animals,
                make_s=made,
                skeleton_s=spent['skeleton'], fit_s=fitted,
                samples_per_s=frames * animals / fitted, reprojection_px=reproj,
                peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                between_batches_mb=max(between_batches, default=float('nan')),
                bone_error_pct=100 * err)


def resident_mb() -> float:
    """This process's resident memory now, MB (from Linux's ``/proc``; NaN elsewhere)."""
    try:
        with open('/proc/self/statm') as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return float('nan')
    return pages * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def watch_batches(dataset_fit) -> list:
    """Wrap ``dataset_fit._fit_batch`` (the module given) so that the resident memory
    (:func:`resident_mb`) is appended, after each batch is fitted, to the list returned."""
    seen = []
    fit_batch = dataset_fit._fit_batch

    def watched(*args, **kwargs):
        out = fit_batch(*args, **kwargs)
        seen.append(resident_mb())
        return out
    dataset_fit._fit_batch = watched
    return seen


def make(folder: Path, frames: int, animals: int, noise: Optional[str] = None) -> None:
    """Write the session to ``folder/session.h5`` (its labels with ``noise``, a
    :meth:`~smilfit.datasets.label_noise.LabelNoise.parse` text) and its skeletons' truth
    to ``folder/truth.npz``."""
    import numpy as np

    from smilfit.datasets.label_noise import LabelNoise, write_noisy_dataset
    from smilfit.datasets.synthetic_animals import generate_animal_session
    clean = folder / ('session_clean.h5' if noise else 'session.h5')
    truth = generate_animal_session(clean, num_animals=animals, frames=frames,
                                    pose_correlation=VIDEO_CORRELATION)
    if noise:
        write_noisy_dataset(clean, folder / 'session.h5', LabelNoise.parse(noise))
        clean.unlink()
    np.savez(folder / 'truth.npz', bone_trans=np.asarray(truth['bone_trans']),
             length=np.asarray(float(truth['length'])))


def summarize(runs: list) -> list:
    """The table's rows from the measurements of :func:`one` (each with its ``repeat``):
    a row per size and motion prior, each figure the median over the repeats; the fit's
    time with the prior over the time without it is the median of the ratios of runs side
    by side (same size and repeat), with their range where there are several."""
    import statistics
    rows = []
    sizes = sorted({r['frames'] for r in runs})
    for frames in sizes:
        without = {r['repeat']: r['fit_s'] for r in runs
                   if r['frames'] == frames and not r['motion']}
        for motion in (False, True):
            mine = [r for r in runs if r['frames'] == frames and r['motion'] == motion]
            if not mine:
                continue

            def median(key):
                return statistics.median(r[key] for r in mine)
            ratios = sorted(r['fit_s'] / without[r['repeat']] for r in mine
                            if motion and r['repeat'] in without)
            ratio = '' if not ratios else f'{statistics.median(ratios):.2f}' + (
                f' ({ratios[0]:.2f}-{ratios[-1]:.2f})' if len(ratios) > 1 else '')
            rows.append([f'{frames:,}', f"{mine[0]['samples']:,}", 'on' if motion else 'off',
                         f"{median('make_s'):.1f}", f"{median('skeleton_s'):.1f}",
                         f"{median('fit_s'):.1f}", ratio,
                         f"{1000 * median('fit_s') / mine[0]['samples']:.2f}",
                         f"{median('peak_mb'):,.0f}", _mb(median('between_batches_mb')),
                         f"{median('reprojection_px'):.3f}",
                         f"{median('bone_error_pct'):.2f}"])
    return rows


def _mb(value: float) -> str:
    return '' if value != value else f'{value:,.0f}'       # NaN: not measured here


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', type=int, nargs='+', default=[2000, 20000])
    parser.add_argument('--animals', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=None,
                        help="samples fitted together (default: the config's, 1024)")
    parser.add_argument('--skeleton-frames', type=int, default=200)
    parser.add_argument('--motion', choices=['off', 'on', 'both'], default='both',
                        help='fit without the motion prior, with it, or both side by side '
                             '(default)')
    parser.add_argument('--noise', metavar='SIGMA[,OUTLIERS[,SWAPS]]', default=None,
                        help="label errors in every view, e.g. '2' (2 px) or '3,0.05,0.03' "
                             '(default: exact labels)')
    parser.add_argument('--chain-frames', type=int, default=None,
                        help="the motion prior's longest chain in frames "
                             "(MotionPriorHandler's chain_frames; default: the handler's, 128)")
    parser.add_argument('--repeats', type=int, default=1,
                        help='runs of each fit, alternated without and with the motion prior; '
                             'the table gives their medians and the median of the ratios of '
                             'runs side by side, with their range (default 1)')
    parser.add_argument('--one', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--make', metavar='DIR', help=argparse.SUPPRESS)
    parser.add_argument('--tables', metavar='DIR', default=None,
                        help='also write the table to DIR/long_session.md '
                             '(long_session_noise.md with --noise; docs/tables for the '
                             'documentation)')
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f'--repeats must be at least 1, got {args.repeats}')
    if args.noise is not None:
        from smilfit.datasets.label_noise import LabelNoise
        try:
            LabelNoise.parse(args.noise)
        except ValueError as err:
            parser.error(str(err))
    if args.make:
        make(Path(args.make), args.frames[0], args.animals, args.noise)
        return 0
    if args.one:
        print(json.dumps(one(args.frames[0], args.animals, args.batch_size,
                             args.skeleton_frames, args.motion == 'on', args.noise,
                             args.chain_frames)))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    noise = ([] if args.noise is None else ['--noise', args.noise])
    chain = ([] if args.chain_frames is None else ['--chain-frames', str(args.chain_frames)])
    batch = ([] if args.batch_size is None else ['--batch-size', str(args.batch_size)])
    print(f'\n{args.animals} animals, 4 cameras, batch '
          + ("of the config" if args.batch_size is None else str(args.batch_size))
          + ('' if args.chain_frames is None else f' (chains of {args.chain_frames} frames)')
          + f', skeletons from up to {args.skeleton_frames} frames each, 1 thread, labels '
          + ('exact' if args.noise is None else f'with errors {args.noise}') + '\n')
    motions = {'off': ['off'], 'on': ['on'], 'both': ['off', 'on']}[args.motion]
    runs = []
    for frames in args.frames:
        # (alternated, off then on, so that a drift of the machine's speed falls on both)
        for repeat in range(args.repeats):
            for motion in motions:
                out = subprocess.run([sys.executable, __file__, '--one', '--frames',
                                      str(frames), '--animals', str(args.animals),
                                      '--skeleton-frames', str(args.skeleton_frames),
                                      '--motion', motion] + batch + noise + chain,
                                     env=env, capture_output=True, text=True)
                if out.returncode:
                    print(out.stderr[-3000:], file=sys.stderr)
                    return out.returncode
                runs.append(dict(json.loads(out.stdout.strip().splitlines()[-1]),
                                 repeat=repeat))
                print(f'{frames:,} frames, motion prior {motion}, run {repeat + 1} of '
                      f'{args.repeats} done', flush=True)
    rows = summarize(runs)
    suffix = '' if args.noise is None else '_noise'
    emit(f'long_session{suffix}',
         ['frames', 'samples', 'motion prior', 'make s', 'skeletons s', 'fit s (all)',
          'fit time / without', 'ms per sample', 'peak MB', 'MB between batches',
          'median reprojection px', 'worst bone error % of body'],
         rows, args.tables, command_line(argv, 'long_session.py'))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
