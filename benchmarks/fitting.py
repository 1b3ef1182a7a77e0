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
import contextlib
import os
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Passive OpenMP waiting for --threads > 1 (read when torch loads OpenMP: before import).
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import SHARED  # noqa: E402  (benchmarks/shared_data.py)

from smilfit.body_models import SMILModel, demo_model_data, load_model_data  # noqa: E402
from smilfit.cameras import project_points, projection_matrices, triangulate_dlt  # noqa: E402
from smilfit.datasets.synthetic import ring_cameras  # noqa: E402
from smilfit.registrants import SMILRegistrant  # noqa: E402
from smilfit.utils.allocator import keep_freed_memory  # noqa: E402

SHARED_MODELS = SHARED / 'models'


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
    handlers, stages = registrant_config(iterations, optimizer, linear_dtype)
    reg = SMILRegistrant(body_model=model, handlers=handlers, stages=stages)
    reg.setup(dict(keypoint_names=model.joint_names))
    return reg


def registrant_config(iterations: int, optimizer: str = 'lm', linear_dtype: str = 'float32'):
    """The handlers and stages of :func:`registrant` (plain dicts)."""
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
    return handlers, stages


def joint_error(pred: torch.Tensor, truth: torch.Tensor, length: float) -> float:
    err = (pred.to(truth) - truth).norm(dim=-1)
    return float(100 * torch.nanmean(err) / length)


def fit_in_chunks(reg: SMILRegistrant, obs, chunk_size: int) -> torch.Tensor:
    """Fitted joints (B, J, 3) of every frame, fitting ``chunk_size`` frames at a time."""
    frames = obs['keypoints_2d'].shape[0]
    return torch.cat([reg.fit({k: v[i:i + chunk_size] for k, v in obs.items()}).output.joints
                      for i in range(0, frames, chunk_size)])


ROOT = Path(__file__).resolve().parents[1]
SESSION = SHARED / 'data' / 'sleap_anipose_minimal_session' / 'minimal_session'
GOOD_VIEWS = ('back', 'mid', 'top')
#: fit name -> cameras fitted; 'all' is scored in the good views, the others in the
#: good view they leave out.
SESSION_FITS = {'all': ['back', 'mid', 'side', 'top'], 'held_top': ['back', 'mid'],
                'held_mid': ['back', 'top'], 'held_back': ['mid', 'top']}

#: Run in a checkout (cwd) with its own code: fits its mouse config, saves the fitted
#: points and times.
_SESSION_WORKER = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from mmengine.config import Config
from smilfit.apis.fitting import (_OBSERVATION_KEYS, fitted_points, load_joint_lookup,
                                  observations_from_batch)
from smilfit.datasets.hdf5_format import DatasetReader
from smilfit.registry import REGISTRANTS
from smilfit.utils import register_all_modules
h5, model_path, out, fits = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
try:  # the checkout's own process settings, where it has them (tools/fit.py applies them)
    from smilfit.utils.allocator import keep_freed_memory
    keep_freed_memory()
except ImportError:
    pass
register_all_modules()
cfg = Config.fromfile('configs/fitting/mouse_multiview.py')
reader = DatasetReader(h5)
batch = reader.read(np.arange(len(reader)), keys=list(_OBSERVATION_KEYS))
obs = {k: torch.as_tensor(v) for k, v in observations_from_batch(batch).items()}
obs = {k: (v.double() if v.is_floating_point() else v) for k, v in obs.items()}
cams = [str(c) for c in np.asarray(reader.camera_names).ravel()]
reg_cfg = dict(cfg.registrant, hooks=[])
reg_cfg['body_model'] = dict(cfg.body_model, model_path=model_path)
lookup = load_joint_lookup('configs/fitting/mouse_joint_lookup.csv')
report = {}
for name, views in fits.items():
    reg = REGISTRANTS.build(dict(reg_cfg))
    reg.body_model.double()
    reg.setup(dict(keypoint_names=list(reader.keypoint_names), joint_lookup=lookup))
    o = dict(obs)
    o['view_valid'] = o['view_valid'].bool() & torch.tensor([c in views for c in cams])
    wall, cpu = time.perf_counter(), time.process_time()
    result = reg.fit(o)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    handler = reg.keypoint_handler()
    np.save(f'{out}/{name}.npy', fitted_points(result, handler).detach().double().numpy())
    report[name] = dict(wall=wall, cpu=cpu, model_index=handler.model_index.tolist(),
                        data_index=handler.data_index.tolist(), cameras=cams)
