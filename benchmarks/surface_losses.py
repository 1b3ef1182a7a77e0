"""Chamfer loss speed and memory: brute-force (torch) vs k-d tree nearest-neighbour search.

For every scan size x model size, one ``ChamferLoss(direction='both')`` forward and
backward pass (gradients w.r.t. the model vertices) per backend. The model meshes are the
SMIL stick insect (3020 vertices) and mouse (11263 vertices) from ``../shared/models``
when present (posed at random), otherwise ellipsoids with as many vertices; the scans are
points sampled on the mesh surface plus 0.5 % noise (what a registration sees).

Every cell runs in its own process, so the peak memory of one cell cannot hide another's:
``peak MB`` is the growth of the process's peak resident memory during the cell (CPU) or
``torch.cuda.max_memory_allocated`` (CUDA). ``ms`` is the median over ``--repeats``
forward + backward passes after one warm-up pass. ``same`` says whether both backends
gave the same loss (relative difference < 1e-5; float32 ties can pick different,
equally near neighbours) and ``speed-up`` is torch ms / kdtree ms.

Usage::

    python benchmarks/surface_losses.py                        # CPU, 1 thread, float32
    python benchmarks/surface_losses.py --scan-sizes 1000 10000 --repeats 5
    python benchmarks/surface_losses.py --device cuda --backends torch kdtree
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import SHARED  # noqa: E402  (benchmarks/shared_data.py)

MODEL_FILES = {3020: 'SMILy_STICK.pkl', 11263: 'SMILy_Mouse_static_joints.pkl'}


def model_mesh(num_vertices: int, dtype: torch.dtype, seed: int = 0):
    """(V, 3) vertices (centred, body length ~1) and (F, 3) faces or ``None``."""
    g = torch.Generator().manual_seed(seed)
    path = SHARED / 'models' / MODEL_FILES.get(num_vertices, '-')
    if path.is_file():
        from smilfit.body_models import SMILModel, load_model_data
        model = SMILModel(data=load_model_data(path), dtype=dtype)
        with torch.no_grad():
            v = model(body_pose=0.1 * torch.randn(1, model.num_joints - 1, 3, generator=g,
                                                  dtype=dtype)).vertices[0]
        v = v - v.mean(0)
        return v / (v.amax(0) - v.amin(0)).max(), model.faces
    # An ellipsoid of the right vertex count (no mesh: scans are noisy vertices).
    d = torch.nn.functional.normalize(torch.randn(num_vertices, 3, generator=g), dim=-1)
    return (d * torch.tensor([0.5, 0.1, 0.08])).to(dtype), None


def scan_points(vertices: torch.Tensor, faces, num_points: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    if faces is not None:
        from smilfit.registration import sample_surface_points
        pts = sample_surface_points(vertices[None], faces, num_points, g)['points'][0]
    else:
        pts = vertices[torch.randint(0, len(vertices), (num_points,), generator=g)]
    return pts + 0.005 * torch.randn(pts.shape, generator=g, dtype=pts.dtype)


def run_cell(args: argparse.Namespace) -> Dict[str, float]:
    """One (scan size, model size, backend) measurement in this process."""
    import resource
    torch.set_num_threads(args.threads)
    from smilfit.losses import ChamferLoss
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    verts, faces = model_mesh(args.cell_vertices, dtype)
    points = scan_points(verts, faces, args.cell_points).to(device)[None]
    verts = verts.to(device)[None]
    loss_fn = ChamferLoss(backend=args.cell_backend, workers=args.workers)

    def step() -> float:
        v = verts.clone().requires_grad_()
        loss = loss_fn(v, points).sum()
        loss.backward()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        return float(loss)

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    value = step()  # warm-up (and the peak memory)
    if device.type == 'cuda':
        peak_mb = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024.0
    times: List[float] = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return dict(ms=1e3 * statistics.median(times), peak_mb=peak_mb, loss=value)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Chamfer loss forward+backward time and peak memory, brute-force '
                    '(torch) vs k-d tree nearest-neighbour search.')
    parser.add_argument('--scan-sizes', type=int, nargs='+', default=[1000, 10000, 100000],
                        help='scan points per cell')
    parser.add_argument('--model-sizes', type=int, nargs='+', default=[3020, 11263],
                        help='model vertices (3020: stick insect, 11263: mouse; other '
                             'counts or missing ../shared: ellipsoids)')
    parser.add_argument('--backends', nargs='+', default=['torch', 'kdtree'],
                        choices=['torch', 'kdtree'])
    parser.add_argument('--repeats', type=int, default=3, help='timed passes per cell')
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    parser.add_argument('--workers', type=int, default=1,
                        help="k-d tree query threads (scipy's workers; -1: all cores)")
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float64'])
    parser.add_argument('--device', default='cpu')
    # internal: run one cell and print its result as JSON
    parser.add_argument('--cell-points', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--cell-vertices', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--cell-backend', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cell_backend is not None:
        print(json.dumps(run_cell(args)))
        return 0
    from tqdm import tqdm
    common = ['--repeats', str(args.repeats), '--threads', str(args.threads), '--workers',
              str(args.workers), '--dtype', args.dtype, '--device', args.device]
    cells = [(p, v, b) for p in args.scan_sizes for v in args.model_sizes
             for b in args.backends]
    results = {}
    for p, v, b in tqdm(cells, desc='cells'):
        out = subprocess.run([sys.executable, __file__, *common, '--cell-points', str(p),
                              '--cell-vertices', str(v), '--cell-backend', b],
                             capture_output=True, text=True, check=True)
        results[p, v, b] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f'\nChamferLoss(direction="both") forward+backward, B=1, {args.dtype}, '
          f'{args.device}, torch threads {args.threads}, kd workers {args.workers}')
    head = f'{"scan pts":>9} {"model V":>8}'
    for b in args.backends:
        head += f' {b + " ms":>12} {b + " MB":>11}'
    both = len(args.backends) == 2
    if both:
        head += f' {"speed-up":>9} {"same":>5}'
    print(head)
    for p in args.scan_sizes:
        for v in args.model_sizes:
            row = f'{p:>9} {v:>8}'
            for b in args.backends:
                r = results[p, v, b]
                row += f' {r["ms"]:>12.1f} {r["peak_mb"]:>11.0f}'
            if both:
                a, c = (results[p, v, b] for b in args.backends)
                same = abs(a['loss'] - c['loss']) <= 1e-5 * abs(a['loss'])
                row += f' {a["ms"] / c["ms"]:>8.1f}x {str(same):>5}'
            print(row)
    return 0


if __name__ == '__main__':
    sys.exit(main())
