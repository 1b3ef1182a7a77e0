"""The damped normal equations' solvers on a body's pose systems: the sparse factorisation
over the kinematic tree against the dense one, by the number of systems in the batch.

A pose stage's systems (global orientation, every joint's rotation, translation and the
global scale: ``3 J + 4`` columns) couple a joint's rotation with its ancestors' and
descendants' only. The sparse factorisation (:class:`SparseCholesky`) needs a fraction of
the dense one's flops, but its cost is mostly a fixed number of tensor operations per
elimination level; the dense one (:class:`DenseCholesky`) is one LAPACK call whose cost
grows with the systems. So a batch of a few systems (the last samples of a stage still
stepping) is cheaper dense: :class:`SparseCholesky` factorises batches of fewer than
:data:`SPARSE_MIN_SYSTEMS` systems densely. This prints both paths' time per solve and
the one the solver takes (``chosen``), to re-measure that crossover on another machine.

``--chains C ...`` times instead the motion prior's chain solve
(:func:`~smilfit.registrants.solver.banded.banded_solve`, a velocity term: diagonal
couplings between neighbouring frames) on ``C`` chains of each ``--chain-frames`` length
per batch, ``--columns`` unknowns a frame: the time per frame falls with the chains solved
side by side, which is why the fit cuts chains (``MotionPriorHandler(chain_frames=)``) and
fits large batches. Written as ``linear_solvers_chains.md``.

Usage::

    python benchmarks/linear_solvers.py                  # stick insect and mouse (../shared)
    python benchmarks/linear_solvers.py --models demo    # the built-in demo model
    python benchmarks/linear_solvers.py --device cuda --systems 1 4 16 64 256
    python benchmarks/linear_solvers.py --models stick mouse demo --tables docs/tables
    python benchmarks/linear_solvers.py --chains 1 2 4 8 16 --chain-frames 128 512 \
        --tables docs/tables
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import SHARED  # noqa: E402  (benchmarks/shared_data.py)

from tables import command_line, emit  # noqa: E402  (benchmarks/tables.py)
from timing import time_call  # noqa: E402

from smilfit.body_models import demo_model_data, load_model_data  # noqa: E402
from smilfit.registrants.solver.banded import FrameBlocks, banded_solve  # noqa: E402
from smilfit.registrants.solver.linear_solver import (  # noqa: E402
    SPARSE_MIN_SYSTEMS, DenseCholesky, SparseCholesky, plan_linear_solver)

SHARED_MODELS = SHARED / 'models'
MODEL_FILES = dict(stick='SMILy_STICK.pkl', mouse='SMILy_Mouse_static_joints.pkl')


def pose_coupling(parents) -> torch.Tensor:
    """(P, P) bool, P = 3 J + 4: the structural coupling of a pose stage's system (joint
    0's rotation is the global orientation; the last 4 columns, translation and scale,
    meet every other). A point on joint ``j`` depends on ``j``'s rotation and its
    ancestors'."""
    J = len(parents)
    P = 3 * J + 4
    coupling = torch.zeros(P, P, dtype=torch.bool)
    for j in range(J):
        cols, a = [], j
        while a >= 0:
            cols += [3 * a, 3 * a + 1, 3 * a + 2]
            a = int(parents[a]) if a else -1
        cols = torch.tensor(cols + list(range(3 * J, P)))
        coupling[cols[:, None], cols[None, :]] = True
    return coupling


def packed_systems(solver: SparseCholesky, coupling: torch.Tensor, n: int, device,
                   seed: int = 0):
    """``n`` float32 positive definite systems with ``coupling``'s pattern, as the LM
    builds them: packed (the sparse layout) and as (n, P, P) upper triangles."""
    g = torch.Generator().manual_seed(seed)
    P = coupling.shape[0]
    A = torch.randn(n, P, 2 * P, generator=g, dtype=torch.float64)
    H = ((A @ A.transpose(1, 2)) * coupling + P * torch.eye(P)).float().triu()
    slots, width = solver.layout
    packed = H.new_zeros(n, width).scatter_(1, slots[None].expand(n, -1), H.reshape(n, -1))
    grad = torch.randn(n, P, generator=g).float()
    damping = torch.full((n, P), 1e-3)
    return [t.to(device) for t in (packed, H, grad, damping)]


