"""Fitting speed and accuracy: synthetic 4-view recovery, batched per-sample vs per-frame loop.

Samples random poses (0.3 rad per joint axis) and shapes from the model's shape prior,
projects the model's joints into 4 calibrated cameras (optionally with pixel noise and
missing points), fits with ``SMILRegistrant`` from the rest pose, and prints a table:
frames/s (wall clock; CPU seconds too, as other processes on the machine inflate wall
time) of the batched per-sample fit and of a per-frame loop (the same registrant on
one frame at a time), the mean joint error as a percentage of the body length, and the
error of DLT triangulation of the same 2D points (the baseline to beat).

The bars the fitter is held to: noise-free within 0.01 % of the body length; 2 px noise and
20 % missing within 0.6 % and better than DLT; at least 100 frames/s for the 4-view
stick insect on 2 CPU cores.

On a GPU (``--device cuda``) the observations are made and fitted there; ``--chunk-size``
fits the frames in chunks of that many (the LM normal equations of every frame of a chunk
are in memory at once) and the table adds the peak GPU memory of a chunk's fit.
Large runs skip the per-frame loop (``--loop-frames 0``) and the repeats (``--repeats 1``).

Usage::

    python benchmarks/fitting.py                      # stick insect from ../shared, LM
    python benchmarks/fitting.py --threads 1          # one core
    python benchmarks/fitting.py --optimizer lbfgs    # the first-order baseline
    python benchmarks/fitting.py --model demo --frames 32 --loop-frames 2
    python benchmarks/fitting.py --device cuda --frames 100000 --chunk-size 8192 \
        --loop-frames 0 --repeats 1
    python benchmarks/fitting.py --mouse-session --before REV   # the real mouse config
    python benchmarks/fitting.py --side-by-side --before REV    # the stick benchmark

``--tables DIR`` also writes each table to ``DIR/fitting_*.md`` (``docs/tables``: the
documentation's).

``--side-by-side`` runs this synthetic benchmark (its ``--model``, ``--frames``,
``--optimizer``, ...; batched fit only) with this checkout's code and with the code of
``--before``, each side in its own subprocess on one thread, ``--rounds`` alternating
runs of ``--repeats`` fits per side, idle and beside a busy process (``--loads``), on the
same observations: frames/s (median), each round's speed-up (median, min-max: the
two runs of a round are neighbours in time, so drift between rounds cancels; which side
runs first alternates) and joint errors of both sides.

``--mouse-session`` times the real config ``configs/fitting/mouse_multiview.py`` (all its
stages) on the shared 4-camera session (120 frames, one animal, float64, one thread),
side by side with the code of ``--before`` (a commit, checked out in a temporary git
worktree and run in a subprocess with its own config), idle and with a competing busy
process on the machine. Each side fits all 4 views once (score: median reprojection
error in the 3 well-calibrated views) and the 3 two-of-three good-view subsets (score:
median error in the held-out good view); the errors are computed here, with the same
code for both sides. A second table times ``tools/fit.py`` on that config end to end
(imports, skeleton, every frame, export; ``--tool-runs`` alternating runs per side, the
medians of wall and CPU seconds and the process's peak memory).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# Passive OpenMP waiting for --threads > 1 (read when torch loads OpenMP: before import).
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import fitting_against  # noqa: E402  (benchmarks/fitting_against.py)
from fitting_problem import (fit_in_chunks, joint_error, load_model,  # noqa: E402
                             make_problem, registrant)
from tables import command_line, emit  # noqa: E402  (benchmarks/tables.py)

from smilfit.cameras import projection_matrices, triangulate_dlt  # noqa: E402
from smilfit.utils.allocator import keep_freed_memory  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', choices=['stick', 'mouse', 'demo'], default='stick')
    parser.add_argument('--frames', type=int, default=64, help='frames in the batched fit')
    parser.add_argument('--loop-frames', type=int, default=4,
                        help='frames fitted one at a time for the loop timing')
    parser.add_argument('--optimizer', choices=['lm', 'lbfgs'], default='lm',
                        help='per-sample Levenberg-Marquardt (default) or L-BFGS')
    parser.add_argument('--iterations', type=int, default=None,
                        help='LM iterations (default 8) or L-BFGS steps x50 iterations '
                             '(default 25)')
    parser.add_argument('--linear-dtype', choices=['float32', 'float64'], default='float32',
                        help='precision of the LM normal equations')
    parser.add_argument('--dtype', choices=['float64', 'float32'], default='float32',
                        help='precision of the body model and the fit (the synthetic '
                             'observations are always made in float64)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads (default 1: robust on a busy machine; more '
                             'threads wait passively, see docs/fitting.md)')
    parser.add_argument('--repeats', type=int, default=3,
                        help='batched fits per case; the median time is reported')
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    parser.add_argument('--chunk-size', type=int, default=None,
                        help='frames per fit (default: all frames in one batch)')
    parser.add_argument('--mouse-session', action='store_true',
                        help='time the real mouse config on the shared session against '
                             '--before (see above) instead of the synthetic benchmark')
    parser.add_argument('--side-by-side', action='store_true',
                        help='time this synthetic benchmark (--model, --frames, ...) in '
                             'this checkout and in --before, one thread, under --loads')
    parser.add_argument('--rounds', type=int, default=2,
                        help='--side-by-side: alternating runs per side and load')
    parser.add_argument('--before', default='HEAD',
                        help='the git revision --mouse-session and --side-by-side compare '
                             'with, or a baseline\'s name: first-fitter, '
                             'before-per-animal-shape (docs/changelog.md says what each is; '
                             'default HEAD: uncommitted changes against the last commit)')
    parser.add_argument('--loads', default='idle,busy',
                        help='--mouse-session, --side-by-side: machine loads to time under '
                             '(idle, busy)')
    parser.add_argument('--tool-runs', type=int, default=2,
                        help='--mouse-session: alternating end-to-end tools/fit.py runs per '
                             'side and load (0: none)')
    parser.add_argument('--tables', metavar='DIR', default=None,
                        help='also write the tables to DIR/fitting_*.md (docs/tables for the '
                             'documentation)')
    args = parser.parse_args(argv)
    args.command = command_line(argv, 'fitting.py')   # (for --tables)
    keep_freed_memory()  # as tools/fit.py does
    if args.tool_runs < 0:
        parser.error('--tool-runs must be >= 0')
    if args.rounds < 1 or args.repeats < 1:
        parser.error('--rounds and --repeats must be >= 1')
    if args.side_by_side:
        torch.set_num_threads(1)
        return fitting_against.synthetic_side_by_side(args)
    if args.mouse_session:
        torch.set_num_threads(1)
        return fitting_against.mouse_session_table(
            args.before, tuple(args.loads.split(',')), args.tool_runs, args.tables, args.command)
    return synthetic_table(args)


def synthetic_table(args) -> int:
    """The synthetic benchmark in this checkout: the batched fit and a per-frame loop."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device available')
    chunk = args.chunk_size or args.frames
    model = load_model(args.model).to(device)
    fit_model = model if args.dtype == 'float64' else load_model(args.model,
                                                                  torch.float32).to(device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    iterations = args.iterations or (8 if args.optimizer == 'lm' else 25)
    reg = registrant(fit_model, iterations, args.optimizer, args.linear_dtype)
    reg.fit(make_problem(model, 2, 0.0, 0.0, seed=1)[0])  # warm-up (one-time set-up)
    where = (torch.cuda.get_device_name(device) if device.type == 'cuda'
             else f'CPU, {torch.get_num_threads()} thread(s)')
    print(f'\n## {args.model}: {model.num_joints} joints, 4 views, {args.frames} frames '
          f'(chunks of {chunk}), {args.optimizer} x{iterations}, {args.dtype}, {where}\n')
    rows = []
    for case, noise, missing in (('noise-free', 0.0, 0.0), ('2 px, 20 % missing', 2.0, 0.2)):
        obs, truth, length = make_problem(model, args.frames, noise, missing, seed=0)
        P = projection_matrices(obs['R'][0], obs['t'][0], obs['K'][0])
        dlt = triangulate_dlt(obs['keypoints_2d'], P, obs['confidence'])
        dlt_err = joint_error(dlt, truth, length)
        walls, cpus = [], []
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.repeats):  # the fit is deterministic: only the time varies
            sync()
            start, cpu = time.perf_counter(), time.process_time()
            fitted = fit_in_chunks(reg, obs, chunk)
            sync()
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
        batched, cpu = statistics.median(walls), statistics.median(cpus)
        peak = (f'{torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f}'
                if device.type == 'cuda' else '-')
        rows.append([case, 'batched per-sample', args.frames, f'{batched:.2f}', f'{cpu:.2f}',
                     f'{args.frames / batched:.1f}', f'{joint_error(fitted, truth, length):.4f}',
                     f'{dlt_err:.3f}', peak])
        print(f'{case}: batched {args.frames / batched:.1f} frames/s', flush=True)
        n = min(args.loop_frames, args.frames)
        if n == 0:
            continue
        start, cpu = time.perf_counter(), time.process_time()
        loop_joints = [reg.fit({k: v[i:i + 1] for k, v in obs.items()}).output.joints
                       for i in range(n)]
        sync()
        loop = time.perf_counter() - start
        cpu = time.process_time() - cpu
        loop_err = joint_error(torch.cat(loop_joints), truth[:n], length)
        diff = float((torch.cat(loop_joints) - fitted[:n]).norm(dim=-1).max())
        rows.append([case, 'per-frame loop', n, f'{loop:.2f}', f'{cpu:.2f}', f'{n / loop:.2f}',
                     f'{loop_err:.4f} (max diff to batched {100 * diff / length:.1e} %)', '-',
                     '-'])
    model_name, kind = args.model, device.type
    variant = '' if args.optimizer == 'lm' else f'_{args.optimizer}'
    emit(f'fitting_{model_name}_{kind}{variant}',
         ['case', 'mode', 'frames', 'seconds', 'CPU seconds', 'frames/s',
          'joint error (% body)', 'DLT error (% body)', 'peak GPU MiB'], rows,
         args.tables, args.command)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
