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
import contextlib
import functools
import sys
import time
from pathlib import Path
from typing import NamedTuple
from unittest import mock

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


class PerFrameFit(NamedTuple):
    """One :func:`per_frame_fit`: its results, seconds end to end (reading the data and
    writing the results too) and fitting alone (:func:`fitting_clock`), LM iterations (the
    batches', each its slowest frame's), LM iterations per frame (each frame's own, the
    mean) and the frames started from the network."""
    path: Path
    seconds: float
    fit_seconds: float
    steps: int
    per_frame: float
    won: int


@contextlib.contextmanager
def fitting_clock():
    """Inside it, the seconds spent fitting: every batch's ``SMILRegistrant.fit`` and,
    from a network's predictions, choosing each frame's start (the comparison of the two
    starts is part of fitting from a network). Yields a one-item list that adds them up.
    The rest of a dataset fit (reading the data, writing the results) is the same for
    every start, so a share of fitting alone says what the start changes."""
    from smilfit.apis.fitting import dataset_fit
    from smilfit.registrants.registrant import SMILRegistrant
    spent = [0.0]

    def timed(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return wrapper
    with mock.patch.object(SMILRegistrant, 'fit', timed(SMILRegistrant.fit)), \
            mock.patch.object(dataset_fit, '_network_starts',
                              timed(dataset_fit._network_starts)):
        yield spent


def per_frame_fit(work: Path, keypoints: Path, results: Path, init=None,
                  last_stage_iters=None, exclude_views=None, device: str = 'cpu'
                  ) -> PerFrameFit:
    """The per-frame fit of every frame with the animal's skeleton of ``results`` held
    fixed, from the default start or from predictions ``init``, the config's last stage
    capped at ``last_stage_iters`` iterations where given, without the cameras
    ``exclude_views`` where given, on ``device``."""
    import json

    import h5py
    from mmengine.config import Config

    from smilfit.apis.fitting import fit_dataset
    cfg = Config.fromfile(str(FIT_CONFIG))
    cfg.body_model.model_path = str(MODEL)
    cfg.data.pop('sleap')
    cfg.data.update(path=str(keypoints), joint_lookup=str(LOOKUP),
                    skeleton=dict(path=str(results), animal=0, mode='fixed'))
    if init is not None:
        cfg.data.init_from = str(init)
    if exclude_views:
        cfg.data.exclude_views = list(exclude_views)
    if last_stage_iters is not None:
        cfg.registrant.stages[-1]['n_iter'] = int(last_stage_iters)
    with fitting_clock() as fitting:
        start = time.perf_counter()
        path = fit_dataset(cfg, work, progress=False, overwrite=True, device=device)
        seconds = time.perf_counter() - start
    with h5py.File(path, 'r') as f:
        history = json.loads(f.attrs['loss_history'])
        frames = len(f['samples/index'])
        won = int(f['samples/network_start'][:].sum()) if 'samples/network_start' in f \
            else 0
    steps = sum(r['steps'] for r in history)
    per_frame = sum(r.get('unit_steps', 0) for r in history) / frames
    return PerFrameFit(path, seconds, fitting[0], steps, per_frame, won)


def fits_from_network(out: Path, crops: Path, keypoints: Path, results: Path,
                      checkpoint: Path, held, repeats: int = 7, device: str = 'cpu') -> list:
    """The per-frame fit of every frame from the default start and from the network's
    predictions (``data.init_from``; those frames skip the config's coarse stages), the
    animal's skeleton taken from the first fit (held fixed, so only the per-frame pass
    is timed): rows of (start, LM iterations, LM iterations per frame, median seconds end
    to end and fitting alone over ``repeats`` alternating runs, held-out frames' median
    and p90 px, frames started from the network), the fits on ``device``."""
    predictions = network_predictions(out, crops, checkpoint)
    starts = (('default start', None), ('network start', predictions))
    fitted, seconds = alternating_fits(
        {label: (out / f'fit_{label.split()[0]}', init) for label, init in starts},
        keypoints, results, repeats, device=device)
    rows = []
    for label, _ in starts:
        fit = fitted[label]
        points, _, _ = fit_points(fit.path, keypoints)
        rows.append((label, fit.steps, fit.per_frame, seconds[label],
                     score(points, keypoints, held)['scored'], fit.won))
    return rows


#: Camera subsets the fits from the network are measured on besides all four (nothing was
#: tuned on them): the cameras each leaves out.
LEFT_OUT = (('side',), ('back',), ('back', 'side'), ('mid', 'side'))


def fits_from_network_by_cameras(out: Path, crops: Path, keypoints: Path, results: Path,
                                 checkpoint: Path, held, left_out=LEFT_OUT,
                                 repeats: int = 5) -> list:
    """:func:`fits_from_network` with cameras left out of the fit (``left_out``): rows of
    (cameras left out, the network start's shares of the default start's batch LM
    iterations, LM iterations per frame and seconds fitting alone (medians of
    ``repeats`` alternating runs), frames started from the network, the held-out median
    and p90 px from the default start and from the network's). Scored in the same
    cameras as every table (the ones left out included)."""
    predictions = network_predictions(out, crops, checkpoint)
    rows = []
    for views in left_out:
        starts = {'default': (out / 'fit_cameras_default', None),
                  'network': (out / 'fit_cameras_network', predictions)}
        fitted, seconds = alternating_fits(starts, keypoints, results, repeats, views)
        d, n = fitted['default'], fitted['network']
        scores = [score(fit_points(f.path, keypoints)[0], keypoints, held)['scored']
                  for f in (d, n)]
        rows.append((views, n.steps / d.steps, n.per_frame / d.per_frame,
                     seconds['network'][1] / seconds['default'][1], n.won, *scores))
    return rows


def alternating_fits(starts: dict, keypoints: Path, results: Path, repeats: int,
                     exclude_views=None, device: str = 'cpu'):
    """:func:`per_frame_fit` of every ``{label: (work dir, init[, last stage cap])}`` of
    ``starts`` (without the cameras ``exclude_views``, on ``device``), in turn ``repeats``
    times (alternating, so that all see the same machine load):
    ``({label: the last run's PerFrameFit}, {label: (median seconds end to end, median
    seconds fitting alone)})``."""
    seconds = {label: [] for label in starts}
    fitted = {}
    for _ in range(repeats):
        for label, (work, init, *cap) in starts.items():
            fitted[label] = per_frame_fit(work, keypoints, results, init, *cap,
                                          exclude_views=exclude_views, device=device)
            seconds[label].append((fitted[label].seconds, fitted[label].fit_seconds))
    return fitted, {label: tuple(float(m) for m in np.median(s, axis=0))
                    for label, s in seconds.items()}


def last_stage_iterations() -> int:
    """The most LM iterations the fit config's last stage runs (its ``n_iter``)."""
    from mmengine.config import Config
    return int(Config.fromfile(str(FIT_CONFIG)).registrant.stages[-1]['n_iter'])


def fits_along_the_way(out: Path, crops: Path, keypoints: Path, results: Path,
                       checkpoint: Path, held, caps=None, device: str = 'cpu') -> list:
    """Where on its way each start reaches its held-out error: the fits of
    :func:`fits_from_network` with the config's last stage capped at each of ``caps``
    iterations (one run each; the uncapped fit is :func:`fits_from_network`'s): rows of
    (start, cap, LM iterations, seconds, held-out median and p90 px).

    By default every cap from 1 up, so that the first cap reaching an error is the
    iteration that reaches it, until a cap adds no iteration (the stage had stopped on
    its own: every larger cap is the same fit) or the stage's own ``n_iter``."""
    predictions = network_predictions(out, crops, checkpoint)
    every = caps is None
    caps = range(1, last_stage_iterations() + 1) if every else caps
    rows = []
    for label, init in (('default start', None), ('network start', predictions)):
        before = None
        for cap in caps:
            fit = per_frame_fit(out / 'fit_capped', keypoints, results, init, cap,
                                device=device)
            if every and fit.steps == before:
                break
            before = fit.steps
            points, _, _ = fit_points(fit.path, keypoints)
            rows.append((label, cap, fit.steps, fit.seconds,
                         score(points, keypoints, held)['scored']))
    return rows


#: "The same held-out error" (median, p90 px): to the precision the tables give them.
SAME_ERROR_PX = (0.01, 0.1)


def reaches(error, target, tolerance=SAME_ERROR_PX) -> bool:
    """Whether the held-out ``error`` (median, p90 px) is the ``target``'s or better to
    within ``tolerance``: both figures at most the target's plus the tolerance."""
    return all(e <= t + tol for e, t, tol in zip(error, target, tolerance))


def first_cap_reaching(along: list, label: str, target, tolerance=SAME_ERROR_PX):
    """The smallest last-stage cap at which start ``label``'s fit of
    :func:`fits_along_the_way`'s rows ``along`` :func:`reaches` the held-out error
    ``target`` (median, p90 px). ``None`` where no cap does (the uncapped fit, as
    shipped, is then the one to time)."""
    reached = [cap for start, cap, _, _, error in along
               if start == label and reaches(error, target, tolerance)]
    return min(reached) if reached else None


def time_to_error(out: Path, crops: Path, keypoints: Path, results: Path, checkpoint: Path,
                  held, along: list, target, repeats: int = 7, device: str = 'cpu') -> list:
    """How soon each start reaches the default start's held-out error ``target`` (its
    uncapped fit's median and p90 px): each start's fit with the config's last stage
    capped at :func:`first_cap_reaching` (uncapped where no cap reaches it), timed over
    ``repeats`` alternating runs on ``device``. A capped fit is the shipped one stopped
    early, so its seconds are when the shipped fit had reached that error (an upper
    bound where ``along``'s caps skip iterations: the cap is the first of those that
    reaches it). Rows of (start, cap, LM iterations, per frame, (median seconds end to
    end, fitting alone), held-out median and p90 px)."""
    predictions = network_predictions(out, crops, checkpoint)
    starts = {label: (out / f'fit_reach_{label.split()[0]}', init,
                      first_cap_reaching(along, label, target))
              for label, init in (('default start', None), ('network start', predictions))}
    fitted, seconds = alternating_fits(starts, keypoints, results, repeats, device=device)
    rows = []
    for label, (_, _, cap) in starts.items():
        fit = fitted[label]
        points, _, _ = fit_points(fit.path, keypoints)
        rows.append((label, cap, fit.steps, fit.per_frame, seconds[label],
                     score(points, keypoints, held)['scored']))
    return rows


def print_fits_along_the_way(rows: list) -> None:
    """The table of :func:`fits_along_the_way`'s ``rows``."""
    print('\nThe same fits with their last stage capped (one run each; every cap until the '
          'stage stops on its own): where each start reaches its held-out error')
    print(f'{"start":<16}{"last stage cap":>15}{"LM iterations":>15}{"seconds":>9}'
          f'{"median px":>11}{"p90 px":>8}')
    for label, cap, steps, seconds, (median, p90) in rows:
        print(f'{label:<16}{cap:>15}{steps:>15}{seconds:>9.2f}{median:>11.2f}{p90:>8.2f}')


def print_time_to_error(rows: list, target, repeats: int) -> None:
    """The table of :func:`time_to_error`'s ``rows`` and the network start's shares."""
    print(f'\nHow soon each start reaches the default start\'s held-out error (its uncapped '
          f'fit\'s {target[0]:.2f} / {target[1]:.2f} px, to {SAME_ERROR_PX[0]} / '
          f'{SAME_ERROR_PX[1]} px): the fit stopped at the first last-stage cap that reaches '
          f'it ("none": the uncapped fit), medians of {repeats} alternating runs')
    print(f'{"start":<16}{"last stage cap":>15}{"LM iterations":>15}{"per frame":>11}'
          f'{"seconds":>9}{"fitting s":>11}{"median px":>11}{"p90 px":>8}')
    for label, cap, steps, per_frame, (seconds, fitting), (median, p90) in rows:
        print(f'{label:<16}{"none" if cap is None else cap:>15}{steps:>15}{per_frame:>11.1f}'
              f'{seconds:>9.2f}{fitting:>11.2f}{median:>11.2f}{p90:>8.2f}')
    batch, per_frame, seconds, fitting = (share for _, share in network_shares(rows))
    print(f'{"network/default":<16}{"":>15}{batch:>15.0%}{per_frame:>11.0%}{seconds:>9.0%}'
          f'{fitting:>11.0%}')
    for label, _, _, _, _, error in rows:
        if not reaches(error, target):
            print(f'{label} never reaches it: not with any cap, nor its whole fit (the '
                  f'shares above are of its whole fit)')
    print(half_the_work(rows, target))


def network_shares(rows: list) -> tuple:
    """The network start's shares of the default start's work in :func:`time_to_error`'s
    ``rows``: ((what, share), ...) for the batch's LM iterations, per frame, seconds end
    to end and fitting alone."""
    (_, _, steps, per_frame, seconds, _), (_, _, n_steps, n_per_frame, n_seconds, _) = rows
    return (('LM iterations of the batch', n_steps / steps),
            ('per frame', n_per_frame / per_frame),
            ('time end to end', n_seconds[0] / seconds[0]),
            ('fitting alone', n_seconds[1] / seconds[1]))


def half_the_work(rows: list, target) -> str:
    """Whether the network start of :func:`time_to_error`'s ``rows`` reaches the default
    start's held-out error ``target`` in at most half its LM iterations (the batch's and
    per frame) and time (end to end and fitting alone)."""
    if not reaches(rows[1][-1], target):
        return 'At most half the default start\'s work to its error: NO (never reaches it)'
    return 'At most half the default start\'s work to its error: ' + ', '.join(
        f'{what} {_yes(share <= 0.5)} ({share:.0%})' for what, share in network_shares(rows))


def print_how_soon(out: Path, crops: Path, keypoints: Path, results: Path, checkpoint: Path,
                   held, target, repeats: int, device: str = 'cpu') -> None:
    """The fits from the two starts capped along the way (:func:`fits_along_the_way`),
    then how soon each reaches the default start's held-out error ``target``
    (:func:`time_to_error`, ``repeats`` alternating runs), on ``device``, both printed."""
    along = fits_along_the_way(out, crops, keypoints, results, checkpoint, held,
                               device=device)
    print_fits_along_the_way(along)
    print_time_to_error(time_to_error(out, crops, keypoints, results, checkpoint, held, along,
                                      target, repeats, device), target, repeats)


def frame_rows(wanted, held, what: str) -> list:
    """The row of ``held`` (frame numbers) holding each of ``wanted``'s frames; a
    ValueError naming ``what`` where a frame is missing there or either side repeats one
    (one animal of one session is what the benchmark fits)."""
    wanted, held = [int(f) for f in wanted], [int(f) for f in held]
    if len(set(wanted)) != len(wanted) or len(set(held)) != len(held):
        raise ValueError(f'{what}: a frame appears twice (more than one animal or session)')
    where = {f: r for r, f in enumerate(held)}
    missing = sorted(set(wanted) - set(where))
    if missing:
        raise ValueError(f'{what}: frames {missing[:5]} are missing')
    return [where[f] for f in wanted]


def closer_starts(predictions: Path, results: Path, fraction: float, out: Path) -> Path:
    """``out``: a copy of ``predictions`` (``tools/infer.py``'s) whose per-frame start
    parameters and 3D keypoints lie ``fraction`` of the way from the fit's answer
    (``results``, its rows matched by frame; one session) to the network's: 1 is the
    network's own start, 0 the fit's converged one. What a better network would give,
    along the way this one errs."""
    import shutil

    import h5py

    from smilfit.apis.fitting.network_starts import START_PARAMS, predicted_keypoint_names
    with h5py.File(results, 'r') as f:
        frames = f['samples/frame'][:]
        fitted = {k: f[f'params/{k}'][:].astype(np.float64) for k in START_PARAMS}
        fitted_points = f['fitted_keypoints_3d'][:].astype(np.float64)
        data_names = [n.decode() if isinstance(n, bytes) else str(n)
                      for n in f['data_keypoint_names'][:]]
    with h5py.File(predictions, 'r') as f:
        rows = frame_rows(f['frame'][:], frames, f'{predictions} against the fit {results}')
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(predictions, out)
    with h5py.File(out, 'r+') as f:
        for name in (n for n in START_PARAMS if f'params/{n}' in f):
            net = f[f'params/{name}'][:].astype(np.float64)
            fit = fitted[name][rows]
            f[f'params/{name}'][...] = fit + fraction * (net - fit)
        names = predicted_keypoint_names(f, out)
        if names is not None:
            net = f['keypoints_3d'][:].astype(np.float64)
            fit = np.full_like(net, np.nan)
            for j, name in enumerate(names):
                if name in data_names:
                    fit[:, j] = fitted_points[rows, data_names.index(name)]
            f['keypoints_3d'][...] = np.where(np.isfinite(fit), fit + fraction * (net - fit),
                                              net)
    return out


@contextlib.contextmanager
def start_recorder():
    """Inside it, every fit records where its samples start. Yields a list that gets one
    (B, K, 3) array per run of a registrant's stages: the data's K keypoints (world units;
    NaN where no model point matches) posed by the parameters the stages start from (the
    start a fit chose, with the animal's skeleton and keypoint offsets), as its keypoint
    handler places them. A dataset fit's skeleton estimate runs stages too: record a
    per-frame pass with the skeleton held fixed (:func:`per_frame_fit`), one process, and
    the arrays are its batches in the order of its results."""
    import torch

    from smilfit.body_models.parameters import MODEL_INPUTS
    from smilfit.registrants.registrant import SMILRegistrant
    batches = []
    original = SMILRegistrant._run_stages

    @functools.wraps(original)
    def run_stages(self, stages, params, obs, groups, *args, **kwargs):
        handler = self.keypoint_handler()
        expanded = self._expand(params, self.shared, groups)
        with torch.no_grad():
            posed = self.body_model(**{k: v for k, v in expanded.items() if k in MODEL_INPUTS},
                                    return_vertices=False)
            matched = handler.matched_points(posed, expanded)
        points = torch.full(obs['keypoints_2d'].shape[:1] + obs['keypoints_2d'].shape[2:3]
                            + (3,), float('nan'), dtype=matched.dtype)
        points[:, handler.data_index.cpu()] = matched.cpu()
        batches.append(points.numpy())
        return original(self, stages, params, obs, groups, *args, **kwargs)
    with mock.patch.object(SMILRegistrant, '_run_stages', run_stages):
        yield batches


def fit_start_points(work: Path, keypoints: Path, results: Path, init) -> dict:
    """{(session, frame): (K, 3)} where :func:`per_frame_fit` from ``init`` starts each
    frame (:func:`start_recorder`)."""
    with start_recorder() as batches:
        fit = per_frame_fit(work, keypoints, results, init)
    _, keys, _ = fit_points(fit.path, keypoints)
    points = np.concatenate(batches)
    return {k: points[i] for i, k in enumerate(keys)}


def fits_from_closer_starts(out: Path, crops: Path, keypoints: Path, results: Path,
                            checkpoint: Path, held,
                            fractions=(3.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.0),
                            repeats: int = 5) -> list:
    """The fits of :func:`fits_from_network` from starts closer to the answer than the
    network's, and farther (:func:`closer_starts`, ``fractions`` of its distance from the
    fit's: above 1, a worse network along the way this one errs),
    each timed against the default start (medians of ``repeats`` alternating runs): rows
    of (fraction, the start's held-out median and p90 px, LM iterations per frame and
    its share of the default start's, the batches' LM iterations (each its slowest
    frame's) and their share, the share of its seconds end to end and fitting alone, the
    fit's held-out median and p90 px). Says whether a better network would halve the
    fit's time."""
    predictions = network_predictions(out, crops, checkpoint)
    starts = [('default', None)] + [
        (f, closer_starts(predictions, results, f, out / 'closer' / f'predictions_{f}.h5'))
        for f in fractions]
    fitted, seconds = alternating_fits(
        {label: (out / 'closer' / f'fit_{label}', init) for label, init in starts},
        keypoints, results, repeats)
    default = fitted['default']
    rows = []
    for label, init in starts[1:]:
        fit = fitted[label]
        start = score(fit_start_points(out / 'closer' / 'start', keypoints, results, init),
                      keypoints, held)
        end = score(fit_points(fit.path, keypoints)[0], keypoints, held)
        rows.append((label, start['scored'], fit.per_frame,
                     fit.per_frame / default.per_frame, fit.steps,
                     fit.steps / default.steps, seconds[label][0] / seconds['default'][0],
                     seconds[label][1] / seconds['default'][1], end['scored']))
    return rows


def fit_in_the_loop(out: Path, crops: Path, keypoints: Path, results: Path,
                    checkpoint: Path, iters: int, device: str, held) -> list:
    """Network (b) trained ``iters`` more iterations two ways, from its weights: on the
    default-start fit it trained on (the control: the same compute without the loop),
    and in one fit-in-the-loop round (``tools/fit_in_the_loop.py``: every frame fitted
    from (b)'s predictions, those fits as the labels). Rows of (label, held-out score,
    frames started from the network, LM iterations of the round's fit)."""
    rows = []
    runner, _ = train(crops, out / f'net_fit_labels_continued_{iters}', iters, device,
                      results, start_from=checkpoint)
    pts, _ = network_points(runner, device)
    rows.append(('(b) + iterations on the default-start fit', score(pts, keypoints, held),
                 '', ''))
    pts, row = loop_round(crops, checkpoint, out / f'loop_{iters}', iters, device)
    rows.append(('(b) + one fit-in-the-loop round', score(pts, keypoints, held),
                 row['network_starts'], row['lm_iterations']))
    return rows


def loop_round(crops: Path, checkpoint: Path, loop: Path, iters: int, device: str,
               seed: int = 0):
    """One ``tools/fit_in_the_loop.py`` round of ``iters`` iterations from ``checkpoint``
    in ``loop`` (resumed when there; made again where ``loop`` holds a round of another
    checkpoint or configs, e.g. of an older checkout): its network's held-out points and
    its report row."""
    from mmengine.config import Config

    from smilfit.apis.fit_in_the_loop import run_fit_in_the_loop
    fit_cfg = Config.fromfile(str(FIT_CONFIG))
    fit_cfg.body_model.model_path = str(MODEL)
    fit_cfg.data.joint_lookup = str(LOOKUP)

    def run(**fresh):
        return run_fit_in_the_loop(net_config(crops, loop, iters, device, None, seed=seed),
                                   fit_cfg, checkpoint, loop, rounds=1, progress=False,
                                   device=device, **fresh)
    try:
        report = run(resume=True)
    except FileExistsError as error:
        print(f'{error}: made again', flush=True)
        report = run(overwrite=True)
    row = report['rounds'][0]
    runner, _ = train(crops, Path(row['checkpoint']).parent, iters, device, row['fit'])
    return network_points(runner, device)[0], row


def half_labelled_fit(out: Path, results: Path, trained_on) -> Path:
    """The fit with every other training block's frames marked failed (so that no
    network trains on them): those frames stand for frames nobody labelled."""
    import shutil

    import h5py
    half = out / 'fit_half' / 'fit_results.h5'
    if half.exists():
        return half
    half.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(results, half)
    with h5py.File(half, 'r+') as f:
        frames = f['samples/frame'][:]
        length = -(-(int(frames.max()) + 1) // TIME_BLOCKS)
        blocks = sorted({frame // length for _, frame in trained_on})
        unlabelled = np.isin(frames // length, blocks[1::2])
        f['metrics/diverged'][...] = f['metrics/diverged'][:] | unlabelled
    return half


def fit_in_the_loop_unlabelled(out: Path, crops: Path, keypoints: Path, results: Path,
                               trained_on, iters: int, loop_iters: int, device: str,
                               held, seeds=(0,)) -> list:
    """Frames without labels: network A trained ``iters`` iterations on the fits of
    every other training block only, then ``loop_iters`` more two ways, once per training
    seed of those iterations: on the same blocks (the control), and in one
    fit-in-the-loop round over every frame (the other blocks' 2D labels standing for a
    SLEAP model's predictions). Rows as :func:`fit_in_the_loop`."""
    half = half_labelled_fit(out, results, trained_on)
    runner, _ = train(crops, out / f'net_half_{iters}', iters, device, half)
    start = out / f'net_half_{iters}' / f'iter_{iters}.pth'
    pts, _ = network_points(runner, device)
    rows = [('A: half the training blocks labelled', score(pts, keypoints, held), '', '')]
    for seed in seeds:
        tag = f'_seed{seed}' if seed else ''
        runner, _ = train(crops, out / f'net_half_continued_{loop_iters}{tag}', loop_iters,
                          device, half, start_from=start, seed=seed)
        pts, _ = network_points(runner, device)
        rows.append((f'A + iterations on the labelled half, seed {seed}',
                     score(pts, keypoints, held), '', ''))
        pts, row = loop_round(crops, start, out / f'loop_half_{loop_iters}{tag}',
                              loop_iters, device, seed)
        rows.append((f'A + one fit-in-the-loop round, seed {seed}',
                     score(pts, keypoints, held), row['network_starts'],
                     row['lm_iterations']))
    return rows


def baseline_rows(results: Path, trained_on, held, fit_keys, params, keypoints: Path) -> list:
    """The rows of (e), the fits' mean training pose at each held-out frame's
    triangulated keypoints, and (e'), the same with the fit's keypoint offsets."""
    mean = mean_pose_points(trained_on, held, fit_keys, params, keypoints)
    rows = [('(e) mean training pose at the triangulated keypoints',
             score(mean, keypoints, held), '', '')]
    offsets = np.median(fit_offsets(results, fit_keys, trained_on), axis=0)
    mean = mean_pose_points(trained_on, held, fit_keys, params, keypoints, offsets)
    rows.append(("(e') the same with the fit's keypoint offsets",
                 score(mean, keypoints, held), '', ''))
    return rows


def print_table(rows, blocks, held, args, config: Path, training: str) -> None:
    """The held-out table: per method the median and p90 px in the scored cameras and
    in ``side``, training seconds and inference images/s; ``training`` says how long the
    networks trained."""
    print(f'held-out frames: {sorted(blocks.items())} ({len(held)} frames); {config.name}, '
          f'{args.crop_size} px crops, {training}, {args.device}'
          f'{" bf16" if args.amp else ""}, {args.threads} threads')
    print(f'{"method":<52}{"median px":>10}{"p90 px":>9}{"side med":>10}{"side p90":>10}'
          f'{"train s":>9}{"img/s":>7}')
    for label, s, seconds, ips in rows:
        if s is None:
            print(f'{label:<52}{"not built":>10}')
            continue
        print(f'{label:<52}{s["scored"][0]:>10.2f}{s["scored"][1]:>9.2f}'
              f'{s["apart"][0]:>10.2f}{s["apart"][1]:>10.2f}{seconds:>9}{ips:>7}')
    print_against_targets(rows)


def _yes(met: bool) -> str:
    return 'yes' if met else 'NO'


def against_targets(b, c, e=None) -> str:
    """Whether network (c) meets its targets, the held-out errors (median, p90 px) of
    (b), (c) and, given, (e): at most half of (e)'s error and below (b)'s, each figure
    on its own."""
    parts = []
    if e is not None:
        parts.append('(c) at most half of (e): ' + ', '.join(
            f'{what} {_yes(cv <= ev / 2)} ({cv / ev:.0%})'
            for what, cv, ev in zip(('median', 'p90'), c, e)))
    parts.append('(c) better than (b): ' + ', '.join(
        f'{what} {_yes(cv < bv)} ({cv:.2f} against {bv:.2f} px)'
        for what, cv, bv in zip(('median', 'p90'), c, b)))
    return 'Against the targets: ' + '; '.join(parts)


def print_against_targets(rows) -> None:
    """:func:`against_targets` of the held-out table's ``rows`` where they hold (b), (c)
    and (e)."""
    scored = {label.split()[0]: s['scored'] for label, s, *_ in rows if s is not None}
    if all(k in scored for k in ('(b)', '(c)', '(e)')):
        print(against_targets(scored['(b)'], scored['(c)'], scored['(e)']))


def compare_seeds(seeds, iters: int, out: Path, crops: Path, keypoints: Path,
                  results: Path, held, rendered_only: Path, fit_score: dict, device: str,
                  config: Path, amp: bool, split_seed: int, recipe: str) -> None:
    """(b) and (c) trained with every training seed of ``seeds`` (the seed of their
    ``iters`` real iterations, from the one rendered pretraining ``rendered_only``;
    seed 0 is the table's networks), scored on the held-out frames seed by seed and
    their mean, then camera by camera beside the fit's own error there (where a camera's
    labels disagree with the others', the fit is far off there too)."""
    print(f'\n(b) and (c) by the training seed of their {iters} real iterations '
          '(one rendered pretraining); error on the held-out frames, median / p90 px')
    print(f'{"seed":<6}{"(b) real only":>18}{"(c) rendered, then real":>26}')
    seeded = {'b': [], 'c': []}
    for seed in seeds:
        tag = f'_seed{seed}' if seed else ''
        for arm, work, start in (
                ('b', out / f'{recipe}net_fit_labels_{iters}{tag}', None),
                ('c', out / f'{recipe}net_rendered_then_real_{iters}{tag}',
                 rendered_only / f'iter_{iters}.pth')):
            runner, _ = train(crops, work, iters, device, results, start_from=start,
                              seed=seed, config=config, amp=amp, split_seed=split_seed)
            seeded[arm].append(score(network_points(runner, device)[0], keypoints, held))
        b, c = seeded['b'][-1]['scored'], seeded['c'][-1]['scored']
        print(f'{seed:<6}{b[0]:>10.2f} / {b[1]:<5.2f}{c[0]:>18.2f} / {c[1]:<5.2f}')
    b, c = (np.mean([s['scored'] for s in seeded[arm]], axis=0) for arm in 'bc')
    print(f'{"mean":<6}{b[0]:>10.2f} / {b[1]:<5.2f}{c[0]:>18.2f} / {c[1]:<5.2f}')
    print(against_targets(b, c).replace('targets:', 'targets (the means):'))
    ahead = [[sc['scored'][i] < sb['scored'][i] for sb, sc in zip(seeded['b'], seeded['c'])]
             for i in range(2)]
    print(f'(c) better than (b) seed by seed: median with {sum(ahead[0])} of {len(seeds)}, '
          f'p90 with {sum(ahead[1])} of {len(seeds)}')
    fit_cameras = fit_score['cameras']
    print(f'\nby scored camera, median / p90 px on the held-out frames ((b), (c): mean over '
          'the seeds)')
    print(f'{"camera":<8}{"(a) the fit":>16}{"(b) real only":>18}{"(c) rendered, then real":>26}')
    for name in SCORED:
        a = fit_cameras.get(name, (float('nan'), float('nan')))
        b, c = (np.mean([s['cameras'].get(name, (np.nan, np.nan)) for s in seeded[arm]],
                        axis=0) for arm in 'bc')
        print(f'{name:<8}{a[0]:>8.2f} / {a[1]:<6.2f}{b[0]:>10.2f} / {b[1]:<6.2f}'
              f'{c[0]:>18.2f} / {c[1]:<6.2f}')


def print_fits_from_network(rows: list, device: str, threads: int) -> None:
    """The table of :func:`fits_from_network`'s ``rows``, fitted on ``device`` (with
    ``threads`` CPU threads), and the network start's shares of the default start's
    figures."""
    print(f'\nThe fit of every frame (the skeleton held fixed) from the default start and from '
          f'network (b)\'s predictions, on {device} ({threads} CPU '
          f'thread{"s" if threads != 1 else ""}); error on the held-out '
          'frames')
    print(f'{"start":<16}{"LM iterations":>15}{"per frame":>11}{"seconds":>9}{"fitting s":>11}'
          f'{"median px":>11}{"p90 px":>8}{"network starts":>16}')
    for label, steps, per_frame, (seconds, fitting), (median, p90), won in rows:
        print(f'{label:<16}{steps:>15}{per_frame:>11.1f}{seconds:>9.2f}{fitting:>11.2f}'
              f'{median:>11.2f}{p90:>8.2f}{won:>16}')
    (_, steps, per_frame, seconds, _, _), (_, n_steps, n_per_frame, n_seconds, _, _) = rows
    print(f'{"network/default":<16}{n_steps / steps:>15.0%}{n_per_frame / per_frame:>11.0%}'
          f'{n_seconds[0] / seconds[0]:>9.0%}{n_seconds[1] / seconds[1]:>11.0%}')


def starts_only(args, out: Path, crops: Path, keypoints: Path, results: Path, held, blocks,
                config: Path, recipe: str) -> int:
    """``--starts-only``: network (b) of ``config`` on the training blocks of
    ``--split-seed`` (trained when missing; one per training seed of ``--seeds``, named
    as :func:`compare_seeds` names them), then :func:`fits_from_network`, the capped fits
    and :func:`time_to_error` on every device of ``--fit-devices`` in turn, the CPU's
    with one thread (as the CPU figures of the documentation), each device's tables
    printed as they are done; first the held-out frames (``blocks``) the errors are of."""
    import torch
    print(f'held-out frames: {sorted(blocks.items())} ({len(held)} frames); network (b): '
          f'{config.name}, {args.crop_size} px crops, {args.iters} iterations')
    for seed in args.seeds if args.seeds is not None else [0]:
        name = f'{recipe}net_fit_labels_{args.iters}' + (f'_seed{seed}' if seed else '')
        torch.set_num_threads(args.threads)
        runner, _ = train(crops, out / name, args.iters, args.device, results, seed=seed,
                          config=config, amp=args.amp, split_seed=args.split_seed)
        checkpoint = out / name / f'iter_{args.iters}.pth'
        del runner
        if args.seeds is not None:
            print(f'\nNetwork (b), training seed {seed}')
        for device in args.fit_devices:
            threads = 1 if device == 'cpu' else args.threads
            torch.set_num_threads(threads)
            rows = fits_from_network(out, crops, keypoints, results, checkpoint, held,
                                     args.fit_repeats, device)
            print_fits_from_network(rows, device, threads)
            print_how_soon(out, crops, keypoints, results, checkpoint, held, rows[0][4],
                           args.fit_repeats, device)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out-dir', default=str(ROOT / 'work_dirs' / 'real_session'))
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
    parser.add_argument('--config', default=str(NET_CONFIG),
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
    started = time.perf_counter()
    one_table = args.network_only or args.table_only
    if args.network_only + args.table_only + args.starts_only > 1:
        parser.error('--network-only, --table-only and --starts-only: choose one')
    if args.time_budget is not None and not one_table:
        parser.error('--time-budget needs --network-only or --table-only (the other methods '
                     'have no budget)')
    if not (one_table or args.starts_only) and (
            Path(args.config).resolve() != NET_CONFIG.resolve() or args.crop_size != 128
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
    if not SESSION.is_dir() or not MODEL.is_file():
        print(f'skipped: {SESSION} or {MODEL} is not available')
        return 0
    import torch
    if any(d.startswith('cuda') for d in args.fit_devices) and not torch.cuda.is_available():
        parser.error('--fit-devices cuda: this machine has no CUDA device')

    from smilfit.utils import register_all_modules
    torch.set_num_threads(args.threads)
    register_all_modules()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    crops, keypoints, results = prepare(out, args.crop_size)
    split = args.split_seed
    held, trained_on, blocks, train_rows = held_out_frames(crops, split)
    fitted, fit_keys, params = fit_points(results, keypoints)
    fit_score = score(fitted, keypoints, held)
    rows = [('(a) fit on those frames', fit_score, '', '')]
    checkpoints = []
    config = Path(args.config)
    # (another recipe's networks get work dirs of their own)
    recipe = '' if config.resolve() == NET_CONFIG.resolve() else f'{config.stem}_'
    recipe += f'split{split}_' if split else ''
    if args.starts_only:
        return starts_only(args, out, crops, keypoints, results, held, blocks, config,
                           recipe)
    arms = (('(b) network, real frames, fit as labels', results),
            ("(b') network, real frames, triangulation only", None))
    # (the renders first where a budget is shared: the trainings get what they leave)
    renders = None if args.network_only else render(out, crops, results, train_rows,
                                                    args.renders, args.threads, split)
    iters, sized = args.iters, ''
    if args.time_budget is not None:
        left = args.time_budget - (time.perf_counter() - started) - AFTER_TRAINING_S
        runs = 1 if args.network_only else 3
        iters, per_iteration = iterations_within(left, crops, out, args.device, results,
                                                 config, args.amp, args.iters, runs)
        each = ' each of three' if runs > 1 else ''
        sized = (f' (of {args.iters}: what {args.time_budget:.0f} s allowed{each}, at '
                 f'{per_iteration:.3f} s an iteration)')
    for label, fit_labels in arms[:1] if one_table else arms:
        name = recipe + ('net_fit_labels' if fit_labels is not None else 'net_triangulation')
        runner, seconds = train(crops, out / f'{name}_{iters}', iters, args.device,
                                fit_labels, config=config, amp=args.amp, split_seed=split)
        checkpoints.append(out / f'{name}_{iters}' / f'iter_{iters}.pth')
        pts, images_per_s = network_points(runner, args.device)
        rows.append((label, score(pts, keypoints, held), f'{seconds:.0f}',
                     f'{images_per_s:.0f}'))
    if args.network_only:
        rows += baseline_rows(results, trained_on, held, fit_keys, params, keypoints)
        print_table(rows, blocks, held, args, config, f'{iters} iterations{sized}')
        return 0
    rendered_only = out / f'{recipe}net_rendered_{args.renders}_{iters}'
    runner, seconds = train(crops, rendered_only, iters, args.device, renders=renders,
                            config=config, amp=args.amp, split_seed=split)
    pts, images_per_s = network_points(runner, args.device)
    rendered_row = ('(d) rendered only', score(pts, keypoints, held), f'{seconds:.0f}',
                    f'{images_per_s:.0f}')
    runner, seconds = train(crops, out / f'{recipe}net_rendered_then_real_{iters}', iters,
                            args.device, results, start_from=rendered_only / f'iter_{iters}.pth',
                            config=config, amp=args.amp, split_seed=split)
    pts, images_per_s = network_points(runner, args.device)
    rows.append(('(c) rendered pretraining, then real', score(pts, keypoints, held),
                 f'{seconds:.0f}', f'{images_per_s:.0f}'))
    rows.append(rendered_row)
    rows += baseline_rows(results, trained_on, held, fit_keys, params, keypoints)
    print_table(rows, blocks, held, args, config, f'{iters} iterations{sized}')
    seeds = args.seeds if args.seeds is not None else \
        ([] if args.table_only else list(FULL_RUN_SEEDS))
    if seeds:
        compare_seeds(seeds, iters, out, crops, keypoints, results, held, rendered_only,
                      fit_score, args.device, config, args.amp, split, recipe)
    if args.table_only:
        return 0
    from_network = fits_from_network(out, crops, keypoints, results, checkpoints[0], held)
    print_fits_from_network(from_network, 'cpu', args.threads)
    print('\nThe same fits with cameras left out (nothing was tuned on these subsets); '
          'the network start\'s shares of the default start\'s LM iterations (the '
          'batches\', per frame) and seconds fitting alone; held-out median / p90 px')
    print(f'{"left out":<14}{"batch its":>10}{"per frame":>10}{"fitting":>9}'
          f'{"network starts":>16}{"default start":>16}{"network start":>16}')
    for views, its, per_frame, fitting, won, d, n in fits_from_network_by_cameras(
            out, crops, keypoints, results, checkpoints[0], held):
        print(f'{"+".join(views):<14}{its:>10.0%}{per_frame:>10.0%}{fitting:>9.0%}{won:>16}'
              f'{d[0]:>9.2f} / {d[1]:<5.2f}{n[0]:>9.2f} / {n[1]:<5.2f}')
    print('\nThe same fits from starts closer to the answer: a fraction of the way from the '
          'fit\'s converged parameters to network (b)\'s (1: the network\'s start; 0: the '
          'answer itself; 2 and 3: a network two and three times as far off), posed with '
          'the animal\'s skeleton as the fit sees them; shares of the default start\'s LM '
          'iterations (per frame; the batches\') and seconds')
    print(f'{"fraction":<10}{"start median px":>16}{"start p90":>10}{"per frame":>11}'
          f'{"share":>7}{"batch its":>11}{"share":>7}{"time share":>12}{"fitting":>9}'
          f'{"fit median px":>15}{"fit p90":>9}')
    for fraction, start, per_frame, its, steps, steps_share, seconds, fitting, end in \
            fits_from_closer_starts(out, crops, keypoints, results, checkpoints[0], held):
        print(f'{fraction:<10}{start[0]:>16.2f}{start[1]:>10.2f}{per_frame:>11.1f}'
              f'{its:>7.0%}{steps:>11}{steps_share:>7.0%}{seconds:>12.0%}{fitting:>9.0%}'
              f'{end[0]:>15.2f}{end[1]:>9.2f}')
    print_how_soon(out, crops, keypoints, results, checkpoints[0], held, from_network[0][4], 7)
    print(f'\nNetwork (b) trained {args.loop_iters} more iterations, on the fit it trained '
          'on and in one fit-in-the-loop round; error on the held-out frames')
    print(f'{"method":<46}{"median px":>10}{"p90 px":>9}{"network starts":>16}'
          f'{"LM iterations":>15}')
    rows = fit_in_the_loop(out, crops, keypoints, results, checkpoints[0], args.loop_iters,
                           args.device, held)
    rows += fit_in_the_loop_unlabelled(out, crops, keypoints, results, trained_on, args.iters,
                                       args.loop_iters, args.device, held, args.loop_seeds)
    for label, s, starts, steps in rows:
        print(f'{label:<46}{s["scored"][0]:>10.2f}{s["scored"][1]:>9.2f}{starts:>16}'
              f'{steps:>15}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
