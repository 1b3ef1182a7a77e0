"""The network on a real recording: the shared 4-camera mouse session, frames held out by
contiguous time blocks, every method scored on the same held-out frames at full
resolution.

Steps (each reused from ``--out-dir`` when rerun; a reused fit made with another
registrant config than this checkout's is named in a warning, with what differs, since
every network trained on it would be that config's too):

1. prepare the session twice: keypoints and cameras only (what the fit reads), and 128 px
   crops around the animal (what the network reads; ``tools/preprocess_sleap.py``);
2. fit every frame with ``configs/fitting/mouse_multiview.py`` (``tools/fit.py``);
3. train ``configs/regression/mouse_session_resnet18.py`` on the training blocks, once
   with the fit as labels (``fit_results``) and once with the triangulated points only;
4. score, on the held-out blocks' frames, the 3D keypoints of every method projected
   through the full-resolution calibration against the labels: median and 90th
   percentile px over the three well-calibrated cameras (back, mid, top); the ``side``
   camera (its calibration is a copy of ``top``'s, ~92 px off) apart.

Then every frame is fitted again with the animal's skeleton held fixed, from the default
start and from network (b)'s predictions (``data.init_from``: each frame the best of the
default start, the network's parameters and its pose placed on its keypoints; a frame
started from the network skips the coarse stages, the rigid alignment and the first
pose): LM iterations (summed over
the stages and the config's batches, each batch's its slowest frame's; and per frame,
each frame's own, the mean), seconds end to end and fitting alone (``fitting_clock``:
the batches' fits and the choice of each frame's start, not reading the data and writing
the results, which every start shares; the median of seven alternating runs) and the
held-out frames' error of each, with the network start's shares of the default's; the
same with cameras left out of the fit (``LEFT_OUT``, which nobody tuned on); then the
same fits from starts a fraction of the way from the fit's answer to the network's
(what a better network would give: does it halve the time? seconds the median of five
alternating runs), and with their last stage capped at 1, 2, 3... iterations (until it
stops on its own), to show where on its way each start reaches its held-out error; and
how soon (``time_to_error``): each start's fit stopped at the first cap that reaches the
default start's final held-out error, timed over seven alternating runs, and whether
the network start did it in at most half the iterations and time. Last,
network (b) trains ``--loop-iters`` more iterations two ways: on the fit it trained on
(the control) and in one fit-in-the-loop round (every frame fitted from (b)'s
predictions, those fits the labels; ``tools/fit_in_the_loop.py``); and the same from a
network A that saw the labels of every other training block only, the loop's round
fitting the other blocks too (their 2D labels standing for a SLEAP model's predictions on
frames nobody proofread), the continuing iterations trained with each of
``--loop-seeds``.

Methods: (a) the fit on those frames (it saw their labels: the floor the network aims
at); (b) the network trained on real frames with the fit as labels; (b') the same with
the triangulated 3D points and the 2D labels only; (c) the network trained on rendered
samples of the fitted animal in the session's own rig (``tools/render_rig.py``: poses
drawn around the training blocks' fits, the session's cameras, crops and background),
then on the real frames as (b) (the seconds are the second part's); (d) the rendered
samples only; (e) the mean training pose placed at the held-out frame's triangulated
keypoints (the fits' mean pose and size, oriented and placed by a rigid alignment to the
frame's triangulated points: a baseline that already knows where the animal is); (e')
the same with the fit's keypoint offsets added (where the labels sit relative to the
model's joints, which the network learns too). (b) and (c) are then trained with every
training seed of ``--seeds`` (the seed of their real iterations; one rendered
pretraining) and compared seed by seed, then camera by camera (the mean over the
seeds, beside the fit's own error in each camera: where a camera's labels disagree with
the others', the fit is far off there too).

``--network-only`` stops after (a), (b), (e) and (e'): what one recipe reaches, in
minutes; ``--table-only`` after the held-out table, (a) to (e') without (b') (and the
comparison by training seed where ``--seeds`` is given; ``--split-seed`` holds out other
blocks). With
either, ``--config``, ``--crop-size`` and ``--amp`` train another recipe, e.g. the
GPU-sized one on a lent GPU (``bash benchmarks/cuda.sh OUT recipe`` or ``table``), and
``--time-budget SECONDS`` sizes the networks' iterations to a lease (a probe of a few
iterations times one; the renders are made first). ``--starts-only`` trains network (b)
and runs only its fits from the two starts (the whole fits, then capped and how soon
each reaches the default start's error), on each device of ``--fit-devices`` in turn
(``cuda.sh OUT starts``: the CPU with one thread and the GPU in one run; with
``--split-seed`` on other held-out blocks, with ``--seeds`` from the network of each
training seed)::

    python benchmarks/real_session_regression.py --network-only --device cuda --amp \
        --config configs/regression/mouse_session_resnet50_gpu.py --crop-size 256 \
        --iters 4000 --threads 8

Usage::

    python benchmarks/real_session_regression.py [--out-dir work_dirs/real_session]
        [--iters 400] [--device cpu] [--threads 2] [--renders 2000] [--loop-iters 200]
        [--loop-seeds 0 1 2] [--seeds 0 1 2 3 4] [--network-only | --table-only
        [--config CONFIG] [--crop-size 128] [--amp] [--time-budget SECONDS]
        [--split-seed 0]] [--starts-only [--fit-devices cpu cuda] [--fit-repeats 7]
        [--split-seed 0] [--seeds 0 1 2 3 4]]

A few minutes per 100 iterations on a 2-core CPU; skips when ../shared is absent.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The pieces, a module each: the data, networks and scores; the fits from a network's
# start; the fit-in-the-loop rounds and the tables.
import real_session_data as session  # noqa: E402  (benchmarks/real_session_data.py)
import real_session_loop as loop  # noqa: E402  (benchmarks/real_session_loop.py)
import real_session_starts as start_fits  # noqa: E402  (benchmarks/real_session_starts.py)
from tables import command_line  # noqa: E402  (benchmarks/tables.py)



def starts_only(args, out: Path, crops: Path, keypoints: Path, results: Path, held, blocks,
                config: Path, recipe: str) -> int:
    """``--starts-only``: network (b) of ``config`` on the training blocks of
    ``--split-seed`` (trained when missing; one per training seed of ``--seeds``, named
    as :func:`loop.compare_seeds` names them), then :func:`start_fits.fits_from_network`,
    the capped fits and :func:`start_fits.time_to_error` on every device of
    ``--fit-devices`` in turn, the CPU's with one thread (as the CPU figures of the
    documentation), each device's tables printed as they are done; first the held-out
    frames (``blocks``) the errors are of; last, with several seeds, the network start's
    shares seed by seed (:func:`start_fits.print_seed_shares`)."""
    import torch
    print(f'held-out frames: {sorted(blocks.items())} ({len(held)} frames); network (b): '
          f'{config.name}, {args.crop_size} px crops, {args.iters} iterations')
    by_seed = {device: [] for device in args.fit_devices}
    for seed in args.seeds if args.seeds is not None else [0]:
        name = f'{recipe}net_fit_labels_{args.iters}' + (f'_seed{seed}' if seed else '')
        torch.set_num_threads(args.threads)
        runner, _ = session.train(crops, out / name, args.iters, args.device, results, seed=seed,
                                  config=config, amp=args.amp, split_seed=args.split_seed)
        checkpoint = out / name / f'iter_{args.iters}.pth'
        del runner
        if args.seeds is not None:
            print(f'\nNetwork (b), training seed {seed}')
        for device in args.fit_devices:
            threads = 1 if device == 'cpu' else args.threads
            torch.set_num_threads(threads)
            rows = start_fits.fits_from_network(out, crops, keypoints, results, checkpoint, held,
                                                args.fit_repeats, device)
            # (the docs' table: the first training seed's network, on the blocks of split 0)
            first = seed == (args.seeds or [0])[0] and not args.split_seed
            loop.print_fits_from_network(rows, device, threads,
                                         args.tables if first else None, args.command, recipe)
            reach = start_fits.print_how_soon(out, crops, keypoints, results, checkpoint, held,
                                              rows[0][4], args.fit_repeats, device,
                                              args.tables if first else None, args.command,
                                              recipe)
            by_seed[device].append((seed, rows, reach))
    for device, seeds in by_seed.items():
        if len(seeds) > 1:
            start_fits.print_seed_shares(seeds, args.tables, args.command,
                                         f'_{recipe}{device.split(":")[0]}')
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out-dir', default=str(ROOT / 'work_dirs' / 'real_session'))
    parser.add_argument('--tables', metavar='DIR', default=None,
                        help='also write the held-out table to DIR/real_session_held_out*.md '
                             '(docs/tables for the documentation)')
    parser.add_argument('--iters', type=int, default=400)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--loop-iters', type=int, default=200,
                        help='iterations of the fit-in-the-loop round and its control (200)')
    parser.add_argument('--loop-seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='training seeds of the unlabelled-frames comparison (0 1 2)')
    parser.add_argument('--seeds', type=int, nargs='+', default=None,
                        help='training seeds of the (b) against (c) comparison (0 1 2 3 4; '
                             'with --table-only none unless given); with --starts-only, '
                             'the fits from network (b) of each seed (0)')
    parser.add_argument('--renders', type=int, default=2000,
                        help='rendered samples for (c) and (d) (2000)')
    parser.add_argument('--config', default=str(session.NET_CONFIG),
                        help='the network config (default: the CPU-sized recipe, '
                             'configs/regression/mouse_session_resnet18.py)')
    parser.add_argument('--crop-size', type=int, default=128,
                        help="the crops' size in px, as the config wants them (128)")
    parser.add_argument('--amp', action='store_true',
                        help='bf16 mixed precision (a GPU only), as tools/train.py --amp')
    parser.add_argument('--network-only', action='store_true',
                        help="only (a), (b), (e) and (e'): what a recipe reaches, e.g. the "
                             'GPU-sized one on a lent GPU (minutes instead of hours)')
    parser.add_argument('--table-only', action='store_true',
                        help="only the held-out table, (a) to (e'), without (b') (the "
                             'acceptance table of a recipe, e.g. on a lent GPU)')
    parser.add_argument('--time-budget', type=float, default=None, metavar='SECONDS',
                        help='with --network-only or --table-only: the seconds the whole run '
                             "may take (a lent GPU's lease); a probe of a few iterations "
                             'times one and each network trains as many of --iters as fit '
                             '(the table says how many)')
    parser.add_argument('--split-seed', type=int, default=0, metavar='N',
                        help='with --network-only, --table-only or --starts-only: the seed '
                             'that chooses the held-out time blocks (0: frames 12-23 and '
                             '96-107; 1: 36-47 and 72-83, blocks nobody tuned on)')
    parser.add_argument('--starts-only', action='store_true',
                        help='only the fits of every frame from the default start and from '
                             "network (b)'s predictions, on each of --fit-devices (e.g. the "
                             'CPU and a lent GPU side by side)')
    parser.add_argument('--fit-devices', nargs='+', default=['cpu'], metavar='DEVICE',
                        help='with --starts-only: the devices the fits run on, in turn; the '
                             "CPU's with one thread (cpu)")
    parser.add_argument('--fit-repeats', type=int, default=7, metavar='N',
                        help='with --starts-only: alternating runs of each start on each '
                             'device, the median timed (7)')
    args = parser.parse_args(argv)
    args.command = command_line(argv, 'real_session_regression.py')   # (for --tables)
    started = time.perf_counter()
    one_table = args.network_only or args.table_only
    if args.network_only + args.table_only + args.starts_only > 1:
        parser.error('--network-only, --table-only and --starts-only: choose one')
    if args.time_budget is not None and not one_table:
        parser.error('--time-budget needs --network-only or --table-only (the other methods '
                     'have no budget)')
    if not (one_table or args.starts_only) and (
            Path(args.config).resolve() != session.NET_CONFIG.resolve() or args.crop_size != 128
            or args.amp):
        parser.error('--config, --crop-size and --amp need --network-only, --table-only or '
                     '--starts-only (the other methods train the CPU-sized recipe)')
    if args.seeds is not None and args.network_only:
        parser.error('--seeds compares (b) with (c): not with --network-only')
    if args.split_seed and not (one_table or args.starts_only):
        parser.error('--split-seed needs --network-only, --table-only or --starts-only')
    if not args.starts_only and (args.fit_devices != ['cpu'] or args.fit_repeats != 7):
        parser.error('--fit-devices and --fit-repeats need --starts-only')
    if args.fit_repeats < 1:
        parser.error('--fit-repeats must be at least 1')
    if args.amp and args.device == 'cpu':
        parser.error('--amp needs a GPU (--device cuda): bf16 autocast trains on GPUs only')
    if not session.SESSION.is_dir() or not session.MODEL.is_file():
        print(f'skipped: {session.SESSION} or {session.MODEL} is not available')
        return 0
    import torch
    if any(d.startswith('cuda') for d in args.fit_devices) and not torch.cuda.is_available():
        parser.error('--fit-devices cuda: this machine has no CUDA device')

    from smilfit.utils import register_all_modules
    torch.set_num_threads(args.threads)
    register_all_modules()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    crops, keypoints, results = session.prepare(out, args.crop_size)
    split = args.split_seed
    held, trained_on, blocks, train_rows = session.held_out_frames(crops, split)
    fitted, fit_keys, params = session.fit_points(results, keypoints)
    fit_score = session.score(fitted, keypoints, held)
    rows = [('(a) fit on those frames', fit_score, '', '')]
    checkpoints = []
    config = Path(args.config)
    # (another recipe's networks get work dirs of their own)
    recipe = '' if config.resolve() == session.NET_CONFIG.resolve() else f'{config.stem}_'
    recipe += f'split{split}_' if split else ''
    if args.starts_only:
        return starts_only(args, out, crops, keypoints, results, held, blocks, config,
                           recipe)
    arms = (('(b) network, real frames, fit as labels', results),
            ("(b') network, real frames, triangulation only", None))
    # (the renders first where a budget is shared: the trainings get what they leave)
    renders = None if args.network_only else session.render(out, crops, results, train_rows,
                                                            args.renders, args.threads, split)
    iters, sized = args.iters, ''
    if args.time_budget is not None:
        left = args.time_budget - (time.perf_counter() - started) - session.AFTER_TRAINING_S
        runs = 1 if args.network_only else 3
        iters, per_iteration = session.iterations_within(left, crops, out, args.device, results,
                                                         config, args.amp, args.iters, runs)
        each = ' each of three' if runs > 1 else ''
        sized = (f' (of {args.iters}: what {args.time_budget:.0f} s allowed{each}, at '
                 f'{per_iteration:.3f} s an iteration)')
    for label, fit_labels in arms[:1] if one_table else arms:
        name = recipe + ('net_fit_labels' if fit_labels is not None else 'net_triangulation')
        runner, seconds = session.train(crops, out / f'{name}_{iters}', iters, args.device,
                                        fit_labels, config=config, amp=args.amp, split_seed=split)
        checkpoints.append(out / f'{name}_{iters}' / f'iter_{iters}.pth')
        pts, images_per_s = session.network_points(runner, args.device)
        rows.append((label, session.score(pts, keypoints, held), f'{seconds:.0f}',
                     f'{images_per_s:.0f}'))
    if args.network_only:
        rows += loop.baseline_rows(results, trained_on, held, fit_keys, params, keypoints)
        loop.print_table(rows, blocks, held, args, config, f'{iters} iterations{sized}')
        return 0
    rendered_only = out / f'{recipe}net_rendered_{args.renders}_{iters}'
    runner, seconds = session.train(crops, rendered_only, iters, args.device, renders=renders,
                                    config=config, amp=args.amp, split_seed=split)
    pts, images_per_s = session.network_points(runner, args.device)
    rendered_row = ('(d) rendered only', session.score(pts, keypoints, held), f'{seconds:.0f}',
                    f'{images_per_s:.0f}')
    runner, seconds = session.train(crops, out / f'{recipe}net_rendered_then_real_{iters}', iters,
                                    args.device, results,
                                    start_from=rendered_only / f'iter_{iters}.pth',
                                    config=config, amp=args.amp, split_seed=split)
    pts, images_per_s = session.network_points(runner, args.device)
    rows.append(('(c) rendered pretraining, then real', session.score(pts, keypoints, held),
                 f'{seconds:.0f}', f'{images_per_s:.0f}'))
    rows.append(rendered_row)
    rows += loop.baseline_rows(results, trained_on, held, fit_keys, params, keypoints)
    loop.print_table(rows, blocks, held, args, config, f'{iters} iterations{sized}')
    seeds = args.seeds if args.seeds is not None else \
        ([] if args.table_only else list(session.FULL_RUN_SEEDS))
    if seeds:
        loop.compare_seeds(seeds, iters, out, crops, keypoints, results, held, rendered_only,
                           fit_score, args.device, config, args.amp, split, recipe,
                           args.tables, args.command)
    if args.table_only:
        return 0
    from_network = start_fits.fits_from_network(out, crops, keypoints, results, checkpoints[0],
                                                held)
    loop.print_fits_from_network(from_network, 'cpu', args.threads, args.tables, args.command)
    loop.print_fits_by_cameras(start_fits.fits_from_network_by_cameras(
        out, crops, keypoints, results, checkpoints[0], held), args.tables, args.command)
    loop.print_fits_from_closer_starts(start_fits.fits_from_closer_starts(
        out, crops, keypoints, results, checkpoints[0], held), args.tables, args.command)
    start_fits.print_how_soon(out, crops, keypoints, results, checkpoints[0], held,
                              from_network[0][4], 7, tables=args.tables, command=args.command)
    rows = loop.fit_in_the_loop(out, crops, keypoints, results, checkpoints[0], args.loop_iters,
                                args.device, held)
    rows += loop.fit_in_the_loop_unlabelled(out, crops, keypoints, results, trained_on, args.iters,
                                            args.loop_iters, args.device, held, args.loop_seeds)
    loop.print_loop(rows, args.loop_iters, args.tables, args.command)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