json.dump(report, open(f'{out}/report.json', 'w'))
"""


#: Run in a checkout (cwd) with its own code: the synthetic benchmark's fit of the
#: observations saved by the parent, ``repeats`` times; saves the fitted joints and times.
_SYNTHETIC_WORKER = r"""
import json, statistics, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from smilfit.body_models import SMILModel, demo_model_data, load_model_data
from smilfit.registrants import SMILRegistrant
spec = json.loads(sys.argv[1])
try:  # the checkout's own process settings, where it has them (tools/fit.py applies them)
    from smilfit.utils.allocator import keep_freed_memory
    keep_freed_memory()
except ImportError:
    pass
data = demo_model_data() if spec['model'] == 'demo' else load_model_data(spec['model'])
model = SMILModel(data=data, dtype=getattr(torch, spec['dtype']))
reg = SMILRegistrant(body_model=model, handlers=spec['handlers'], stages=spec['stages'])
reg.setup(dict(keypoint_names=model.joint_names))
def load(name):
    obs = torch.load(spec['dir'] + '/' + name + '.pt', weights_only=True)
    return {k: (v.to(model.dtype) if v.is_floating_point() else v) for k, v in obs.items()}
reg.fit(load('warmup'))  # one-time set-up
report = {}
for case in spec['cases']:
    obs, walls, cpus = load(case), [], []
    for _ in range(spec['repeats']):
        wall, cpu = time.perf_counter(), time.process_time()
        joints = reg.fit(obs).output.joints
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    np.save(spec['dir'] + '/' + case + '_' + spec['side'] + '.npy',
            joints.detach().double().numpy())
    report[case] = dict(wall=statistics.median(walls), cpu=statistics.median(cpus))
