"""Body-model speed: forward and forward+backward per batch size, and the smplx yard-stick.

Prints one table per device: median milliseconds per call for the stick-insect and
mouse models from ../shared (or the embedded demo model when ../shared is absent),
with vertices (full skinning) and without (joints and keypoints only).

The bar: at batch 64 on one CPU thread, ``SMILModel`` forward with vertices
is at least 2x faster than ``smplx.lbs`` on the same model and inputs. smplx has no
notion of an empty pose-blendshape basis, so it gets the zero basis a model without
pose blendshapes implies, exactly as its own loader would build it.

Usage::

    python benchmarks/body_model.py                 # CPU, one thread
    python benchmarks/body_model.py --device cuda   # adds batch 4096
    python benchmarks/body_model.py --threads 2 --batch-sizes 1 64
    python benchmarks/body_model.py --device cpu --tables docs/tables   # the docs' tables
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import SHARED  # noqa: E402  (benchmarks/shared_data.py)

from smilfit.body_models import SMILModel  # noqa: E402
from tables import command_line, emit  # noqa: E402  (benchmarks/tables.py)
from timing import time_call  # noqa: E402  (benchmarks/timing.py)
from smilfit.body_models.demo_model import demo_model_data  # noqa: E402
from smilfit.body_models.io import load_model_data  # noqa: E402

SHARED_MODELS = SHARED / 'models'
MODEL_FILES = {'stick': 'SMILy_STICK.pkl', 'mouse': 'SMILy_Mouse_static_joints.pkl'}




def make_inputs(model: SMILModel, batch: int, requires_grad: bool,
                seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    J, K = model.num_joints, model.num_betas
    inputs = dict(global_orient=0.3 * torch.randn(batch, 3, generator=g),
                  body_pose=0.3 * torch.randn(batch, J - 1, 3, generator=g),
                  betas=torch.randn(batch, K, generator=g),
                  transl=torch.randn(batch, 3, generator=g))
    return {k: v.to(model.device, model.dtype).requires_grad_(requires_grad)
            for k, v in inputs.items()}


def bench_model(model: SMILModel, batch: int, device: torch.device) -> Dict[str, float]:
    """Forward / forward+backward times with and without vertices."""
    result = {}
    for with_vertices in (True, False):
        tag = 'verts' if with_vertices else 'joints'
        inputs = make_inputs(model, batch, requires_grad=False)
        with torch.no_grad():
            result[f'fwd {tag}'] = time_call(
                lambda: model(**inputs, return_vertices=with_vertices), device)
        grad_inputs = make_inputs(model, batch, requires_grad=True)

        def step():
            out = model(**grad_inputs, return_vertices=with_vertices)
            loss = out.joints.square().sum()
            if with_vertices:
                loss = loss + out.vertices.square().sum()
            loss.backward()
        result[f'fwd+bwd {tag}'] = time_call(step, device)
    return result


def smplx_ratio(model: SMILModel, batch: int = 64, pairs: int = 40) -> list:
    """Forward with vertices of smplx.lbs and SMILModel on the same model and inputs (CPU,
    batch 64): their median ms, the median of the per-pair ratios of ``pairs`` interleaved
    pairs (so machine-load drift hits both alike) and the largest vertex difference."""
    try:
        from smplx.lbs import lbs
    except ImportError:
        raise SystemExit('smplx is not installed (pip install -e .[dev]); or --no-smplx')
    data = model.data
    V, J = data.num_vertices, data.num_joints
    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    v_template, shapedirs = f32(data.v_template), f32(data.shapedirs)
    weights, J_regressor = f32(data.weights), f32(data.J_regressor)
    if data.static_joint_locs:
        # smplx always regresses joints from the shaped mesh. Give it the static joints
        # as J extra vertices (no shape offsets, skinned rigidly to their own joint)
        # and a regressor that selects them: the same model, J more vertices.
        v_template = torch.cat([v_template, f32(data.J)])
        shapedirs = torch.cat([shapedirs, torch.zeros(J, 3, data.num_betas)])
        weights = torch.cat([weights, torch.eye(J)])
        J_regressor = torch.cat([torch.zeros(J, V), torch.eye(J)], dim=1)
    P = 9 * (J - 1)
    V_smplx = v_template.shape[0]
    posedirs = torch.zeros(P, V_smplx * 3)
    if data.posedirs.shape[2]:
        posedirs[:, :V * 3] = f32(data.posedirs).reshape(V * 3, P).T
    inputs = make_inputs(model, batch, requires_grad=False, seed=1)
    pose = torch.cat([inputs['global_orient'], inputs['body_pose'].flatten(1)], 1)
    args = (inputs['betas'], pose, v_template, shapedirs, posedirs, J_regressor,
            torch.as_tensor(data.parents), weights)
    call_ours = lambda: model(global_orient=inputs['global_orient'],  # noqa: E731
                              body_pose=inputs['body_pose'], betas=inputs['betas'])
    call_smplx = lambda: lbs(*args)  # noqa: E731
    with torch.no_grad():
        err = (call_ours().vertices - call_smplx()[0][:, :V]).abs().max().item()
        # Interleave the two so that machine-load drift hits both alike; report the
        # median of per-pair ratios.
        for _ in range(3):
            call_ours(), call_smplx()
        t_ours, t_smplx = [], []
        for _ in range(pairs):
            for fn, times in ((call_ours, t_ours), (call_smplx, t_smplx)):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
    ratio = statistics.median(s / o for s, o in zip(t_smplx, t_ours))
    return [f'{1e3 * statistics.median(t_smplx):.2f}', f'{1e3 * statistics.median(t_ours):.2f}',
            f'{ratio:.1f}x', f'{err:.0e}']


def load_models() -> Dict[str, SMILModel]:
    models = {}
    for name, file in MODEL_FILES.items():
        path = SHARED_MODELS / file
        if path.exists():
            models[name] = SMILModel(data=load_model_data(path))
    if not models:
        print('../shared/models not found: benchmarking the embedded demo model only')
    models['demo'] = SMILModel(data=demo_model_data())
    return models


#: Batches at which the chunked and the shape-factored skinning paths are timed.
FACTORED_BATCHES = (4, 8, 16, 32, 64)


def factored_speedup(model: SMILModel, batches=FACTORED_BATCHES) -> list:
    """Time of the chunked skinning path over the shape-factored one, forward with
    vertices on the CPU, per batch (above 1: the factored path is faster)."""
    cells = []
    saved = model.factored_min_batch
    try:
        for batch in batches:
            inputs = make_inputs(model, batch, requires_grad=False)
            times = []
            for pinned in (10 ** 9, 1):           # chunked, then factored
                model.factored_min_batch = pinned
                with torch.no_grad():
                    times.append(time_call(lambda: model(**inputs), torch.device('cpu')))
            cells.append(f'{times[0] / times[1]:.2f}')
    finally:
        model.factored_min_batch = saved
    return cells


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['cpu', 'cuda', 'all'], default='all',
                        help="'all' = CPU, plus CUDA when available (default)")
    parser.add_argument('--threads', type=int, default=1, help='CPU threads (default 1)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=None,
                        help='default: 1 16 64 256 (and 4096 on a GPU)')
    parser.add_argument('--no-smplx', action='store_true', help='skip the smplx comparison')
    parser.add_argument('--tables', metavar='DIR', default=None,
                        help='also write each table to DIR/<name>.md (docs/tables for the '
                             'documentation)')
    args = parser.parse_args(argv)
    command = command_line(argv, 'body_model.py')
    torch.set_num_threads(args.threads)
    devices = ['cpu'] if args.device == 'cpu' else ['cuda'] if args.device == 'cuda' else (
        ['cpu', 'cuda'] if torch.cuda.is_available() else ['cpu'])
    if 'cuda' in devices and not torch.cuda.is_available():
        parser.error('--device cuda but CUDA is not available')
    models = load_models()
    columns = ['fwd verts', 'fwd+bwd verts', 'fwd joints', 'fwd+bwd joints']
    for dev_name in devices:
        device = torch.device(dev_name)
        sizes = args.batch_sizes or ([1, 16, 64, 256] + ([4096] if dev_name == 'cuda' else []))
        label = (torch.cuda.get_device_name(device) if dev_name == 'cuda'
                 else f'CPU, {torch.get_num_threads()} thread(s)')
        print(f'\n## {label}: median ms per call (float32)\n')
        rows = []
        for name, model in models.items():
            model = model.to(device)
            for batch in sizes:
                r = bench_model(model, batch, device)
                rows.append([name, model.num_vertices, model.num_joints, batch] +
                            [f'{r[c]:.2f}' for c in columns])
            models[name] = model.cpu()
        emit(f'body_model_{dev_name}', ['model', 'V', 'J', 'batch'] + columns, rows,
             args.tables, command)
    print(f'\n## Chunked over shape-factored skinning (CPU, {torch.get_num_threads()} '
          'thread(s), forward with vertices; above 1: factored is faster)\n')
    emit('body_model_factored',
         ['model', 'V', 'J', 'K'] + [f'batch {b}' for b in FACTORED_BATCHES],
         [[name, m.num_vertices, m.num_joints, m.num_betas] + factored_speedup(m)
          for name, m in models.items()], args.tables, command)
    if not args.no_smplx:
        print(f'\n## smplx comparison (CPU, {torch.get_num_threads()} thread(s), '
              'forward with vertices)\n')
        emit('body_model_smplx',
             ['model', 'smplx.lbs ms', 'SMILModel ms', 'SMILModel faster by', 'max vertex diff'],
             [[name, *smplx_ratio(model)] for name, model in models.items()],
             args.tables, command)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
