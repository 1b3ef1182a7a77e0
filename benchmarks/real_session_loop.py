"""The real-session benchmark's fit-in-the-loop rounds and its held-out tables
(``benchmarks/real_session_regression.py``)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_session_data import (FIT_CONFIG, LOOKUP, MODEL, NET_CONFIG, SCORED,  # noqa: E402
                               TIME_BLOCKS, fit_offsets, mean_pose_points, net_config,
                               network_points, score, train)
from real_session_starts import _yes  # noqa: E402
from tables import write  # noqa: E402  (benchmarks/tables.py)


def fit_in_the_loop(out: Path, crops: Path, keypoints: Path, results: Path,
                    checkpoint: Path, iters: int, device: str, held) -> list:
    """Network (b) trained ``iters`` more iterations two ways, from its weights: on the
    default-start fit it trained on (the control: the same compute without the loop),
    and in one fit-in-the-loop round (``tools/fit_in_the_loop.py``: every frame fitted
    from (b)'s predictions, those fits as the labels). Rows of (label, held-out score,
    frames started from the network, LM iterations of the round's fit)."""
    rows = []
    runner, _ = train(crops, out / f'net_fit_labels_continued_{iters}', iters, device,
                      results, start_from=checkpoint)
    pts, _ = network_points(runner, device)
    rows.append(('(b) + iterations on the default-start fit', score(pts, keypoints, held),
                 '', ''))
    pts, row = loop_round(crops, checkpoint, out / f'loop_{iters}', iters, device)
    rows.append(('(b) + one fit-in-the-loop round', score(pts, keypoints, held),
                 row['network_starts'], row['lm_iterations']))
    return rows


def loop_round(crops: Path, checkpoint: Path, loop: Path, iters: int, device: str,
               seed: int = 0):
    """One ``tools/fit_in_the_loop.py`` round of ``iters`` iterations from ``checkpoint``
    in ``loop`` (resumed when there; made again where ``loop`` holds a round of another
    checkpoint or configs, e.g. of an older checkout): its network's held-out points and
    its report row."""
    from mmengine.config import Config

    from smilfit.apis.fit_in_the_loop import run_fit_in_the_loop
    fit_cfg = Config.fromfile(str(FIT_CONFIG))
    fit_cfg.body_model.model_path = str(MODEL)
    fit_cfg.data.joint_lookup = str(LOOKUP)

    def run(**fresh):
        return run_fit_in_the_loop(net_config(crops, loop, iters, device, None, seed=seed),
                                   fit_cfg, checkpoint, loop, rounds=1, progress=False,
                                   device=device, **fresh)
    try:
        report = run(resume=True)
    except FileExistsError as error:
        print(f'{error}: made again', flush=True)
        report = run(overwrite=True)
    row = report['rounds'][0]
    runner, _ = train(crops, Path(row['checkpoint']).parent, iters, device, row['fit'])
    return network_points(runner, device)[0], row


def half_labelled_fit(out: Path, results: Path, trained_on) -> Path:
    """The fit with every other training block's frames marked failed (so that no
    network trains on them): those frames stand for frames nobody labelled."""
    import shutil

    import h5py
    half = out / 'fit_half' / 'fit_results.h5'
    if half.exists():
        return half
    half.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(results, half)
    with h5py.File(half, 'r+') as f:
        frames = f['samples/frame'][:]
        length = -(-(int(frames.max()) + 1) // TIME_BLOCKS)
        blocks = sorted({frame // length for _, frame in trained_on})
        unlabelled = np.isin(frames // length, blocks[1::2])
        f['metrics/diverged'][...] = f['metrics/diverged'][:] | unlabelled
    return half


def fit_in_the_loop_unlabelled(out: Path, crops: Path, keypoints: Path, results: Path,
                               trained_on, iters: int, loop_iters: int, device: str,
                               held, seeds=(0,)) -> list:
    """Frames without labels: network A trained ``iters`` iterations on the fits of
    every other training block only, then ``loop_iters`` more two ways, once per training
    seed of those iterations: on the same blocks (the control), and in one
    fit-in-the-loop round over every frame (the other blocks' 2D labels standing for a
    SLEAP model's predictions). Rows as :func:`fit_in_the_loop`."""
    half = half_labelled_fit(out, results, trained_on)
    runner, _ = train(crops, out / f'net_half_{iters}', iters, device, half)
    start = out / f'net_half_{iters}' / f'iter_{iters}.pth'
    pts, _ = network_points(runner, device)
    rows = [('A: half the training blocks labelled', score(pts, keypoints, held), '', '')]
    for seed in seeds:
        tag = f'_seed{seed}' if seed else ''
        runner, _ = train(crops, out / f'net_half_continued_{loop_iters}{tag}', loop_iters,
                          device, half, start_from=start, seed=seed)
        pts, _ = network_points(runner, device)
        rows.append((f'A + iterations on the labelled half, seed {seed}',
                     score(pts, keypoints, held), '', ''))
        pts, row = loop_round(crops, start, out / f'loop_half_{loop_iters}{tag}',
                              loop_iters, device, seed)
        rows.append((f'A + one fit-in-the-loop round, seed {seed}',
                     score(pts, keypoints, held), row['network_starts'],
                     row['lm_iterations']))
    return rows


def baseline_rows(results: Path, trained_on, held, fit_keys, params, keypoints: Path) -> list:
    """The rows of (e), the fits' mean training pose at each held-out frame's
    triangulated keypoints, and (e'), the same with the fit's keypoint offsets."""
    mean = mean_pose_points(trained_on, held, fit_keys, params, keypoints)
    rows = [('(e) mean training pose at the triangulated keypoints',
             score(mean, keypoints, held), '', '')]
    offsets = np.median(fit_offsets(results, fit_keys, trained_on), axis=0)
    mean = mean_pose_points(trained_on, held, fit_keys, params, keypoints, offsets)
    rows.append(("(e') the same with the fit's keypoint offsets",
                 score(mean, keypoints, held), '', ''))
    return rows


def print_table(rows, blocks, held, args, config: Path, training: str) -> None:
    """The held-out table: per method the median and p90 px in the scored cameras and
    in ``side``, training seconds and inference images/s; ``training`` says how long the
    networks trained."""
    print(f'held-out frames: {sorted(blocks.items())} ({len(held)} frames); {config.name}, '
          f'{args.crop_size} px crops, {training}, {args.device}'
          f'{" bf16" if args.amp else ""}, {args.threads} threads')
    print(f'{"method":<52}{"median px":>10}{"p90 px":>9}{"side med":>10}{"side p90":>10}'
          f'{"train s":>9}{"img/s":>7}')
    for label, s, seconds, ips in rows:
        if s is None:
            print(f'{label:<52}{"not built":>10}')
            continue
        print(f'{label:<52}{s["scored"][0]:>10.2f}{s["scored"][1]:>9.2f}'
              f'{s["apart"][0]:>10.2f}{s["apart"][1]:>10.2f}{seconds:>9}{ips:>7}')
    print_against_targets(rows)
    # The same table for the docs (--tables): named by the recipe where it is not the
    # CPU-sized one, and by the held-out blocks where they are not split 0's.
    recipe = '' if config.resolve() == NET_CONFIG.resolve() else f'_{config.stem}'
    blocks_set = f'_split{args.split_seed}' if args.split_seed else ''
    write(f'real_session_held_out{recipe}{blocks_set}',
          ['method', 'median px', 'p90 px', 'side median', 'side p90', 'train s', 'images/s'],
          [[label] + (['not built'] + [''] * 5 if s is None else
                      [f'{s["scored"][0]:.2f}', f'{s["scored"][1]:.2f}',
                       f'{s["apart"][0]:.2f}', f'{s["apart"][1]:.2f}', seconds, ips])
           for label, s, seconds, ips in rows], args.tables, args.command)



def against_targets(b, c, e=None) -> str:
    """Whether network (c) meets its targets, the held-out errors (median, p90 px) of
    (b), (c) and, given, (e): at most half of (e)'s error and below (b)'s, each figure
    on its own."""
    parts = []
    if e is not None:
        parts.append('(c) at most half of (e): ' + ', '.join(
            f'{what} {_yes(cv <= ev / 2)} ({cv / ev:.0%})'
            for what, cv, ev in zip(('median', 'p90'), c, e)))
    parts.append('(c) better than (b): ' + ', '.join(
        f'{what} {_yes(cv < bv)} ({cv:.2f} against {bv:.2f} px)'
        for what, cv, bv in zip(('median', 'p90'), c, b)))
    return 'Against the targets: ' + '; '.join(parts)


def print_against_targets(rows) -> None:
    """:func:`against_targets` of the held-out table's ``rows`` where they hold (b), (c)
    and (e)."""
    scored = {label.split()[0]: s['scored'] for label, s, *_ in rows if s is not None}
    if all(k in scored for k in ('(b)', '(c)', '(e)')):
        print(against_targets(scored['(b)'], scored['(c)'], scored['(e)']))


def compare_seeds(seeds, iters: int, out: Path, crops: Path, keypoints: Path,
                  results: Path, held, rendered_only: Path, fit_score: dict, device: str,
                  config: Path, amp: bool, split_seed: int, recipe: str, tables=None,
                  command=None) -> None:
    """(b) and (c) trained with every training seed of ``seeds`` (the seed of their
    ``iters`` real iterations, from the one rendered pretraining ``rendered_only``;
    seed 0 is the table's networks), scored on the held-out frames seed by seed and
    their mean, then camera by camera beside the fit's own error there (where a camera's
    labels disagree with the others', the fit is far off there too). With ``tables``,
    both tables are written there too (``real_session_seeds*.md``,
    ``real_session_cameras*.md``)."""
    print(f'\n(b) and (c) by the training seed of their {iters} real iterations '
          '(one rendered pretraining); error on the held-out frames, median / p90 px')
    print(f'{"seed":<6}{"(b) real only":>18}{"(c) rendered, then real":>26}')
    seeded = {'b': [], 'c': []}
    for seed in seeds:
        tag = f'_seed{seed}' if seed else ''
        for arm, work, start in (
                ('b', out / f'{recipe}net_fit_labels_{iters}{tag}', None),
                ('c', out / f'{recipe}net_rendered_then_real_{iters}{tag}',
                 rendered_only / f'iter_{iters}.pth')):
            runner, _ = train(crops, work, iters, device, results, start_from=start,
                              seed=seed, config=config, amp=amp, split_seed=split_seed)
            seeded[arm].append(score(network_points(runner, device)[0], keypoints, held))
        b, c = seeded['b'][-1]['scored'], seeded['c'][-1]['scored']
        print(f'{seed:<6}{b[0]:>10.2f} / {b[1]:<5.2f}{c[0]:>18.2f} / {c[1]:<5.2f}')
    b, c = (np.mean([s['scored'] for s in seeded[arm]], axis=0) for arm in 'bc')
    print(f'{"mean":<6}{b[0]:>10.2f} / {b[1]:<5.2f}{c[0]:>18.2f} / {c[1]:<5.2f}')
    pair = lambda x: f'{x[0]:.2f} / {x[1]:.2f}'  # noqa: E731
    suffix = (recipe.rstrip('_') and f'_{recipe.rstrip("_")}') + \
        (f'_split{split_seed}' if split_seed else '')
    write(f'real_session_seeds{suffix}',
          ['seed', '(b) real frames only', '(c) rendered pretraining, then real'],
          [[seed, pair(sb['scored']), pair(sc['scored'])]
           for seed, sb, sc in zip(seeds, seeded['b'], seeded['c'])] +
          [['mean', pair(b), pair(c)]], tables, command)
    print(against_targets(b, c).replace('targets:', 'targets (the means):'))
    ahead = [[sc['scored'][i] < sb['scored'][i] for sb, sc in zip(seeded['b'], seeded['c'])]
             for i in range(2)]
    print(f'(c) better than (b) seed by seed: median with {sum(ahead[0])} of {len(seeds)}, '
          f'p90 with {sum(ahead[1])} of {len(seeds)}')
    fit_cameras = fit_score['cameras']
    print('\nby scored camera, median / p90 px on the held-out frames ((b), (c): mean over '
          'the seeds)')
    print(f'{"camera":<8}{"(a) the fit":>16}{"(b) real only":>18}{"(c) rendered, then real":>26}')
    rows = []
    for name in SCORED:
        a = fit_cameras.get(name, (float('nan'), float('nan')))
        b, c = (np.mean([s['cameras'].get(name, (np.nan, np.nan)) for s in seeded[arm]],
                        axis=0) for arm in 'bc')
        print(f'{name:<8}{a[0]:>8.2f} / {a[1]:<6.2f}{b[0]:>10.2f} / {b[1]:<6.2f}'
              f'{c[0]:>18.2f} / {c[1]:<6.2f}')
        rows.append([name, pair(a), pair(b), pair(c)])
    write(f'real_session_cameras{suffix}',
          ['camera', '(a) the fit', '(b) real frames only', '(c) rendered pretraining, then real'],
          rows, tables, command)


def print_fits_from_network(rows: list, device: str, threads: int, tables=None,
                            command=None, recipe: str = '') -> None:
    """The table of :func:`fits_from_network`'s ``rows``, fitted on ``device`` (with
    ``threads`` CPU threads), and the network start's shares of the default start's
    figures; with ``tables``, written there too (``real_session_starts_<recipe><device>.md``)."""
    print(f'\nThe fit of every frame (the skeleton held fixed) from the default start and from '
          f'network (b)\'s predictions, on {device} ({threads} CPU '
          f'thread{"s" if threads != 1 else ""}); error on the held-out '
          'frames')
    print(f'{"start":<16}{"LM iterations":>15}{"per frame":>11}{"seconds":>9}{"fitting s":>11}'
          f'{"median px":>11}{"p90 px":>8}{"network starts":>16}')
    for label, steps, per_frame, (seconds, fitting), (median, p90), won in rows:
        print(f'{label:<16}{steps:>15}{per_frame:>11.1f}{seconds:>9.2f}{fitting:>11.2f}'
              f'{median:>11.2f}{p90:>8.2f}{won:>16}')
    (_, steps, per_frame, seconds, _, _), (_, n_steps, n_per_frame, n_seconds, _, _) = rows
    print(f'{"network/default":<16}{n_steps / steps:>15.0%}{n_per_frame / per_frame:>11.0%}'
          f'{n_seconds[0] / seconds[0]:>9.0%}{n_seconds[1] / seconds[1]:>11.0%}')
    kind = device.split(':')[0]
    write(f'real_session_starts_{recipe}{kind}',
          ['start', 'LM iterations', 'per frame', 'seconds', 'fitting s', 'median px',
           'p90 px', 'network starts'],
          [[label, st, f'{pf:.1f}', f'{sec:.2f}', f'{fit:.2f}', f'{med:.2f}', f'{p90:.2f}', won]
           for label, st, pf, (sec, fit), (med, p90), won in rows] +
          [['network / default', f'{n_steps / steps:.0%}', f'{n_per_frame / per_frame:.0%}',
            f'{n_seconds[0] / seconds[0]:.0%}', f'{n_seconds[1] / seconds[1]:.0%}', '', '', '']],
          tables, command)


def print_fits_by_cameras(rows, tables=None, command=None) -> None:
    """The table of :func:`real_session_starts.fits_from_network_by_cameras`' ``rows`` (the
    fits from the two starts with cameras left out); with ``tables``, written there too
    (``real_session_starts_by_cameras.md``)."""
    rows = list(rows)
    print('\nThe same fits with cameras left out (nothing was tuned on these subsets); '
          'the network start\'s shares of the default start\'s LM iterations (the '
          'batches\', per frame) and seconds fitting alone; held-out median / p90 px')
    print(f'{"left out":<14}{"batch its":>10}{"per frame":>10}{"fitting":>9}'
          f'{"network starts":>16}{"default start":>16}{"network start":>16}')
    for views, its, per_frame, fitting, won, d, n in rows:
        print(f'{"+".join(views):<14}{its:>10.0%}{per_frame:>10.0%}{fitting:>9.0%}{won:>16}'
              f'{d[0]:>9.2f} / {d[1]:<5.2f}{n[0]:>9.2f} / {n[1]:<5.2f}')
    write('real_session_starts_by_cameras',
          ['left out', 'batch its', 'per frame', 'fitting', 'network starts', 'default start',
           'network start'],
          [['+'.join(views), f'{its:.0%}', f'{per_frame:.0%}', f'{fitting:.0%}', won,
            f'{d[0]:.2f} / {d[1]:.2f}', f'{n[0]:.2f} / {n[1]:.2f}']
           for views, its, per_frame, fitting, won, d, n in rows], tables, command)


def print_fits_from_closer_starts(rows, tables=None, command=None) -> None:
    """The table of :func:`real_session_starts.fits_from_closer_starts`' ``rows``; with
    ``tables``, written there too (``real_session_closer_starts.md``)."""
    rows = list(rows)
    print('\nThe same fits from starts closer to the answer: a fraction of the way from the '
          'fit\'s converged parameters to network (b)\'s (1: the network\'s start; 0: the '
          'answer itself; 2 and 3: a network two and three times as far off), posed with '
          'the animal\'s skeleton as the fit sees them; shares of the default start\'s LM '
          'iterations (per frame; the batches\') and seconds')
    print(f'{"fraction":<10}{"start median px":>16}{"start p90":>10}{"per frame":>11}'
          f'{"share":>7}{"batch its":>11}{"share":>7}{"time share":>12}{"fitting":>9}'
          f'{"fit median px":>15}{"fit p90":>9}')
    for fraction, start, per_frame, its, steps, steps_share, seconds, fitting, end in rows:
        print(f'{fraction:<10}{start[0]:>16.2f}{start[1]:>10.2f}{per_frame:>11.1f}'
              f'{its:>7.0%}{steps:>11}{steps_share:>7.0%}{seconds:>12.0%}{fitting:>9.0%}'
              f'{end[0]:>15.2f}{end[1]:>9.2f}')
    write('real_session_closer_starts',
          ['fraction', 'start median px', 'start p90', 'per frame', 'share', 'batch its',
           'share', 'time share', 'fitting', 'fit median px', 'fit p90'],
          [[fraction, f'{start[0]:.2f}', f'{start[1]:.2f}', f'{per_frame:.1f}', f'{its:.0%}',
            steps, f'{steps_share:.0%}', f'{seconds:.0%}', f'{fitting:.0%}', f'{end[0]:.2f}',
            f'{end[1]:.2f}']
           for fraction, start, per_frame, its, steps, steps_share, seconds, fitting, end
           in rows], tables, command)


def print_loop(rows, loop_iters: int, tables=None, command=None) -> None:
    """The table of :func:`fit_in_the_loop` and :func:`fit_in_the_loop_unlabelled`'s
    ``rows``; with ``tables``, written there too (``real_session_loop.md``)."""
    print(f'\nNetwork (b) trained {loop_iters} more iterations, on the fit it trained '
          'on and in one fit-in-the-loop round; error on the held-out frames')
    print(f'{"method":<46}{"median px":>10}{"p90 px":>9}{"network starts":>16}'
          f'{"LM iterations":>15}')
    for label, s, starts, steps in rows:
        print(f'{label:<46}{s["scored"][0]:>10.2f}{s["scored"][1]:>9.2f}{starts:>16}'
              f'{steps:>15}')
    write('real_session_loop', ['method', 'median px', 'p90 px', 'network starts',
                                'LM iterations'],
          [[label, f'{s["scored"][0]:.2f}', f'{s["scored"][1]:.2f}', starts, steps]
           for label, s, starts, steps in rows], tables, command)