json.dump(report, open(spec['dir'] + '/report_' + spec['side'] + '.json', 'w'))
"""

#: The synthetic benchmark's cases: name -> (pixel noise, fraction of missing points).
SYNTHETIC_CASES = {'noise-free': (0.0, 0.0), '2 px, 20 % missing': (2.0, 0.2)}


@contextlib.contextmanager
def _checkout(rev: str, where: Path):
    """A temporary git worktree of ``rev`` at ``where`` (removed afterwards)."""
    subprocess.run(['git', '-C', str(ROOT), 'worktree', 'add', '--detach', str(where), rev],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield where
    finally:
        subprocess.run(['git', '-C', str(ROOT), 'worktree', 'remove', '--force', str(where)],
                       check=False)


@contextlib.contextmanager
def _machine_load(load: str):
    """``'busy'``: a process spinning on a core meanwhile; ``'idle'``: nothing."""
    spinner = (subprocess.Popen([sys.executable, '-c', 'while True: pass'])
               if load == 'busy' else None)
    try:
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def synthetic_side_by_side(args) -> int:
    """``--side-by-side``: the synthetic benchmark in this checkout and in ``--before``
    (a temporary worktree), each in a subprocess with its own code, one thread,
    alternating, under each of ``--loads``."""
    model = load_model(args.model)
    path = 'demo' if args.model == 'demo' else str(
        SHARED_MODELS / dict(stick='SMILy_STICK.pkl', mouse='SMILy_Mouse_static_joints.pkl')[
            args.model])
    iterations = args.iterations or (8 if args.optimizer == 'lm' else 25)
    handlers, stages = registrant_config(iterations, args.optimizer, args.linear_dtype)
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    rows = []
    with tempfile.TemporaryDirectory(prefix='smilfit-bench-') as tmp, \
            _checkout(args.before, Path(tmp) / 'before') as old:
        tmp = Path(tmp)
        truths, dlts = {}, {}
        torch.save(make_problem(model, 2, 0.0, 0.0, seed=1)[0], tmp / 'warmup.pt')
        names = {case: f'case{i}' for i, case in enumerate(SYNTHETIC_CASES)}
        for case, (noise, missing) in SYNTHETIC_CASES.items():
            obs, truth, length = make_problem(model, args.frames, noise, missing, seed=0)
            torch.save(obs, tmp / f'{names[case]}.pt')
            P = projection_matrices(obs['R'][0], obs['t'][0], obs['K'][0])
            truths[case] = truth
            dlts[case] = joint_error(triangulate_dlt(obs['keypoints_2d'], P,
                                                     obs['confidence']), truth, length)
        for load in args.loads.split(','):
            runs = {'before': [], 'after': []}
            with _machine_load(load):
                for round_ in range(args.rounds):
                    order = (('before', old), ('after', ROOT))
                    for side, checkout in (order if round_ % 2 == 0 else order[::-1]):
                        spec = dict(model=path, dtype=args.dtype, handlers=handlers,
                                    stages=stages, dir=str(tmp), side=side,
                                    cases=list(names.values()), repeats=args.repeats)
                        subprocess.run([sys.executable, '-c', _SYNTHETIC_WORKER,
                                        json.dumps(spec)], cwd=checkout, check=True,
                                       env=dict(env, PYTHONPATH=str(checkout)),
                                       stdout=subprocess.DEVNULL)
                        runs[side].append(json.loads(
                            (tmp / f'report_{side}.json').read_text()))
            for case, name in names.items():
                med = {side: {k: statistics.median(r[name][k] for r in reports)
                              for k in ('wall', 'cpu')} for side, reports in runs.items()}
                # Each round's before/after ratio: the two runs of a round are
                # neighbours in time, so the machine's drift between rounds cancels.
                ratios = [b[name]['wall'] / a[name]['wall']
                          for b, a in zip(runs['before'], runs['after'])]
                errors = {side: joint_error(torch.as_tensor(np.load(
                    tmp / f'{name}_{side}.npy')), truths[case], length) for side in runs}
                rows.append((load, case, med, ratios, errors, dlts[case]))
    print(f'\n## {args.model}: {model.num_joints} joints, 4 views, {args.frames} frames, '
          f'{args.optimizer} x{iterations}, {args.dtype}, 1 thread: {args.before} (before) vs '
          f'this checkout (after), median of {args.rounds} alternating runs of '
          f'{args.repeats} fits (the side that runs first alternates too)\n')
    print('| load | case | before frames/s (CPU s) | after frames/s (CPU s) | speed-up (wall, '
          'CPU) | speed-up per round: median (min-max) | joint error before -> after '
          '(% body) | DLT (% body) |')
    print('|---|---|---|---|---|---|---|---|')
    for load, case, med, ratios, errors, dlt in rows:
        b, a = med['before'], med['after']
        print(f'| {load} | {case} | {args.frames / b["wall"]:.1f} ({b["cpu"]:.3f}) | '
              f'{args.frames / a["wall"]:.1f} ({a["cpu"]:.3f}) | {b["wall"] / a["wall"]:.2f}x, '
              f'{b["cpu"] / a["cpu"]:.2f}x | {statistics.median(ratios):.2f}x '
              f'({min(ratios):.2f}-{max(ratios):.2f}) | {errors["before"]:.4f} -> '
              f'{errors["after"]:.4f} | {dlt:.3f} |')
    return 0


def _session_h5(workdir: Path) -> Path:
    """The shared session's keypoints as HDF5 (no images), made with this checkout."""
    from smilfit.cli.preprocess_sleap import main as preprocess
    out = workdir / 'session.h5'
    if preprocess([str(SESSION), str(out), '--no-images', '--no-progress']) != 0:
        raise SystemExit('preprocessing the shared session failed')
    return out


