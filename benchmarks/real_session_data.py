"""The real-session benchmark's data, networks and scores: the shared session prepared
twice (keypoints for the fit, crops for the network), the networks trained on its
training blocks, and every method's 3D points scored on the held-out frames
(``benchmarks/real_session_regression.py`` drives them)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shared_data import SHARED  # noqa: E402  (benchmarks/shared_data.py)

SESSION = SHARED / 'data' / 'sleap_anipose_minimal_session' / 'minimal_session'
MODEL = SHARED / 'models' / 'SMILy_Mouse_static_joints.pkl'
FIT_CONFIG = ROOT / 'configs' / 'fitting' / 'mouse_multiview.py'
NET_CONFIG = ROOT / 'configs' / 'regression' / 'mouse_session_resnet18.py'
LOOKUP = ROOT / 'configs' / 'fitting' / 'mouse_joint_lookup.csv'
SCORED = ('back', 'mid', 'top')
#: Time blocks of the network config's split (configs/_base_/datasets/mouse_session.py).
TIME_BLOCKS = 10
#: Training seeds of the (b) against (c) comparison of a full run.
FULL_RUN_SEEDS = (0, 1, 2, 3, 4)
APART = ('side',)


def fit_config_changes(results: Path, cfg) -> list:
    """Where the registrant config ``results`` (a ``fit_results.h5``) was fitted with
    differs from ``cfg``'s (as ``fit_dataset`` records it): one ``'path: stored ->
    current'`` line per difference, ``[]`` when they agree. A cached fit from an older
    checkout is otherwise reused silently, and every network trained on it with it."""
    import json

    import h5py

    from smilfit.apis.fitting.config import registrant_config
    with h5py.File(results, 'r') as f:
        stored = json.loads(f.attrs['config']).get('registrant') if 'config' in f.attrs \
            else None
    if stored is None:
        return ['registrant: not recorded in the cached fit']
    current = json.loads(json.dumps(registrant_config(cfg, progress=False), sort_keys=True,
                                    default=str))
    changes = []

    def walk(old, new, path):
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                walk(old.get(key), new.get(key), f'{path}.{key}')
        elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
            for i, (o, n) in enumerate(zip(old, new)):
                walk(o, n, f'{path}[{i}]')
        elif old != new:
            changes.append(f'{path}: {old!r} -> {new!r}')
    walk(stored, current, 'registrant')
    return changes


def prepare(out: Path, crop_size: int = 128):
    """The keypoint-only session, the ``crop_size`` px crops and the fit (made when
    missing)."""
    from mmengine.config import Config

    from smilfit.apis.fitting import fit_dataset, prepare_data
    from smilfit.cli.preprocess_sleap import main as preprocess
    crops = out / f'session_{crop_size}.h5'
    if not crops.exists():
        assert preprocess([str(SESSION), str(crops), '--crop-mode', 'bbox_crop',
                           '--target-size', str(crop_size), '--no-progress']) == 0
    cfg = Config.fromfile(str(FIT_CONFIG))
    cfg.body_model.model_path = str(MODEL)
    cfg.data.sleap.input = str(SESSION)
    cfg.data.path = str(out / 'session_keypoints.h5')
    cfg.data.joint_lookup = str(LOOKUP)
    results = out / 'fit' / 'fit_results.h5'
    if not results.exists():
        prepare_data(cfg, progress=False)
        fit_dataset(cfg, out / 'fit', progress=False)
    else:
        changes = fit_config_changes(results, cfg)
        if changes:
            print(f'warning: the cached fit {results} was made with another registrant '
                  f'config ({"; ".join(changes)}); its numbers, and those of every network '
                  f'trained on it, are that config\'s: remove {out} to measure this one')
    return crops, Path(cfg.data.path), results


def net_config(crops: Path, work: Path, iters: int, device: str, fit_results=None,
               renders: Path = None, start_from: Path = None, seed: int = 0,
               config: Path = NET_CONFIG, amp: bool = False, split_seed: int = 0):
    """The network config ``config`` training ``iters`` iterations on the training blocks
    that ``split_seed`` chooses (or on every sample of ``renders``), from
    ``start_from``'s weights when given, with the random ``seed``; in bf16 mixed
    precision with ``amp`` (a GPU's, as ``tools/train.py --amp``)."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    if seed:
        cfg.randomness = dict(seed=seed)
    cfg.model.body_model.model_path = str(MODEL)
    cfg.model.joint_lookup = str(LOOKUP)
    cfg.data = None                             # the crops are prepared already
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = str(crops.parent)
        loader.dataset.ann_file = crops.name
        loader.dataset.seed = split_seed
    if fit_results is not None:
        cfg.train_dataloader.dataset.fit_results = str(fit_results)
    if renders is not None:
        cfg.train_dataloader.dataset.update(data_root=str(renders.parent),
                                            ann_file=renders.name, split=None,
                                            split_by='session')
    if start_from is not None:
        cfg.load_from = str(start_from)
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = iters
    warmup = min(cfg.param_scheduler[0].end, max(1, iters // 4))
    cfg.param_scheduler[0].end = cfg.param_scheduler[-1].begin = warmup
    cfg.param_scheduler[-1].end = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.work_dir = str(work)
    if device != 'cpu':
        cfg.env_cfg = dict(cfg.env_cfg, dist_cfg=dict(backend='nccl'))
    if amp:
        from smilfit.cli.train import set_amp
        set_amp(cfg, 'bf16')
    return cfg


def train(crops: Path, work: Path, iters: int, device: str, fit_results=None,
          renders: Path = None, start_from: Path = None, seed: int = 0,
          config: Path = NET_CONFIG, amp: bool = False, split_seed: int = 0):
    """Train :func:`net_config` (made when missing); the runner (trained)."""
    from mmengine.runner import Runner
    cfg = net_config(crops, work, iters, device, fit_results, renders, start_from, seed,
                     config, amp, split_seed)
    checkpoint = work / f'iter_{iters}.pth'
    if checkpoint.exists():
        cfg.load_from = str(checkpoint)
        cfg.train_cfg.max_iters = 0
    runner = Runner.from_cfg(cfg)
    timing = work / 'train_seconds.txt'
    if not checkpoint.exists():
        start = time.perf_counter()
        runner.train()
        timing.write_text(f'{time.perf_counter() - start:.1f}\n')
    else:
        runner.load_checkpoint(str(checkpoint))
    return runner, float(timing.read_text()) if timing.exists() else float('nan')


#: Iterations of the probe that sizes a run to ``--time-budget``, and how many of its
#: first ones (the loader's and the kernels' warm-up) its timing leaves out.
PROBE_ITERS, PROBE_WARMUP = 40, 10
#: Seconds a ``--network-only`` or ``--table-only`` run spends after its trainings: the
#: held-out predictions, the baselines and the table.
AFTER_TRAINING_S = 30.0


def iterations_within(seconds: float, crops: Path, out: Path, device: str, fit_results,
                      config: Path, amp: bool, most: int, runs: int = 1):
    """How many iterations (at most ``most``, a multiple of 100 where more than 100
    fit) of ``config`` each of ``runs`` trainings can have within ``seconds``, each run's
    set-up and checkpoint included, from a probe of :data:`PROBE_ITERS` iterations (its
    work dir removed after); and the probe's seconds per iteration. A lent GPU's lease
    is minutes: a recipe that overran it would leave no table at all."""
    import gc
    import shutil

    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class IterationClock(Hook):
        def __init__(self):
            self.stamps = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.stamps.append(time.perf_counter())

    work = out / 'probe'
    cfg = net_config(crops, work, PROBE_ITERS, device, fit_results, config=config, amp=amp)
    start = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    clock = IterationClock()
    runner.register_hook(clock)
    runner.train()
    # (ending its loader workers, as every real run's end does, counts as set-up)
    del runner
    gc.collect()
    total = time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)
    per_iteration = float(np.median(np.diff(clock.stamps[PROBE_WARMUP:])))
    overhead = total - PROBE_ITERS * per_iteration
    fit = int((seconds - runs * overhead) / (runs * per_iteration))
    iters = min(most, fit // 100 * 100 if fit >= 200 else fit)
    if iters < min(most, PROBE_ITERS):
        raise SystemExit(f'--time-budget: {seconds:.0f} s left fit {max(fit, 0)} iterations at '
                         f'{per_iteration:.3f} s each ({overhead:.0f} s of set-up); '
                         'give it more time')
    return iters, per_iteration


def network_points(runner, device: str):
    """{(session, frame): (N, 3) predicted keypoints (rig units)} on the held-out
    blocks, and images/s."""
    import torch
    from smilfit.engine.hooks import unwrap_model
    model = unwrap_model(runner.model).to(device).eval()
    points, n, start = {}, 0, time.perf_counter()
    with torch.no_grad():
        for batch in runner.val_dataloader:
            data = model.data_preprocessor(batch, False)
            for p in model(data['inputs'], data['data_samples'], mode='predict'):
                points[(p['session'], int(p['frame']))] = p['pred_keypoints_3d'].numpy()
                n += 1
    seconds = time.perf_counter() - start
    return points, n * model.num_views / seconds


def held_out_frames(crops: Path, split_seed: int = 0):
    """The held-out frames' keys, the training frames' keys, the held-out blocks and the
    training rows of the time split that ``split_seed`` chooses (as the network config's
    datasets with that ``seed``)."""
    from smilfit.datasets import MultiViewHDF5Dataset
    cfg_split = dict(split_by='time', split_ratios=(0.8, 0.2, 0.0), time_blocks=TIME_BLOCKS,
                     time_gap=2, seed=split_seed)
    val = MultiViewHDF5Dataset(str(crops), split='val', load_images=False, **cfg_split)
    train = MultiViewHDF5Dataset(str(crops), split='train', load_images=False, **cfg_split)

    def keys(ds):
        return {(ds.reader.session_names[ds.get_data_info(i)['session_index']],
                 ds.get_data_info(i)['frame']) for i in range(len(ds))}
    train_rows = [int(train.get_data_info(i)['index']) for i in range(len(train))]
    return keys(val), keys(train), val.metainfo['split_frames']['val'], train_rows


def render(out: Path, crops: Path, results: Path, train_rows, num_samples: int,
           workers: int = 1, split_seed: int = 0) -> Path:
    """Rendered samples of the fitted animal in the session's rig, drawn from the
    training blocks' fits only (``tools/render_rig.py``; the blocks of ``split_seed``'s
    split), ``workers`` at once, made when missing."""
    from mmengine.config import Config

    from smilfit.datasets.rig_renders import RigRenderOptions, generate_rig_renders
    split = f'_split{split_seed}' if split_seed else ''
    path = out / f'renders_{num_samples}{split}.h5'
    if not path.exists():
        cfg = Config.fromfile(str(NET_CONFIG))
        body_model = dict(cfg.model.body_model, model_path=str(MODEL))
        generate_rig_renders(path, dataset=crops, fit_results=results,
                             body_model=body_model, joint_lookup=str(LOOKUP),
                             rows=train_rows,
                             options=RigRenderOptions(num_samples=num_samples),
                             progress=False, workers=workers)
    return path


def fit_points(results: Path, keypoints: Path):
    """{(session, frame): (N, 3)} fitted keypoints and the fit's parameters by key."""
    import h5py

    from smilfit.datasets.hdf5_format import DatasetReader
    with h5py.File(results, 'r') as f, DatasetReader(keypoints) as reader:
        rows = f['samples/index'][:]
        cols = reader.read(rows, keys=['session', 'frame'])
        keys = [(reader.session_names[int(s)], int(fr))
                for s, fr in zip(cols['session'], cols['frame'])]
        pts = f['fitted_keypoints_3d'][:].astype(np.float64)
        params = {k: f[f'params/{k}'][:].astype(np.float64) for k in
                  ('global_orient', 'body_pose', 'transl', 'global_log_scale', 'bone_trans')}
    return {k: pts[i] for i, k in enumerate(keys)}, keys, params


def mean_pose_points(keys_train, keys_held, fit_keys, params, keypoints: Path,
                     offsets=None):
    """(e): the training fits' mean pose and size, rigidly aligned to each held-out
    frame's triangulated keypoints; with ``offsets`` (the fit's keypoint offsets in
    their joints' frames, (K', 3)) added to the model's keypoints ((e'))."""
    import torch

    from smilfit.body_models import SMILModel
    from smilfit.body_models.keypoint_naming import match_keypoints
    from smilfit.body_models.joint_lookup import joint_lookup_dict
    from smilfit.datasets.hdf5_format import DatasetReader
    from smilfit.registrants.initialization import (global_pose_from_points,
                                                    triangulate_observations)
    from smilfit.body_models.keypoint_naming import rotate_offsets, source_carriers
    model = SMILModel(model_path=str(MODEL), propagate_scaling=False, reference_compat=False,
                      dtype=torch.float64)
    carriers = source_carriers(model, 'keypoints')

    def keypoints_of(out):
        if offsets is None:
            return out.keypoints
        return out.keypoints + rotate_offsets(torch.as_tensor(offsets)[None],
                                              out.joint_transforms, carriers)
    index = {k: i for i, k in enumerate(fit_keys)}
    train_rows = [index[k] for k in keys_train if k in index]
    mean_pose = torch.as_tensor(params['body_pose'][train_rows].mean(0))[None]
    scale = float(np.median(params['global_log_scale'][train_rows]))
    # the animal's fitted skeleton (its keypoint offsets are the keypoint handler's, not
    # the body model's: the baseline's keypoints are the model's own)
    shared = dict(bone_trans=torch.as_tensor(params['bone_trans'][train_rows[0]])[None])
    with DatasetReader(keypoints) as reader:
        names = list(reader.keypoint_names)
        match = match_keypoints(list(model.keypoint_names), names,
                                joint_lookup_dict(str(LOOKUP)))
        out = {}
        held_rows = [index[k] for k in keys_held if k in index]
        rows = np.asarray(sorted(held_rows))
        data = reader.read(np.asarray(params_rows(rows, fit_keys, reader)),
                           keys=['keypoints_2d', 'K', 'R', 't', 'dist', 'valid', 'visible',
                                 'confidence'])
    obs = {k: torch.as_tensor(np.asarray(v), dtype=torch.float64 if np.asarray(v).dtype.kind
                              == 'f' else None) for k, v in data.items() if k != 'valid'}
    obs['view_valid'] = torch.as_tensor(np.asarray(data['valid'])).bool()
    tri = triangulate_observations(obs)                                   # (b, N, 3)
    with torch.no_grad():
        posed = model(body_pose=mean_pose, global_log_scale=torch.tensor([[scale]]),
                      return_vertices=False, **shared)
    pts = torch.full((1, len(names), 3), float('nan'), dtype=torch.float64)
    pts[:, match.data_index] = keypoints_of(posed)[:, match.model_index]
    root = posed.joints_kin[:, model.levels.root]
    for b, row in enumerate(rows):
        observed = tri[b:b + 1]
        ok = torch.isfinite(observed).all(-1) & torch.isfinite(pts).all(-1)
        if int(ok.sum()) < 3:
            continue
        src = torch.where(ok[..., None], pts, torch.zeros_like(pts))
        dst = torch.where(ok[..., None], observed, torch.zeros_like(observed))
        orient, transl = global_pose_from_points(src[:, ok[0]], root, dst[:, ok[0]])[:2]
        with torch.no_grad():
            moved = model(body_pose=mean_pose, global_orient=orient, transl=transl,
                          global_log_scale=torch.tensor([[scale]]), return_vertices=False,
                          **shared)
        p = np.full((len(names), 3), np.nan)
        p[match.data_index.numpy()] = keypoints_of(moved)[0, match.model_index].numpy()
        out[fit_keys[row]] = p
    return out


def fit_offsets(results: Path, fit_keys, keys) -> np.ndarray:
    """(S, K', 3) the fit's keypoint offsets (joint frames, model units) of the samples
    ``keys``."""
    import h5py
    index = {k: i for i, k in enumerate(fit_keys)}
    with h5py.File(results, 'r') as f:
        offsets = f['params/keypoint_offsets'][:].astype(np.float64)
    return offsets[sorted(index[k] for k in keys if k in index)]


def params_rows(fit_rows, fit_keys, reader):
    """Dataset rows of the fit samples ``fit_rows`` (the fit's order is the file's)."""
    cols = reader.read(np.arange(len(reader)), keys=['session', 'frame'])
    where = {(reader.session_names[int(s)], int(f)): r
             for r, (s, f) in enumerate(zip(cols['session'], cols['frame']))}
    return [where[fit_keys[r]] for r in fit_rows]


def score(points, keypoints: Path, keys):
    """Median and 90th percentile px of ``points`` {key: (N, 3)} projected into every
    camera against the labels, over the scored cameras (``scored``), the ones apart
    (``apart``) and each camera alone (``cameras``: {name: (median, p90)})."""
    from smilfit.cameras.projection import project_points_numpy
    from smilfit.datasets.hdf5_format import DatasetReader
    errors = {'scored': [], 'apart': []}
    per_camera = {}
    with DatasetReader(keypoints) as reader:
        cols = reader.read(np.arange(len(reader)), keys=['session', 'frame'])
        where = {(reader.session_names[int(s)], int(f)): r
                 for r, (s, f) in enumerate(zip(cols['session'], cols['frame']))}
        rows = [where[k] for k in keys if k in points]
        data = reader.read(np.asarray(sorted(rows)),
                           keys=['keypoints_2d', 'K', 'R', 't', 'dist', 'valid', 'session'])
        back = {r: k for k, r in where.items()}
        for b, row in enumerate(sorted(rows)):
            cams = reader.camera_names[int(data['session'][b])]
            pts = points[back[row]]
            for c, name in enumerate(cams):
                if not data['valid'][b, c]:
                    continue
                uv = project_points_numpy(np.nan_to_num(pts)[None], data['K'][b, c][None],
                                          data['R'][b, c][None], data['t'][b, c][None],
                                          data['dist'][b, c][None])[0][0]
                e = np.linalg.norm(uv - data['keypoints_2d'][b, c], axis=-1)
                e = e[np.isfinite(e) & np.isfinite(pts).all(-1)]
                errors['apart' if name in APART else 'scored'].append(e)
                per_camera.setdefault(name, []).append(e)

    def summary(es):
        e = np.concatenate(es) if es else np.zeros(0)
        return (float(np.median(e)), float(np.percentile(e, 90))) if e.size else \
            (float('nan'), float('nan'))
    out = {part: summary(es) for part, es in errors.items()}
    out['cameras'] = {name: summary(es) for name, es in per_camera.items()}
    return out


def network_predictions(out: Path, crops: Path, checkpoint: Path) -> Path:
    """``tools/infer.py`` of ``checkpoint`` on every frame (made when missing; one file
    per network, so that another recipe's or iteration count's network is not read for
    this one's)."""
    from smilfit.cli.infer import main as infer
    predictions = out / 'infer' / checkpoint.parent.name / checkpoint.stem / 'predictions.h5'
    if not predictions.exists():
        assert infer([str(checkpoint), str(crops), '--out-dir', str(predictions.parent),
                      '--video', 'none', '--no-slp', '--no-progress', '--overwrite']) == 0
    return predictions
