"""Batched L-BFGS speed: one BatchedLBFGS over B frames vs a Python loop of torch.optim.LBFGS.

Each frame is a 7-parameter similarity fit (axis-angle, translation, log-scale) of N model
points to noisy observed points; both optimisers use the strong-Wolfe line search, the
same tolerances and ``max_iter``, and reach the same per-frame optimum (the table shows the
largest parameter difference). Times are medians over repeats, in milliseconds.

Columns: ``iters`` total L-BFGS iterations over all frames, ``calls`` closure calls (one
batched call serves every frame), ``ms/iter`` total time / ``iters``, ``max abs diff``
between the two results over the frames where torch's is finite, ``torch NaN`` frames
where torch.optim.LBFGS returned NaN parameters (its cubic interpolation overflows in
float32 after a huge trial loss; BatchedLBFGS bisects there instead).

Usage::

    python benchmarks/lbfgs.py                       # CPU, one thread, float32
    python benchmarks/lbfgs.py --threads 4 --dtype float64 --batch-sizes 1 16 64 256 1024
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smilfit.body_models.rotations import axis_angle_to_matrix  # noqa: E402
from smilfit.registrants.batched_lbfgs import BatchedLBFGS  # noqa: E402

Problem = Dict[str, torch.Tensor]


def make_problem(batch: int, points: int, dtype: torch.dtype, device: torch.device,
                 seed: int = 0) -> Problem:
    """Random similarity transforms applied to random points, plus 1 cm noise."""
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(batch, points, 3, generator=g, dtype=torch.float64)
    R = axis_angle_to_matrix(torch.randn(batch, 3, generator=g, dtype=torch.float64))
    s = torch.exp(0.3 * torch.randn(batch, 1, 1, generator=g, dtype=torch.float64))
    T = torch.randn(batch, 1, 3, generator=g, dtype=torch.float64)
    Q = s * P @ R.transpose(1, 2) + T + 0.01 * torch.randn(batch, points, 3, generator=g,
                                                             dtype=torch.float64)
    return dict(P=P.to(device, dtype), Q=Q.to(device, dtype))


def per_sample_loss(rot: torch.Tensor, transl: torch.Tensor, log_scale: torch.Tensor,
                    P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """(B, 3), (B, 3), (B, 1), (B, N, 3), (B, N, 3) -> (B,) squared residuals."""
    pred = log_scale.exp()[:, :, None] * P @ axis_angle_to_matrix(rot).transpose(1, 2)
    return (pred + transl[:, None] - Q).square().sum((1, 2))


def init_params(batch: int, like: torch.Tensor) -> List[torch.Tensor]:
    """Axis-angle 0.1 (all three), translation 0, log-scale 0, with ``like``'s dtype/device."""
    return [like.new_full((batch, 3), 0.1).requires_grad_(),
            like.new_zeros(batch, 3).requires_grad_(),
            like.new_zeros(batch, 1).requires_grad_()]


def run_batched(problem: Problem, **kw) -> Tuple[torch.Tensor, int, int]:
    """One BatchedLBFGS step over the batch: (B, 7) result, iterations, closure calls."""
    params = init_params(problem['P'].shape[0], problem['P'])
    opt = BatchedLBFGS(params, **kw)

    def closure():
        loss = per_sample_loss(*params, problem['P'], problem['Q'])
        loss.sum().backward()
        return loss
    opt.step(closure)
    return torch.cat([p.detach() for p in params], 1), int(opt.n_iter.sum()), opt.n_evals


def run_loop(problem: Problem, **kw) -> Tuple[torch.Tensor, int, int]:
    """torch.optim.LBFGS frame by frame: (B, 7) result, iterations, closure calls."""
    out, iters, calls = [], 0, 0
    for b in range(problem['P'].shape[0]):
        params = init_params(1, problem['P'])
        opt = torch.optim.LBFGS(params, **kw)
        P, Q = problem['P'][b:b + 1], problem['Q'][b:b + 1]

        def closure():
            opt.zero_grad()
            loss = per_sample_loss(*params, P, Q).sum()
            loss.backward()
            return loss
        opt.step(closure)
        state = opt.state[params[0]]
        iters, calls = iters + state['n_iter'], calls + state['func_evals']
        out.append(torch.cat([p.detach() for p in params], 1))
    return torch.cat(out), iters, calls


def timed(fn: Callable[[], tuple], repeats: int, device: torch.device) -> Tuple[float, tuple]:
    """Median wall time (ms) over ``repeats`` calls after one warm-up, and the last result."""
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    result = fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 16, 64, 256])
    parser.add_argument('--points', type=int, default=50, help='points per frame (default 50)')
    parser.add_argument('--max-iter', type=int, default=100)
    parser.add_argument('--threads', type=int, default=1, help='CPU threads (default 1)')
    parser.add_argument('--dtype', choices=['float32', 'float64'], default='float32')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == 'cuda'
             else f'CPU, {torch.get_num_threads()} thread(s)')
    kw = dict(max_iter=args.max_iter, history_size=10, line_search_fn='strong_wolfe',
              tolerance_grad=1e-7, tolerance_change=1e-9)
    print(f'\n## L-BFGS, 7-parameter similarity fits, {args.points} points per frame, '
          f'{args.dtype}, {where}, max_iter {args.max_iter}\n')
    print('| B | batched ms | iters | calls | ms/iter | frames/s | loop ms | iters | calls | '
          'ms/iter | frames/s | speed-up | max abs diff | torch NaN |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for batch in args.batch_sizes:
        problem = make_problem(batch, args.points, dtype, device)
        t_b, (x_b, it_b, ev_b) = timed(lambda: run_batched(problem, **kw), args.repeats, device)
        t_l, (x_l, it_l, ev_l) = timed(lambda: run_loop(problem, **kw), args.repeats, device)
        ok = torch.isfinite(x_l).all(1)  # torch's line search can return NaN in float32
        diff = (x_b - x_l)[ok].abs().max().item()
        print(f'| {batch} | {t_b:.1f} | {it_b} | {ev_b} | {t_b / it_b:.3f} | '
              f'{1e3 * batch / t_b:.0f} | {t_l:.1f} | {it_l} | {ev_l} | {t_l / it_l:.3f} | '
              f'{1e3 * batch / t_l:.0f} | {t_l / t_b:.1f}x | {diff:.1e} | {int((~ok).sum())} |',
              flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