def _run_session_fits(checkout: Path, h5: Path, out: Path) -> dict:
    """Fit the checkout's mouse config in a subprocess (its own code, one thread)."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    model = SHARED / 'models' / 'SMILy_Mouse_static_joints.pkl'
    subprocess.run([sys.executable, '-c', _SESSION_WORKER, str(h5), str(model), str(out),
                    json.dumps(SESSION_FITS)], cwd=checkout, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    report = json.loads((out / 'report.json').read_text())
    for name in report:
        report[name]['points'] = torch.as_tensor(np.load(out / f'{name}.npy'))
    return report


def _session_errors(report: dict, obs) -> dict:
    """Median pixel errors: 'all' in the good views, each held-out fit in its view."""
    from smilfit.apis.fitting import point_reprojection_errors
    cams = report['all']['cameras']
    out = {}
    for name, fit in report.items():
        err = point_reprojection_errors(fit['points'], obs, torch.tensor(fit['model_index']),
                                        torch.tensor(fit['data_index']))      # (B, C, M)
        views = GOOD_VIEWS if name == 'all' else [name.split('_', 1)[1]]
        picked = err[:, [cams.index(v) for v in views]]
        out[name] = float(torch.nanmedian(picked[torch.isfinite(picked)]))
    return out


def _tool_run(checkout: Path, h5: Path, work: Path) -> dict:
    """``tools/fit.py`` on the mouse config in ``checkout`` (its own code, one thread), on
    the prepared session: wall and CPU seconds and peak memory of that process."""
    model = SHARED / 'models' / 'SMILy_Mouse_static_joints.pkl'
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    cmd = [sys.executable, 'tools/fit.py', 'configs/fitting/mouse_multiview.py', '--work-dir',
           str(work), '--threads', '1', '--no-progress', '--no-visualize', '--overwrite',
           '--cfg-options', f'data.path={h5}', f'body_model.model_path={model}',
           'data.sleap=None']  # the prepared session, wherever the checkout is
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f'tools/fit.py failed in {checkout} (exit {proc.returncode})')
    return dict(wall=time.perf_counter() - start, cpu=usage.ru_utime + usage.ru_stime,
                peak_mb=usage.ru_maxrss / 1024.0)


def _end_to_end_rows(old: Path, h5: Path, tmp: Path, runs: int, load: str) -> list:
    """``runs`` alternating tool runs of each side: (load, side, [reports])."""
    reports = {'before': [], 'after': []}
    for i in range(runs):
        for side, path in (('before', old), ('after', ROOT)):
            reports[side].append(_tool_run(path, h5, tmp / f'tool_{side}_{load}_{i}'))
    return [(load, reports)]


def _print_end_to_end(before: str, rows) -> None:
    print(f'\n## tools/fit.py configs/fitting/mouse_multiview.py end to end (imports, fit, '
          f'export), 1 thread: {before} (before) vs this checkout (after); median of the '
          'alternating runs\n')
    print('| load | runs | before s (CPU s) | after s (CPU s) | speed-up (wall, CPU) | '
          'peak MB before -> after |')
    print('|---|---|---|---|---|---|')
    for load, reports in rows:
        med = {side: {k: statistics.median(r[k] for r in runs) for k in ('wall', 'cpu', 'peak_mb')}
               for side, runs in reports.items()}
        b, a = med['before'], med['after']
        print(f'| {load} | {len(reports["after"])} | {b["wall"]:.1f} ({b["cpu"]:.1f}) | '
              f'{a["wall"]:.1f} ({a["cpu"]:.1f}) | {b["wall"] / a["wall"]:.2f}x, '
              f'{b["cpu"] / a["cpu"]:.2f}x | {b["peak_mb"]:.0f} -> {a["peak_mb"]:.0f} |')


def mouse_session_table(before: str, loads=('idle', 'busy'), tool_runs: int = 2) -> int:
    """``--mouse-session``: this checkout against ``before``, idle and/or busy."""
    from smilfit.apis.fitting import _OBSERVATION_KEYS, observations_from_batch
    from smilfit.datasets.hdf5_format import DatasetReader
    if not SESSION.is_dir():
        print(f'skipped: {SESSION} is not available')
        return 0
    with tempfile.TemporaryDirectory(prefix='smilfit-bench-') as tmp, \
            _checkout(before, Path(tmp) / 'before') as old:
        tmp = Path(tmp)
        h5 = _session_h5(tmp)
        reader = DatasetReader(h5)
        batch = reader.read(np.arange(len(reader)), keys=list(_OBSERVATION_KEYS))
        obs = {k: torch.as_tensor(v) for k, v in observations_from_batch(batch).items()}
        obs = {k: (v.double() if v.is_floating_point() else v) for k, v in obs.items()}
        rows, tool_rows = [], []
        for load in loads:
            with _machine_load(load):
                reports = {side: _run_session_fits(path, h5, tmp / f'{side}_{load}')
                           for side, path in (('before', old), ('after', ROOT))}
                if tool_runs:
                    tool_rows += _end_to_end_rows(old, h5, tmp, tool_runs, load)
            rows.append((load, reports, {s: _session_errors(r, obs)
                                         for s, r in reports.items()}))
    _print_session_table(before, rows)
    if tool_rows:
        _print_end_to_end(before, tool_rows)
    return 0


def _print_session_table(before: str, rows) -> None:
    print(f'\n## configs/fitting/mouse_multiview.py on the shared session (120 frames, '
          f'4 cameras), float64, 1 thread: {before} (before) vs this checkout (after)\n')
    print('| load | fit | before s (CPU s) | after s (CPU s) | speed-up (wall, CPU) | '
          'before px | after px |')
    print('|---|---|---|---|---|---|---|')
    for load, reports, errors in rows:
        totals = {s: [0.0, 0.0] for s in reports}
        for name in SESSION_FITS:
            b, a = reports['before'][name], reports['after'][name]
            for side, r in (('before', b), ('after', a)):
                totals[side][0] += r['wall']
                totals[side][1] += r['cpu']
            what = ('all 4 views (error in the good views)' if name == 'all'
                    else f'2 views, held-out {name.split("_", 1)[1]}')
            print(f'| {load} | {what} | {b["wall"]:.1f} ({b["cpu"]:.1f}) | {a["wall"]:.1f} '
                  f'({a["cpu"]:.1f}) | {b["wall"] / a["wall"]:.1f}x, {b["cpu"] / a["cpu"]:.1f}x'
                  f' | {errors["before"][name]:.2f} | {errors["after"][name]:.2f} |')
        (bw, bc), (aw, ac) = totals['before'], totals['after']
        print(f'| {load} | **total** | {bw:.1f} ({bc:.1f}) | {aw:.1f} ({ac:.1f}) | '
              f'{bw / aw:.1f}x, {bc / ac:.1f}x | | |')


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
                             'with (default HEAD: uncommitted changes against the last '
                             'commit; docs/changelog.md names the baselines of the '
                             'documented figures)')
    parser.add_argument('--loads', default='idle,busy',
                        help='--mouse-session, --side-by-side: machine loads to time under '
                             '(idle, busy)')
    parser.add_argument('--tool-runs', type=int, default=2,
                        help='--mouse-session: alternating end-to-end tools/fit.py runs per '
                             'side and load (0: none)')
    args = parser.parse_args(argv)
    keep_freed_memory()  # as tools/fit.py does
    if args.tool_runs < 0:
        parser.error('--tool-runs must be >= 0')
    if args.rounds < 1 or args.repeats < 1:
        parser.error('--rounds and --repeats must be >= 1')
    if args.side_by_side:
        torch.set_num_threads(1)
        return synthetic_side_by_side(args)
    if args.mouse_session:
        torch.set_num_threads(1)
        return mouse_session_table(args.before, tuple(args.loads.split(',')), args.tool_runs)
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
