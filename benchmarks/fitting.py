"""Fitting speed and accuracy: synthetic 4-view recovery, batched per-sample vs per-frame loop.

Samples random poses (0.3 rad per joint axis) and shapes from the model's shape prior,
projects the model's joints into 4 calibrated cameras (optionally with pixel noise and
missing points), fits with ``SMILRegistrant`` from the rest pose, and prints a table:
frames/s (wall clock; CPU seconds too, as other processes on the machine inflate wall
time) of the batched per-sample fit and of a per-frame loop (the same registrant on
one frame at a time), the mean joint error as a percentage of the body length, and the
error of DLT triangulation of the same 2D points (the baseline to beat).

The fitting issue's bars: noise-free within 0.01 % of the body length; 2 px noise and
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smilfit.body_models import SMILModel, demo_model_data, load_model_data  # noqa: E402
from smilfit.cameras import project_points, projection_matrices, triangulate_dlt  # noqa: E402
from smilfit.datasets.synthetic import ring_cameras  # noqa: E402
from smilfit.registrants import SMILRegistrant  # noqa: E402

SHARED_MODELS = Path(__file__).resolve().parents[2] / 'shared' / 'models'


def load_model(name: str, dtype: torch.dtype = torch.float64) -> SMILModel:
    if name == 'demo':
        return SMILModel(data=demo_model_data(), dtype=dtype)
    files = dict(stick='SMILy_STICK.pkl', mouse='SMILy_Mouse_static_joints.pkl')
    path = SHARED_MODELS / files[name]
    if not path.exists():
        raise SystemExit(f'{path} not found: use --model demo')
    return SMILModel(data=load_model_data(path), dtype=dtype)


def make_problem(model: SMILModel, frames: int, noise_px: float, missing: float, seed: int):
    """Observations (on the model's device), true joints (B, J, 3) and the body length."""
    g = torch.Generator().manual_seed(seed)
    J, K = model.num_joints, model.num_betas
    cov = model.data.shape_cov if model.data.shape_cov is not None else np.eye(K)
    chol = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
    truth = dict(global_orient=0.3 * torch.randn(frames, 3, generator=g, dtype=torch.float64),
                 body_pose=0.3 * torch.randn(frames, J - 1, 3, generator=g, dtype=torch.float64),
                 betas=torch.randn(frames, K, generator=g, dtype=torch.float64) @ chol.T)
    truth = {k: v.to(model.device) for k, v in truth.items()}
    joints = model(**truth, return_vertices=False).joints
    rest = model().joints_kin[0]
    length = float((rest.max(0).values - rest.min(0).values).norm())
    cams = ring_cameras(4, target=np.zeros(3), up=np.array([0.0, 0.0, 1.0]),
                        distance=3.0 * length, elevations_deg=[35, 45, 40, 50],
                        azimuths_deg=[0, 90, 180, 270], focal=1000.0, image_size=(1024, 1024))
    K_, R_, t_ = (torch.as_tensor(cams[k], device=model.device) for k in ('K', 'R', 't'))
    uv = project_points(joints[:, None], K_, R_, t_)
    uv = uv + noise_px * torch.randn(uv.shape, generator=g, dtype=torch.float64).to(uv.device)
    drop = torch.rand(uv.shape[:3], generator=g, dtype=torch.float64).to(uv.device) < missing
    uv = torch.where(drop[..., None], torch.full_like(uv, float('nan')), uv)
    obs = dict(keypoints_2d=uv, confidence=(~drop).to(torch.float64),
               view_valid=torch.ones(frames, 4, dtype=torch.bool, device=uv.device),
               K=K_.expand(frames, -1, -1, -1), R=R_.expand(frames, -1, -1, -1),
               t=t_.expand(frames, -1, -1))
    return obs, joints, length


def registrant(model: SMILModel, iterations: int, optimizer: str = 'lm',
               linear_dtype: str = 'float32') -> SMILRegistrant:
    """The benchmark's registrant: 2D keypoints in 4 views plus the model's shape prior.

    ``'lm'``: one batched per-sample Levenberg-Marquardt stage of ``iterations``
    iterations (closed-form Jacobians). ``'lbfgs'``: a rigid stage then ``iterations``
    x 50 per-sample L-BFGS iterations.
    """
    handlers = [dict(type='Keypoint2DHandler', name='kp2d', source='joints',
                     loss=dict(type='KeypointMSELoss')),
                dict(type='ShapePriorHandler', name='shape_prior', weight=1e-2,
                     loss=dict(type='ShapePriorLoss'))]
    fit = ['global_orient', 'transl', 'body_pose', 'betas']
    if optimizer == 'lm':
        stages = [dict(name='full', fit=fit, n_iter=iterations, ftol=1e-10, gtol=1e-9,
                       optimizer=dict(type='LevenbergMarquardt', linear_dtype=linear_dtype))]
    else:
        stages = [dict(name='rigid', fit=['global_orient', 'transl'], n_iter=2,
                       optimizer=dict(type='LBFGS', max_iter=30)),
                  dict(name='full', fit=fit, n_iter=iterations,
                       optimizer=dict(type='LBFGS', max_iter=50))]
    reg = SMILRegistrant(body_model=model, handlers=handlers, stages=stages)
    reg.setup(dict(keypoint_names=model.joint_names))
    return reg


def joint_error(pred: torch.Tensor, truth: torch.Tensor, length: float) -> float:
    err = (pred.to(truth) - truth).norm(dim=-1)
    return float(100 * torch.nanmean(err) / length)


def fit_in_chunks(reg: SMILRegistrant, obs, chunk_size: int) -> torch.Tensor:
    """Fitted joints (B, J, 3) of every frame, fitting ``chunk_size`` frames at a time."""
    frames = obs['keypoints_2d'].shape[0]
    return torch.cat([reg.fit({k: v[i:i + chunk_size] for k, v in obs.items()}).output.joints
                      for i in range(0, frames, chunk_size)])


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
                             'threads wait passively, see the README)')
    parser.add_argument('--repeats', type=int, default=3,
                        help='batched fits per case; the median time is reported')
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    parser.add_argument('--chunk-size', type=int, default=None,
                        help='frames per fit (default: all frames in one batch)')
    args = parser.parse_args(argv)
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
    print('| case | mode | frames | seconds | CPU seconds | frames/s | joint error (% body) | '
          'DLT error (% body) | peak GPU MiB |')
    print('|---|---|---|---|---|---|---|---|---|')
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
        print(f'| {case} | batched per-sample | {args.frames} | {batched:.2f} | {cpu:.2f} | '
              f'{args.frames / batched:.1f} | {joint_error(fitted, truth, length):.4f}'
              f' | {dlt_err:.3f} | {peak} |', flush=True)
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
        print(f'| {case} | per-frame loop | {n} | {loop:.2f} | {cpu:.2f} | {n / loop:.2f} | '
              f'{loop_err:.4f} (max diff to batched {100 * diff / length:.1e} %) | - | - |',
              flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