def run(models, systems, device, tables=None, command=None) -> None:
    """Print (and with ``tables`` write, as ``linear_solvers.md``) the time per solve of
    each path by model and systems per batch."""
    print(f'device {device}, threads {torch.get_num_threads()}, '
          f'SPARSE_MIN_SYSTEMS {SPARSE_MIN_SYSTEMS}')
    rows = []
    for name in models:
        if name == 'demo':
            data = demo_model_data()
        else:
            path = SHARED_MODELS / MODEL_FILES[name]
            if not path.exists():
                print(f'{name}: {path} not found: skipped')
                continue
            data = load_model_data(path)
        coupling = pose_coupling(data.parents)
        planned = plan_linear_solver(coupling)      # (on the CPU, to build the systems)
        if not isinstance(planned, SparseCholesky):
            print(f'{name}: {coupling.shape[0]} columns, dense ({type(planned).__name__})')
            continue
        solver = planned.to(device)
        sparse_only = SparseCholesky(solver.plan, dense_below=0)
        fraction = solver.plan.flops / solver.plan.dense_flops
        for n in systems:
            packed, H, grad, damping = packed_systems(planned, coupling, n, device)
            ms = [time_call(lambda: s.solve(h, grad, damping), device)
                  for s, h in ((sparse_only, packed), (DenseCholesky(), H), (solver, packed))]
            rows.append([name, coupling.shape[0], f'{fraction:.3f}', n] +
                        [f'{t:.2f}' for t in ms])
    emit('linear_solvers', ['model', 'P', 'sparse flops / dense', 'systems', 'sparse ms',
                            'dense ms', 'chosen ms'], rows, tables, command)


def chain_systems(chains: int, frames: int, columns: int, seed: int = 0):
    """float32 block-tridiagonal systems of ``chains`` chains of ``frames`` frames,
    ``columns`` unknowns a frame, as the motion prior builds them: each frame's
    positive definite block (by reference, :class:`FrameBlocks`) and diagonal couplings
    ``-w`` to the frame before (``w`` also added to both frames' diagonals, so the
    systems stay positive definite). Returns ``(blocks, below, rhs, lengths)``."""
    g = torch.Generator().manual_seed(seed)
    n = chains * frames
    A = torch.randn(n, columns, 2 * columns, generator=g, dtype=torch.float64)
    H = (A @ A.transpose(1, 2) / columns + torch.eye(columns)).float()
    w = torch.rand(chains, frames, 1, columns, generator=g)
    w[:, 0] = 0.0                                   # a chain's first frame: no link back
    extra = w[:, :, 0] + torch.cat([w[:, 1:, 0], torch.zeros_like(w[:, :1, 0])], 1)
    blocks = FrameBlocks(H, torch.arange(n).reshape(chains, frames), extra)
    rhs = torch.randn(chains, frames, columns, generator=g)
    return blocks, -w, rhs, torch.full((chains,), frames)


def run_chains(chains, lengths, columns, tables=None, command=None) -> None:
    """Print (and with ``tables`` write, as ``linear_solvers_chains.md``) the time of one
    chain solve and per frame by chains per batch and frames per chain (CPU)."""
    print(f'threads {torch.get_num_threads()}, {columns} columns a frame')
    rows = []
    cpu = torch.device('cpu')
    for frames in lengths:
        for count in chains:
            blocks, below, rhs, lens = chain_systems(count, frames, columns)
            ms = time_call(lambda: banded_solve(blocks, below, rhs, lens), cpu, min_reps=3)
            rows.append([frames, count, count * frames, f'{ms:.1f}',
                         f'{1000 * ms / (count * frames):.0f}'])
    emit('linear_solvers_chains', ['frames per chain', 'chains', 'frames', 'ms per solve',
                                   'us per frame'], rows, tables, command)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', choices=['stick', 'mouse', 'demo'],
                        default=['stick', 'mouse'])
    parser.add_argument('--systems', nargs='+', type=int, default=[1, 2, 4, 8, 16, 32, 64],
                        help='systems per batch')
    parser.add_argument('--chains', nargs='+', type=int, default=None,
                        help='time the chain solve of this many chains per batch instead')
    parser.add_argument('--chain-frames', nargs='+', type=int, default=[128],
                        help='frames per chain (with --chains; default 128)')
    parser.add_argument('--columns', type=int, default=84,
                        help="unknowns a frame (with --chains; default 84, long_session.py's "
                             "last stage on the demo mouse)")
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    parser.add_argument('--tables', metavar='DIR', default=None,
                        help='also write the table to DIR/linear_solvers.md '
                             '(linear_solvers_chains.md with --chains; docs/tables for the '
                             'documentation)')
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.systems):
        parser.error('--systems must be positive')
    torch.set_num_threads(args.threads)
    if args.chains is not None:
        if any(n < 1 for n in args.chains) or any(n < 2 for n in args.chain_frames) \
                or args.columns < 1:
            parser.error('--chains and --columns must be positive, --chain-frames at least 2')
        run_chains(args.chains, args.chain_frames, args.columns, args.tables,
                   command_line(argv, 'linear_solvers.py'))
        return 0
    run(args.models, args.systems, torch.device(args.device), args.tables,
        command_line(argv, 'linear_solvers.py'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
