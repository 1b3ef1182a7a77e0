"""The fitting benchmarks against another git revision (``benchmarks/fitting.py
--side-by-side`` and ``--mouse-session``): each side runs in a subprocess with its own code
(the other revision in a temporary git worktree), one thread, idle and beside a busy
process, and the tables give both sides' times and errors."""
from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fitting_problem import (SHARED, SHARED_MODELS, joint_error, load_model,  # noqa: E402
                             make_problem, registrant_config)
from tables import emit  # noqa: E402  (benchmarks/tables.py)

from smilfit.cameras import projection_matrices, triangulate_dlt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Where the baselines the documentation compares with are named: a table whose rows
#: open with the name in backticks and give the revision in the next column.
CHANGELOG = ROOT / 'docs' / 'changelog.md'


def baselines(changelog: Path = CHANGELOG) -> dict:
    """The named baselines of the changelog's table (``--before first-fitter``): name ->
    git revision."""
    text = changelog.read_text() if changelog.is_file() else ''
    return dict(re.findall(r'^\| `([\w-]+)`[^|]*\| `([0-9a-f]{7,40})`', text, re.M))
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
    """A temporary git worktree of ``rev`` (a revision or a name of :func:`baselines`) at
    ``where`` (removed afterwards)."""
    rev = baselines().get(rev, rev)
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
    table = []
    for load, case, med, ratios, errors, dlt in rows:
        b, a = med['before'], med['after']
        table.append([load, case, f'{args.frames / b["wall"]:.1f} ({b["cpu"]:.3f})',
                      f'{args.frames / a["wall"]:.1f} ({a["cpu"]:.3f})',
                      f'{b["wall"] / a["wall"]:.2f}x, {b["cpu"] / a["cpu"]:.2f}x',
                      f'{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})',
                      f'{errors["before"]:.4f} -> {errors["after"]:.4f}', f'{dlt:.3f}'])
    model_name = args.model
    emit(f'fitting_side_by_side_{model_name}',
         ['load', 'case', 'before frames/s (CPU s)', 'after frames/s (CPU s)',
          'speed-up (wall, CPU)', 'speed-up per round: median (min-max)',
          'joint error before -> after (% body)', 'DLT (% body)'], table, args.tables,
         args.command)
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


def _print_end_to_end(before: str, rows, tables=None, command=None) -> None:
    print(f'\n## tools/fit.py configs/fitting/mouse_multiview.py end to end (imports, fit, '
          f'export), 1 thread: {before} (before) vs this checkout (after); median of the '
          'alternating runs\n')
    table = []
    for load, reports in rows:
        med = {side: {k: statistics.median(r[k] for r in runs) for k in ('wall', 'cpu', 'peak_mb')}
               for side, runs in reports.items()}
        b, a = med['before'], med['after']
        table.append([load, len(reports['after']), f'{b["wall"]:.1f} ({b["cpu"]:.1f})',
                      f'{a["wall"]:.1f} ({a["cpu"]:.1f})',
                      f'{b["wall"] / a["wall"]:.2f}x, {b["cpu"] / a["cpu"]:.2f}x',
                      f'{b["peak_mb"]:.0f} -> {a["peak_mb"]:.0f}'])
    emit('fitting_mouse_session_end_to_end',
         ['load', 'runs', 'before s (CPU s)', 'after s (CPU s)', 'speed-up (wall, CPU)',
          'peak MB before -> after'], table, tables, command)


def mouse_session_table(before: str, loads=('idle', 'busy'), tool_runs: int = 2,
                        tables=None, command=None) -> int:
    """``--mouse-session``: this checkout against ``before``, idle and/or busy; with
    ``tables``, the tables are written there too (``command`` names what wrote them)."""
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
    _print_session_table(before, rows, tables, command)
    if tool_rows:
        _print_end_to_end(before, tool_rows, tables, command)
    return 0


def _print_session_table(before: str, rows, tables=None, command=None) -> None:
    print(f'\n## configs/fitting/mouse_multiview.py on the shared session (120 frames, '
          f'4 cameras), float64, 1 thread: {before} (before) vs this checkout (after)\n')
    table = []
    for load, reports, errors in rows:
        totals = {s: [0.0, 0.0] for s in reports}
        for name in SESSION_FITS:
            b, a = reports['before'][name], reports['after'][name]
            for side, r in (('before', b), ('after', a)):
                totals[side][0] += r['wall']
                totals[side][1] += r['cpu']
            what = ('all 4 views (error in the good views)' if name == 'all'
                    else f'2 views, held-out {name.split("_", 1)[1]}')
            table.append([load, what, f'{b["wall"]:.1f} ({b["cpu"]:.1f})',
                          f'{a["wall"]:.1f} ({a["cpu"]:.1f})',
                          f'{b["wall"] / a["wall"]:.1f}x, {b["cpu"] / a["cpu"]:.1f}x',
                          f'{errors["before"][name]:.2f}', f'{errors["after"][name]:.2f}'])
        (bw, bc), (aw, ac) = totals['before'], totals['after']
        held = [name for name in SESSION_FITS if name != 'all']
        mean = {side: statistics.mean(errors[side][name] for name in held) for side in errors}
        table.append([load, '**total**', f'{bw:.1f} ({bc:.1f})', f'{aw:.1f} ({ac:.1f})',
                      f'**{bw / aw:.1f}x**, {bc / ac:.1f}x',
                      f'held-out mean {mean["before"]:.2f}', f'{mean["after"]:.2f}'])
    emit('fitting_mouse_session',
         ['load', 'fit', 'before s (CPU s)', 'after s (CPU s)', 'speed-up (wall, CPU)',
          'before px', 'after px'], table, tables, command)
