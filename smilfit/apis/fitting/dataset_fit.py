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

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import torch
from tqdm import tqdm

from smilfit.datasets import DatasetReader
from smilfit.datasets.hdf5.files import read_h5
from smilfit.datasets.masks import masks_from_hdf5
from smilfit.datasets.view_selection import select_views, view_mask
from smilfit.handlers import SilhouetteHandler
from smilfit.registrants.marker_placement import (KEYPOINT_DEFINITIONS,
                                                  apply_keypoint_definitions)
from smilfit.registry import REGISTRANTS
from smilfit.utils.atomic import load_npz_whole, save_npz, write_text

from ..animals import (DEFAULT_SKELETON_FRAMES, calibrated_skeletons, estimate_skeletons,
                       identify_animals, load_skeleton, skeleton_matches)
from ..distributed import barrier, setup_distributed
from .config import (AllSamplesFailedError, FittingConfigError, check_data_config,
                     code_identity, dataset_identity, load_joint_lookup, registrant_config,
                     stamp_changes)
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
            ``overlap=0`` samples on each side of a batch are fitted with it, as
            context, and not written (:func:`batch_overlap`: a video's frames at a
            batch's edge then smoothed as in one long batch).
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

    The recipe, a step each (the next feature adds a step, not a branch):

    1. :func:`_prepare`: the config, the ranks, the registrant and the data, every one
       checked before the work dir is touched (a failed start leaves nothing to clean up);
    2. :func:`_claim_work_dir`: earlier results refused, resumed or replaced; the run's
       stamp written;
    3. :func:`_animals`: who is who, and each animal's skeleton (estimated or reused);
    4. :func:`_fit_batches`: this rank's batches, each written as a chunk when done;
    5. :func:`_write_results`: the chunks merged into the results file, checked.
    """
    run = _prepare(cfg, Path(work_dir), progress, device, launcher)
    _claim_work_dir(run, resume, overwrite)
    animals, skeleton = _animals(run, resume)
    _fit_batches(run, animals, skeleton, resume)
    return _write_results(run, skeleton)


@dataclasses.dataclass
class FitRun:
    """What every step of a dataset fit reads, made once by :func:`_prepare`."""

    data_cfg: Dict[str, Any]
    rank: int
    world: int
    progress: bool
    registrant: Any
    reader: DatasetReader
    #: (sessions, views) bool of the views fitted, or None for all.
    keep_views: Optional[np.ndarray]
    #: Parameters fitted once per animal (its skeleton).
    shared: List[str]
    #: An earlier fit's skeleton (``data.skeleton``), or None.
    calibrated: Optional[Dict[str, Any]]
    #: The network's predictions to start from (``data.init_from``), or None.
    network_starts: Any
    work_dir: Path
    #: The run's config and data in one JSON text: what resuming must match.
    stamp: str
    total: int
    batch_size: int
    #: Samples fitted again on each side of a batch, as context (:func:`batch_overlap`).
    overlap: int = 0

    @property
    def chunks(self) -> Path:
        return self.work_dir / 'chunks'

    @property
    def results(self) -> Path:
        return self.work_dir / RESULTS_NAME

    def read(self, indices: np.ndarray, warn: bool = True):
        """The batch's metadata, its observations (cameras checked, views selected) and
        the (B, C) views dropped for non-finite cameras."""
        batch = self.reader.read(indices, keys=[k for k in _OBSERVATION_KEYS] +
                                 ['session', 'frame'])
        raw = observations_from_batch(batch)
        raw['frame_index'] = np.asarray(batch['frame'], dtype=np.int64)   # chains in time
        bad_views = drop_non_finite_cameras(raw)
        if bad_views.any() and warn:
            warn_bad_cameras(bad_views, indices, batch['session'], self.reader,
                             self.data_cfg['path'])
        if any(isinstance(h, SilhouetteHandler) for h in self.registrant.handlers.values()):
            # silhouettes: the stored masks (NaN where a view has none)
            raw['masks'], raw['mask_valid'] = masks_from_hdf5(self.reader, indices)
        if self.keep_views is not None:  # data.views / data.exclude_views
            raw = select_views(raw, self.keep_views[np.asarray(batch['session'], int)])
        return batch, raw, bad_views


def _prepare(cfg: Mapping[str, Any], work_dir: Path, progress: bool, device: str,
             launcher: str) -> FitRun:
    """Step 1: everything that can be wrong with the config, the model or the data fails
    here, before the work dir is touched."""
    data_cfg = check_data_config(cfg.get('data'))
    rank, world, device = setup_distributed(launcher, device)
    progress = progress and rank == 0
    reg_cfg = registrant_config(cfg, progress)
    if not Path(data_cfg['path']).is_file():
        raise FileNotFoundError(f"data.path {data_cfg['path']} does not exist")
    registrant = REGISTRANTS.build(reg_cfg)
    registrant.body_model.to(device)
    reader = DatasetReader(data_cfg['path'])
    registrant.setup(dict(keypoint_names=list(reader.keypoint_names),
                          keypoint_symmetries=reader.skeleton_symmetries,
                          joint_lookup=load_joint_lookup(data_cfg.get('joint_lookup'))))
    keep_views = view_mask(reader.camera_names, reader.num_views, data_cfg.get('views'),
                           data_cfg.get('exclude_views'), session_names=reader.session_names)
    shared = sorted({k for st in registrant.stages for k in st.fit} & set(registrant.shared))
    total = len(reader)
    if data_cfg.get('max_samples') is not None:
        total = min(total, int(data_cfg['max_samples']))
    stamp = json.dumps(dict(data=data_cfg, registrant=reg_cfg,
                            dataset=dataset_identity(data_cfg['path']), code=code_identity()),
                       sort_keys=True, default=str)
    return FitRun(data_cfg=data_cfg, rank=rank, world=world,
                  progress=progress, registrant=registrant, reader=reader,
                  keep_views=keep_views, shared=shared,
                  calibrated=_calibrated_skeleton(data_cfg, registrant, shared),
                  network_starts=_network_start_source(data_cfg, registrant, reader),
                  work_dir=work_dir, stamp=stamp, total=total,
                  batch_size=int(data_cfg.get('batch_size', 64)),
                  overlap=batch_overlap(data_cfg))


def batch_overlap(data_cfg: Mapping[str, Any]) -> int:
    """Samples fitted again on each side of a batch (``data.overlap``, default 0): a
    video's frames at a batch's edge are then smoothed with their neighbours in the
    batches beside it, as in one long batch, and only the batch's own samples are
    written. Off by default: on synthetic video with 3 px of label noise, in batches of
    16 frames per animal, context of 2-8 frames brought the frames at the batches' edges
    0.5 % nearer the truth in 3D for up to 1.3x the time (``benchmarks/batch_overlap.py``,
    docs/fitting.md)."""
    return int(data_cfg.get('overlap') or 0)


def _calibrated_skeleton(data_cfg: Mapping[str, Any], registrant, shared: List[str]
                         ) -> Optional[Dict[str, Any]]:
    """An earlier fit's skeleton (``data.skeleton``) for the shared parameters, or None.

    Raises:
        FittingConfigError: shared parameters with ``multi_start``; ``data.skeleton``
            without shared parameters, or one that does not fit the registrant.
    """
    if shared and registrant.multi_start is not None:
        raise FittingConfigError(
            f'registrant: multi_start cannot be combined with shared parameters {shared} '
            'in a dataset fit (the skeleton is estimated per animal first)')
    if data_cfg.get('skeleton') is None:
        return None
    if not shared:
        raise FittingConfigError('data.skeleton: the registrant shares no fitted '
                                 'parameters (registrant.shared) to take from it')
    try:
        skeleton = load_skeleton(data_cfg['skeleton'], shared, registrant.param_shapes(),
                                 registrant.body_model.joint_names)
        if skeleton.get(KEYPOINT_DEFINITIONS) is not None:   # its offsets are the markers'
            apply_keypoint_definitions(registrant, skeleton[KEYPOINT_DEFINITIONS])
        return skeleton
    except (KeyError, ValueError, TypeError) as err:
        raise FittingConfigError(f'data.skeleton: {err}') from err


def _network_start_source(data_cfg: Mapping[str, Any], registrant, reader):
    """The network's predictions to start frames from (``data.init_from``), or None."""
    if data_cfg.get('init_from') is None:
        return None
    if registrant.multi_start is not None:
        raise FittingConfigError('data.init_from and registrant.multi_start exclude each '
                                 'other (both choose where frames start)')
    return load_network_starts(data_cfg['init_from'], reader)


def _claim_work_dir(run: FitRun, resume: bool, overwrite: bool) -> None:
    """Step 2: refuse earlier results unless resuming (with the same stamp) or replacing
    them; write the run's stamp to ``chunks/config.json``."""
    chunks, stamp_path = run.chunks, run.chunks / 'config.json'
    # Only finished batches count as results: a run that failed before writing one
    # (leaving chunks/config.json) can simply be run again.
    if (run.results.exists() or any(chunks.glob('batch_*.npz'))) and not (resume or overwrite):
        raise FileExistsError(f'{run.work_dir} already holds fitting results; pass '
                              'resume=True (--resume) to continue or overwrite=True '
                              '(--overwrite)')
    if resume and not overwrite and stamp_path.exists() and any(chunks.glob('batch_*.npz')):
        changed = stamp_changes(stamp_path.read_text(), run.stamp)
        if changed:
            raise FileExistsError(f'{chunks} was written from another '
                                  f'{" and ".join(changed)}; its batches cannot be resumed: '
                                  'use --overwrite to start again')
    # Every rank checks before any rank writes: rank 0's own config.json must not look
    # like earlier results to a slower rank.
    barrier(run.world)
    if run.rank == 0:
        if overwrite and chunks.exists():
            for old in [*chunks.glob('batch_*.npz'), chunks / SKELETON_NAME]:
                old.unlink(missing_ok=True)
        chunks.mkdir(parents=True, exist_ok=True)
        write_text(stamp_path, run.stamp)
    barrier(run.world)


def _animals(run: FitRun, resume: bool):
    """Step 3: who is who (also without shared parameters: handlers pool per animal, e.g.
    the keypoints' noise scales over its frames in the batch), and one skeleton per animal
    and session (:mod:`smilfit.apis.animals`): estimated once from frames spread over the
    session (or a calibrated one reused), then held fixed while every frame is fitted.

    Returns:
        ``(animals, skeleton)``: :func:`~smilfit.apis.animals.identify_animals`' answer
        and the skeleton's arrays (None without shared parameters).
    """
    meta = run.reader.read(np.arange(run.total), keys=['session', 'frame', 'instance',
                                                       'track'])
    animals = identify_animals(meta['session'], meta['instance'], meta['track'])
    if not run.shared:
        return animals, None
    skeleton_path = run.chunks / SKELETON_NAME
    if run.rank == 0 and not (resume and skeleton_matches(skeleton_path, run.stamp)):
        calibrated = run.calibrated
        if calibrated is not None and calibrated['mode'] == 'fixed':
            skeleton = calibrated_skeletons(calibrated, run.shared, animals, run.stamp)
        else:
            skeleton = estimate_skeletons(
                run.registrant, run.read, animals, meta['frame'], run.shared, run.stamp,
                int(run.data_cfg.get('skeleton_frames', DEFAULT_SKELETON_FRAMES)),
                run.batch_size, run.progress, calibrated)
        save_npz(skeleton_path, skeleton)
    barrier(run.world)
    with np.load(skeleton_path, allow_pickle=False) as z:
        skeleton = {k: z[k] for k in z.files}
    if KEYPOINT_DEFINITIONS in skeleton:   # labels placed as markers: every rank, resumed
        apply_keypoint_definitions(run.registrant, skeleton[KEYPOINT_DEFINITIONS])
    return animals, skeleton


def _fit_batches(run: FitRun, animals, skeleton: Optional[Dict[str, np.ndarray]],
                 resume: bool) -> None:
    """Step 4: this rank's batches (round-robin between ranks), each fitted and written
    to ``chunks/batch_<n>.npz``; finished ones are kept when resuming."""
    starts = range(0, run.total, run.batch_size)
    mine = [start for i, start in enumerate(starts) if i % run.world == run.rank]
    for start in tqdm(mine, desc='fitting batches', disable=not run.progress):
        chunk_path = run.chunks / f'batch_{start // run.batch_size:05d}.npz'
        if resume and chunk_path.exists():
            if load_npz_whole(chunk_path) is not None:
                continue
            # (written atomically, so damaged since: e.g. a copy of the work dir cut short)
            warnings.warn(f'{chunk_path} cannot be read whole; fitting its batch again')
        indices = np.arange(start, min(start + run.batch_size, run.total))
        context = np.arange(max(start - run.overlap, 0),
                            min(start + run.batch_size + run.overlap, run.total))
        save_npz(chunk_path, _fit_batch(run, animals, skeleton, context, indices))
    barrier(run.world)


def _fit_batch(run: FitRun, animals, skeleton: Optional[Dict[str, np.ndarray]],
               indices: np.ndarray, keep: Optional[np.ndarray] = None
               ) -> Dict[str, np.ndarray]:
    """The arrays of one fitted batch (:func:`~.results.batch_arrays` and what the merge
    needs besides): ``indices`` fitted together, the rows of ``keep`` (a consecutive run
    of them; all by default) written."""
    arrays = _fit_samples(run, animals, skeleton, indices)
    if keep is None or len(keep) == len(indices):
        return arrays
    rows = np.isin(indices, keep)
    return {k: v[rows] if v.ndim and v.shape[0] == len(indices) else v
            for k, v in arrays.items()}


def _fit_samples(run: FitRun, animals, skeleton: Optional[Dict[str, np.ndarray]],
                 indices: np.ndarray) -> Dict[str, np.ndarray]:
    registrant = run.registrant
    batch, raw, bad_views = run.read(indices)
    observations = registrant.to_tensors(raw)
    present, local = np.unique(animals.of_sample[indices], return_inverse=True)
    extra = dict(groups=torch.as_tensor(local))
    if skeleton is not None:
        extra.update(init_params={k: torch.as_tensor(skeleton[f'param_{k}'][present])
                                  for k in run.shared}, fixed=run.shared)
    won = None
    if run.network_starts is not None:
        # A frame started from the network skips the coarse stages (the rigid
        # alignment, the first pose): it starts where they would bring it.
        extra, won = _network_starts(registrant, observations, extra, run.network_starts,
                                     indices)
        extra['near'] = won
    result = registrant.fit(observations, allow_all_diverged=True, **extra)
    arrays = batch_arrays(result, observations, registrant, indices,
                          bool(run.data_cfg.get('save_vertices', False)))
    if won is not None:
        arrays['network_start'] = won.cpu().numpy()
    arrays['animal'] = animals.of_sample[indices]
    arrays['session'] = np.asarray(batch['session'])
    arrays['frame'] = np.asarray(batch['frame'])
    arrays['bad_camera_views'] = bad_views
    arrays['history'] = np.asarray(json.dumps(result.history))
    return arrays


def _write_results(run: FitRun, skeleton: Optional[Dict[str, np.ndarray]]) -> Path:
    """Step 5: rank 0 merges the chunks into the results file; a run in which every
    sample failed is an error (the file keeps what was reached)."""
    if run.rank == 0:
        merge_chunks(run.chunks, run.results, len(range(0, run.total, run.batch_size)),
                     run.registrant, run.reader, run.data_cfg, run.stamp, skeleton)
    barrier(run.world)
    with read_h5(run.results, 'fit results') as f:
        failed = f['metrics/diverged'][:]
    if failed.size and failed.all():
        raise AllSamplesFailedError(
            f'every one of the {failed.size} samples failed (non-finite loss or gradient); '
            f'{run.results} holds what was reached. Check the cameras, the observations '
            'and the loss weights')
    return run.results


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

