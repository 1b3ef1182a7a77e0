"""Fit a whole dataset with a registrant from a config: :func:`fit_dataset`, the engine
behind ``tools/fit.py``.

Everything that can be wrong with the config, the model or the data is checked before the
work dir is touched. Then batches of samples are fitted one after another (shared
round-robin between ranks under a launcher); each finished batch is written to
``<work_dir>/chunks/`` atomically, so an interrupted run resumes where it stopped
(``resume=True``). At the end the chunks are merged into ``<work_dir>/fit_results.h5``
(written to a temporary file and renamed: no half-written result looks valid).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import torch
from tqdm import tqdm

from smilfit.datasets import DatasetReader
from smilfit.datasets.hdf5.files import read_h5
from smilfit.datasets.masks import masks_from_hdf5
from smilfit.datasets.view_selection import select_views, view_mask
from smilfit.handlers import SilhouetteHandler
from smilfit.registry import REGISTRANTS
from smilfit.utils.atomic import load_npz_whole, save_npz, write_text

from ..animals import (DEFAULT_SKELETON_FRAMES, calibrated_skeletons, estimate_skeletons,
                       identify_animals, load_skeleton, skeleton_matches)
from ..distributed import barrier, setup_distributed
from .config import (AllSamplesFailedError, FittingConfigError, check_data_config,
                     dataset_identity, load_joint_lookup, registrant_config, stamp_changes)
from .observations import (_OBSERVATION_KEYS, drop_non_finite_cameras,
                           observations_from_batch, warn_bad_cameras)
from .network_starts import choose_starts, load_network_starts
from .results import RESULTS_NAME, SKELETON_NAME, batch_arrays, merge_chunks

PathLike = Union[str, os.PathLike]


def fit_dataset(cfg: Mapping[str, Any], work_dir: PathLike, *, resume: bool = False,
                overwrite: bool = False, progress: bool = True,
                device: str = 'cpu', launcher: str = 'none') -> Path:
    """Fit every sample of ``cfg.data.path`` and write ``work_dir/fit_results.h5``.

    Args:
        cfg: a config with ``body_model``, ``registrant`` (its ``body_model`` defaults to
            the top-level one) and ``data = dict(path=..., batch_size=64,
            max_samples=None, joint_lookup=None|dict|csv path, save_vertices=False,
            views=None|[camera names], exclude_views=None|[camera names],
            skeleton_frames=200, init_from=None)``; the views left out are removed from the
            observations (:mod:`smilfit.datasets.view_selection`). Parameters the
            registrant shares (``registrant.shared``, e.g. the skeleton) are estimated
            once per animal and session (:mod:`smilfit.apis.animals`) from up to
            ``skeleton_frames`` of its frames spread over the session, then held fixed
            while every frame is fitted in batches: one skeleton per animal whatever
            the batch size, never one across animals or sessions (``samples/animal``
            and ``animals/...`` in the results). ``skeleton=dict(path=
            'calibration/fit_results.h5', animal=0, mode='fixed'|'init')`` reuses an
            earlier fit's skeleton for every animal (:func:`~smilfit.apis.animals.
            load_skeleton`): held fixed, or the start of each animal's estimate.
            ``init_from='predictions.h5'`` (``tools/infer.py`` on the same recording)
            starts every frame from the network's prediction (as predicted, or its pose
            placed on the animal's skeleton where its keypoints are) where that is the
            best start (:mod:`.network_starts`; ``samples/network_start`` in the
            results); such a frame skips the stages marked ``coarse``.
        work_dir: output directory.
        resume: reuse finished batches in ``work_dir/chunks`` (same config and data).
        overwrite: replace existing results.
        progress: tqdm progress bars.
        device: torch device for fitting (``'cuda'`` becomes ``cuda:<local rank>``
            under a launcher).
        launcher: ``'none'`` (one process) or ``'pytorch'`` (torchrun) / ``'slurm'`` /
            ``'mpi'``: the batches are shared round-robin between the ranks, each writes
            its own chunks and rank 0 merges them (:mod:`smilfit.apis.distributed`).

    Returns:
        The path of the results file.
    """
    data_cfg = check_data_config(cfg.get('data'))
    rank, world, device = setup_distributed(launcher, device)
    progress = progress and rank == 0
    reg_cfg = registrant_config(cfg, progress)
    # Everything that can be wrong with the config, the model or the data fails here,
    # before the work dir is touched: a failed start leaves nothing to clean up.
    if not Path(data_cfg['path']).is_file():
        raise FileNotFoundError(f"data.path {data_cfg['path']} does not exist")
    registrant = REGISTRANTS.build(reg_cfg)
    registrant.body_model.to(device)
    reader = DatasetReader(data_cfg['path'])
    registrant.setup(dict(keypoint_names=list(reader.keypoint_names),
                          joint_lookup=load_joint_lookup(data_cfg.get('joint_lookup'))))
    keep_views = view_mask(reader.camera_names, reader.num_views, data_cfg.get('views'),
                           data_cfg.get('exclude_views'), session_names=reader.session_names)
    shared = sorted({k for st in registrant.stages for k in st.fit} & set(registrant.shared))
    if shared and registrant.multi_start is not None:
        raise FittingConfigError(
            f'registrant: multi_start cannot be combined with shared parameters {shared} '
            'in a dataset fit (the skeleton is estimated per animal first)')
    calibrated = None
    if data_cfg.get('skeleton') is not None:
        if not shared:
            raise FittingConfigError('data.skeleton: the registrant shares no fitted '
                                     'parameters (registrant.shared) to take from it')
        try:
            calibrated = load_skeleton(data_cfg['skeleton'], shared, registrant.param_shapes(),
                                       registrant.body_model.joint_names)
        except (KeyError, ValueError, TypeError) as err:
            raise FittingConfigError(f'data.skeleton: {err}') from err
    network_starts = None
    if data_cfg.get('init_from') is not None:
        if registrant.multi_start is not None:
            raise FittingConfigError('data.init_from and registrant.multi_start exclude each '
                                     'other (both choose where frames start)')
        network_starts = load_network_starts(data_cfg['init_from'], reader)

    work_dir = Path(work_dir)
    results = work_dir / RESULTS_NAME
    chunks = work_dir / 'chunks'
    # Only finished batches count as results: a run that failed before writing one
    # (leaving chunks/config.json) can simply be run again.
    if (results.exists() or any(chunks.glob('batch_*.npz'))) and not (resume or overwrite):
        raise FileExistsError(f'{work_dir} already holds fitting results; pass resume=True '
                              '(--resume) to continue or overwrite=True (--overwrite)')
    stamp = json.dumps(dict(data=data_cfg, registrant=reg_cfg,
                            dataset=dataset_identity(data_cfg['path'])),
                       sort_keys=True, default=str)
    stamp_path = chunks / 'config.json'
    if resume and not overwrite and stamp_path.exists() and any(chunks.glob('batch_*.npz')):
        changed = stamp_changes(stamp_path.read_text(), stamp)
        if changed:
            raise FileExistsError(f'{chunks} was written from another '
                                  f'{" and ".join(changed)}; its batches cannot be resumed: '
                                  'use --overwrite to start again')
    # Every rank checks before any rank writes: rank 0's own config.json must not look
    # like earlier results to a slower rank.
    barrier(world)
    if rank == 0:
        if overwrite and chunks.exists():
            for old in [*chunks.glob('batch_*.npz'), chunks / SKELETON_NAME]:
                old.unlink(missing_ok=True)
        chunks.mkdir(parents=True, exist_ok=True)
        write_text(stamp_path, stamp)
    barrier(world)

    total = len(reader)
    if data_cfg.get('max_samples') is not None:
        total = min(total, int(data_cfg['max_samples']))
    batch_size = int(data_cfg.get('batch_size', 64))
    save_vertices = bool(data_cfg.get('save_vertices', False))
    needs_masks = any(isinstance(h, SilhouetteHandler) for h in registrant.handlers.values())

    def read(indices: np.ndarray, warn: bool = True):
        """The batch's metadata, its observations (cameras checked, views selected) and
        the views dropped for non-finite cameras."""
        batch = reader.read(indices, keys=[k for k in _OBSERVATION_KEYS] +
                            ['session', 'frame'])
        raw = observations_from_batch(batch)
        bad_views = drop_non_finite_cameras(raw)
        if bad_views.any() and warn:
            warn_bad_cameras(bad_views, indices, batch['session'], reader, data_cfg['path'])
        if needs_masks:  # silhouettes: the stored masks (NaN where a view has none)
            raw['masks'], raw['mask_valid'] = masks_from_hdf5(reader, indices)
        if keep_views is not None:  # data.views / data.exclude_views
            raw = select_views(raw, keep_views[np.asarray(batch['session'], int)])
        return batch, raw, bad_views

    # Who is who, also without shared parameters: handlers pool per animal (e.g. the
    # keypoints' noise scales over its frames in the batch).
    meta = reader.read(np.arange(total), keys=['session', 'frame', 'instance', 'track'])
    animals = identify_animals(meta['session'], meta['instance'], meta['track'])
    # One skeleton per animal and session (smilfit.apis.animals): estimated once from
    # frames spread over the session (or a calibrated one reused), then held fixed while
    # every frame is fitted.
    skeleton = None
    if shared:
        skeleton_path = chunks / SKELETON_NAME
        if rank == 0 and not (resume and skeleton_matches(skeleton_path, stamp)):
            if calibrated is not None and calibrated['mode'] == 'fixed':
                skeleton = calibrated_skeletons(calibrated, shared, animals, stamp)
            else:
                skeleton = estimate_skeletons(
                    registrant, read, animals, meta['frame'], shared, stamp,
                    int(data_cfg.get('skeleton_frames', DEFAULT_SKELETON_FRAMES)),
                    batch_size, progress, calibrated)
            save_npz(skeleton_path, skeleton)
        barrier(world)
        with np.load(skeleton_path, allow_pickle=False) as z:
            skeleton = {k: z[k] for k in z.files}

    starts = range(0, total, batch_size)
    mine = [start for i, start in enumerate(starts) if i % world == rank]
    for start in tqdm(mine, desc='fitting batches', disable=not progress):
        chunk_path = chunks / f'batch_{start // batch_size:05d}.npz'
        if resume and chunk_path.exists():
            if load_npz_whole(chunk_path) is not None:
                continue
            # (written atomically, so damaged since: e.g. a copy of the work dir cut short)
            warnings.warn(f'{chunk_path} cannot be read whole; fitting its batch again')
        indices = np.arange(start, min(start + batch_size, total))
        batch, raw, bad_views = read(indices)
        observations = registrant.to_tensors(raw)
        present, local = np.unique(animals.of_sample[indices], return_inverse=True)
        extra = dict(groups=torch.as_tensor(local))
        if skeleton is not None:
            extra.update(init_params={k: torch.as_tensor(skeleton[f'param_{k}'][present])
                                      for k in shared}, fixed=shared)
        won = None
        if network_starts is not None:
            # A frame started from the network skips the coarse stages (the rigid
            # alignment, the first pose): it starts where they would bring it.
            extra, won = _network_starts(registrant, observations, extra, network_starts,
                                         indices)
            extra['near'] = won
        result = registrant.fit(observations, allow_all_diverged=True, **extra)
        arrays = batch_arrays(result, observations, registrant, indices, save_vertices)
        if won is not None:
            arrays['network_start'] = won.cpu().numpy()
        arrays['animal'] = animals.of_sample[indices]
        arrays['session'] = np.asarray(batch['session'])
        arrays['frame'] = np.asarray(batch['frame'])
        arrays['bad_camera_views'] = bad_views
        arrays['history'] = np.asarray(json.dumps(result.history))
        save_npz(chunk_path, arrays)
    barrier(world)
    if rank == 0:
        merge_chunks(chunks, results, len(starts), registrant, reader, data_cfg, stamp,
                      skeleton)
    barrier(world)
    with read_h5(results, 'fit results') as f:
        failed = f['metrics/diverged'][:]
    if failed.size and failed.all():
        raise AllSamplesFailedError(
            f'every one of the {failed.size} samples failed (non-finite loss or gradient); '
            f'{results} holds what was reached. Check the cameras, the observations and the '
            'loss weights')
    return results


def _network_starts(registrant, observations, extra, starts, indices):
    """``extra`` (the fit's keyword arguments) starting each sample of the batch
    ``indices`` from the network's prediction where a start from it is the best
    (:func:`~.network_starts.choose_starts`), and (B,) where it was."""
    groups = extra['groups'].to(registrant.body_model.device)
    default = registrant.initial_params(observations, len(indices), groups,
                                        extra.get('init_params'))
    device = registrant.body_model.device
    network = {k: torch.as_tensor(v[indices], device=device) for k, v in starts.params.items()}
    keypoints = None if starts.keypoints is None else torch.as_tensor(
        starts.keypoints[indices], device=device)
    chosen, won = choose_starts(registrant, observations, default, network,
                                torch.as_tensor(starts.found[indices], device=device), groups,
                                keypoints)
    init = dict(extra.get('init_params') or {})
    init.update({k: chosen[k] for k in network if k in chosen and k not in registrant.shared})
    return dict(extra, init_params=init), won


__all__ = ['fit_dataset']

