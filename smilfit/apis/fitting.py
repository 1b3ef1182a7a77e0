"""Fit a whole dataset with a registrant from a config: the engine behind ``tools/fit.py``.

Batches of samples are fitted one after another; each finished batch is written to
``<work_dir>/chunks/`` atomically, so an interrupted run resumes where it stopped
(``resume=True``). At the end the chunks are merged into ``<work_dir>/fit_results.h5``
(written to a temporary file and renamed: no half-written result looks valid).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch

from smilfit.cameras import project_points
from smilfit.datasets.joint_lookup import joint_lookup_dict
from smilfit.datasets.view_selection import select_views, view_mask
from smilfit.handlers import SilhouetteHandler
from smilfit.registry import REGISTRANTS

from ..utils.atomic import atomic_path, save_npz, write_text
from .animals import (DEFAULT_SKELETON_FRAMES, calibrated_skeletons, estimate_skeletons,
                      identify_animals, load_skeleton, skeleton_matches)
from .distributed import barrier, setup_distributed

PathLike = Union[str, os.PathLike]
RESULTS_NAME = 'fit_results.h5'
#: The per-animal skeletons of a dataset fit, in its chunks folder.
SKELETON_NAME = 'skeletons.npz'
#: Dataset keys the handlers read, renamed where the HDF5 reader differs.
_OBSERVATION_KEYS = {'keypoints_2d': 'keypoints_2d', 'confidence': 'confidence',
                     'visible': 'visible', 'valid': 'view_valid', 'K': 'K', 'dist': 'dist',
                     'R': 'R', 't': 't', 'keypoints_3d': 'keypoints_3d'}


class FittingConfigError(ValueError):
    """The fitting config is missing something; the message says what."""


class StaleDataError(ValueError):
    """``data.path`` exists but holds other data than the config's source describes."""


class AllSamplesFailedError(ValueError):
    """Every sample of a dataset fit failed; a run with some good samples only warns."""


#: The joint lookup of a config (``None``, a dict or a CSV path) as a dict; kept under this
#: name for old imports.
load_joint_lookup = joint_lookup_dict


def observations_from_batch(batch: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Reader batch -> the observation dict handlers read (arrays, renamed keys)."""
    return {new: np.asarray(batch[old]) for old, new in _OBSERVATION_KEYS.items()
            if old in batch}


def point_reprojection_errors(keypoints: torch.Tensor, observations: Mapping[str, torch.Tensor],
                              model_index: torch.Tensor, data_index: torch.Tensor
                              ) -> torch.Tensor:
    """Pixel error of every matched fitted keypoint in every view (B, C, M).

    NaN where the keypoint is not visible, the view is invalid or the point projects to
    no finite pixel.

    Args:
        keypoints: (B, Kp, 3) fitted model points (world).
        observations: with ``keypoints_2d`` (B, C, K, 2) and per-sample cameras
            ``K``, ``R``, ``t``, optional ``dist`` (B, C, ...).
        model_index, data_index: (M,) matched model / data keypoint indices.
    """
    pts = keypoints.index_select(1, model_index)[:, None]  # (B, 1, M, 3)
    uv = project_points(pts, observations['K'], observations['R'], observations['t'],
                        observations.get('dist'))  # (B, C, M, 2)
    observed = observations['keypoints_2d'].index_select(2, data_index)
    err = (uv - observed).norm(dim=-1)  # (B, C, M)
    ok = torch.isfinite(err)
    if 'visible' in observations:
        ok &= observations['visible'].index_select(2, data_index).bool()
    if 'view_valid' in observations:
        ok &= observations['view_valid'].bool()[..., None]
    return torch.where(ok, err, torch.full_like(err, float('nan')))


def reprojection_errors(keypoints: torch.Tensor, observations: Mapping[str, torch.Tensor],
                        model_index: torch.Tensor, data_index: torch.Tensor) -> torch.Tensor:
    """Median pixel error per sample and view of the matched fitted keypoints (B, C);
    NaN where a view has none (see :func:`point_reprojection_errors`)."""
    err = point_reprojection_errors(keypoints, observations, model_index, data_index)
    return torch.nanmedian(err, dim=-1).values


def fitted_points(result, handler) -> torch.Tensor:
    """(B, N, 3) the model points of a keypoint handler's source, with fitted offsets."""
    return handler.points(result.output, result.params)


def _batch_arrays(result, observations: Mapping[str, torch.Tensor], registrant,
                  indices: np.ndarray, save_vertices: bool) -> Dict[str, np.ndarray]:
    """Everything written per fitted sample, as float32/bool numpy arrays."""
    f32 = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
    out = {'index': indices.astype(np.int64), 'joints': f32(result.output.joints),
           'total_loss': f32(result.total_loss),
           'diverged': result.diverged.cpu().numpy()}
    if result.output.keypoints is not None:
        out['keypoints'] = f32(result.output.keypoints)
    if save_vertices and result.output.vertices is not None:
        out['vertices'] = f32(result.output.vertices)
    for name, value in result.params.items():
        out[f'param_{name}'] = f32(value)
    for name, value in result.losses.items():
        out[f'loss_{name}'] = f32(value)
    handler = registrant.keypoint_handler()
    if handler is not None and 'keypoints_2d' in observations and 'K' in observations:
        points = fitted_points(result, handler)
        errors = point_reprojection_errors(points, observations, handler.model_index,
                                           handler.data_index)
        out['reprojection_px'] = f32(torch.nanmedian(errors, dim=-1).values)
        # The fitted points and their errors in the data's keypoint order (NaN where no
        # model point is matched): what the .slp export, the quality table and the
        # benchmark read.
        B, C, K = observations['keypoints_2d'].shape[:3]
        point_px = torch.full((B, C, K), float('nan'), dtype=errors.dtype,
                              device=errors.device)
        point_px[:, :, handler.data_index] = errors
        out['reprojection_point_px'] = f32(point_px)
        fitted = torch.full((points.shape[0], K, 3), float('nan'), dtype=points.dtype,
                            device=points.device)
        fitted[:, handler.data_index] = points.index_select(1, handler.model_index)
        out['fitted_keypoints_3d'] = f32(fitted)
    return out


def export_fit_slp(results: PathLike, out_path: PathLike, dataset: Optional[PathLike] = None,
                   overwrite: bool = True) -> Path:
    """Write a fit's keypoints as SLEAP predictions (one video per session and camera).

    The fitted 3D keypoints (``fitted_keypoints_3d``, in the data's keypoint order) are
    projected through each sample's stored cameras and mapped back to the original
    frames' pixels with the inverse of the stored ``crop``, through the source video's
    distortion (``sessions/video_dist``; also when the stored images were undistorted).
    The videos are the source videos recorded at ingestion (``sessions/video_paths``, with
    their ``sessions/video_shape``), else ``<session>/<camera>`` placeholders to relink
    in SLEAP. The skeleton keeps the source skeleton's edges and symmetries, instances keep
    their tracks, and every multi-camera session is stored as a ``RecordingSession`` with
    its calibration (the cameras of the session's first fitted sample, in the exported
    pixels).

    Args:
        results: ``fit_results.h5`` from :func:`fit_dataset`.
        out_path: the ``.slp`` to write (atomically).
        dataset: the HDF5 dataset (default: the one recorded in ``results``).
        overwrite: replace an existing file.
    """
    import h5py

    from smilfit.datasets import DatasetReader, SlpPredictionWriter
    with h5py.File(results, 'r') as f:
        if 'fitted_keypoints_3d' not in f:
            raise FittingConfigError(f'{results} has no fitted_keypoints_3d (fit with a 2D '
                                     'keypoint handler, with this smilfit version)')
        points = f['fitted_keypoints_3d'][:].astype(np.float64)
        index = f['samples/index'][:]
        dataset = dataset or f.attrs['dataset']
    reader = DatasetReader(dataset)
    batch = reader.read(index, keys=['K', 'R', 't', 'dist', 'crop', 'valid', 'session',
                                     'frame', 'image_size', 'track'])
    sessions = list(reader.session_names)
    cameras = [list(names) for names in reader.camera_names]
    C = batch['K'].shape[1]
    session_of = np.asarray(batch['session']).astype(int)
    back = np.linalg.inv(batch['crop'].astype(np.float64))               # stored -> original
    K_video = back @ batch['K']
    # The source video's distortion (stored images may have been undistorted).
    dist_video = (batch['dist'] if reader.video_dist is None
                  else reader.video_dist[session_of])                    # (B, C, 5)
    original = project_points(torch.as_tensor(points)[:, None], torch.as_tensor(K_video),
                              torch.as_tensor(batch['R']), torch.as_tensor(batch['t']),
                              torch.as_tensor(dist_video)).numpy()       # (B, C, K, 2)
    shapes = reader.video_shapes
    videos, slot, first = [], {}, {}
    for b, s in enumerate(session_of):
        first.setdefault(s, b)
        for c in range(C):
            if (s, c) not in slot and batch['valid'][b, c]:
                name = cameras[s][c] if c < len(cameras[s]) else f'view{c}'
                stored = reader.video_paths[s][c] if reader.video_paths else ''
                slot[(s, c)] = len(videos)
                shape = None if shapes is None or shapes[s, c].min() <= 0 else \
                    (*shapes[s, c].tolist(), 3)
                videos.append(dict(filename=stored or f'{sessions[s]}/{name}', shape=shape))
    rigs, rig_of = [], {}
    for s, b in first.items():
        views = [c for c in range(C) if (s, c) in slot]
        if len(views) < 2:
            continue
        rig_of[s] = len(rigs)
        rigs.append(dict(videos=[slot[(s, c)] for c in views], cameras=[dict(
            name=cameras[s][c] if c < len(cameras[s]) else f'view{c}',
            K=K_video[b, c], dist=dist_video[b, c], R=batch['R'][b, c], t=batch['t'][b, c],
            size=_video_size(videos[slot[(s, c)]]['shape'], batch['image_size'][b, c],
                             batch['crop'][b, c])) for c in views]))
    track_names = [str(t) for t in batch['track']]
    tracks = sorted({t for t in track_names if t})
    writer = SlpPredictionWriter(node_names=list(reader.keypoint_names), videos=videos,
                                 edges=reader.skeleton_edges,
                                 symmetries=reader.skeleton_symmetries, sessions=rigs,
                                 tracks=tracks or None)
    for b, s in enumerate(session_of):
        frame = int(batch['frame'][b])
        track = [tracks.index(track_names[b]) if track_names[b] else -1] if tracks else None
        # The sample is the group: its views are one animal, its fit the 3D instance.
        for c in range(C):
            if batch['valid'][b, c]:
                writer.add(video=slot[(s, c)], frame_idx=frame, points=original[b, c][None],
                           groups=[b], track_ids=track)
        if s in rig_of:
            writer.add_3d(rig_of[s], frame, points[b][None], groups=[b])
    return writer.save(out_path, overwrite=overwrite)


def _video_size(shape: Optional[tuple], stored: np.ndarray, crop: np.ndarray):
    """A camera's (W, H): its video's ``(frames, H, W, 3)`` shape, else the stored image's
    when that is the uncropped frame, else None (unknown)."""
    if shape:
        return shape[2], shape[1]
    return stored if np.allclose(crop, np.eye(3)) else None


def prepare_data(cfg: Mapping[str, Any], progress: bool = True) -> None:
    """Make the config's dataset when it is missing or stale: ``data.sleap`` ingests a
    SLEAP session or labels file given directly; ``data.synthetic`` generates synthetic data.

    ``data.synthetic = dict(num_sessions=..., ...)`` (options of
    :func:`smilfit.datasets.generate_synthetic_dataset`) makes ``data.path`` from the
    config's body model, so a demo needs no data files. The source (input files with
    their sizes and times, options, body model) is recorded in the dataset
    (:mod:`smilfit.datasets.provenance`); an existing ``data.path`` is reused only when
    its record matches.

    Raises:
        FileNotFoundError: ``data.sleap.input`` does not exist.
        StaleDataError: ``data.path`` exists but was not prepared from what the config
            asks for now (other input files or options, or no record); the message says
            what differs and what to do.
    """
    from smilfit.datasets.provenance import (expected_source, read_source, source_changes,
                                             write_source)
    data_cfg = cfg.get('data') or {}
    expected = expected_source(data_cfg, cfg.get('body_model'))
    if expected is None:
        return
    path = Path(data_cfg['path'])
    if path.exists():
        changes = source_changes(read_source(path), expected)
        if not changes:
            return
        # Never overwrite a dataset silently: it may be one the user means to fit.
        kind = 'data.sleap' if expected['kind'] == 'sleap' else 'data.synthetic'
        raise StaleDataError(
            f'{path} does not hold what {kind} asks for ({"; ".join(changes)}). Delete it to '
            f'prepare it again, point data.path elsewhere, or set {kind}=None to fit the '
            'file as it is')
    path.parent.mkdir(parents=True, exist_ok=True)
    if expected['kind'] == 'sleap':
        # A SLEAP session (folder of camera folders + calibration) or labels file given
        # directly: ingest its keypoints and cameras (no images) into data.path.
        from smilfit.datasets.ingest_sleap import ingest_sleap
        sleap = dict(data_cfg['sleap'])
        ingest_sleap(sleap.pop('input'), path, overwrite=True,
                     **dict(dict(images=False, progress=progress), **sleap))
    else:
        from smilfit.datasets import generate_synthetic_dataset
        generate_synthetic_dataset(path, body_model=cfg.get('body_model'), overwrite=True,
                                   progress=progress, **dict(data_cfg['synthetic']))
    write_source(path, expected)


def prepare_data_once(cfg: Mapping[str, Any], progress: bool = True,
                      timeout_s: float = 3600.0) -> None:
    """:func:`prepare_data` once per run: under a launcher every rank runs this before the
    Runner exists, so only rank 0 writes and the others wait until the dataset at
    ``data.path`` records the expected source."""
    if os.environ.get('RANK', '0') == '0':
        prepare_data(cfg, progress=progress)
        return
    from smilfit.datasets.provenance import expected_source, read_source
    data_cfg = cfg.get('data') or {}
    expected = expected_source(data_cfg, cfg.get('body_model'))
    if expected is None:
        return
    import time
    path = Path(data_cfg['path'])
    start = time.monotonic()
    while True:
        try:
            if path.exists() and read_source(path) == expected:
                return
        except OSError:  # rank 0 is replacing the file right now
            pass
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f'rank {os.environ.get("RANK")}: rank 0 did not write '
                               f'{path} within {timeout_s:.0f} s')
        time.sleep(1.0)


def fit_dataset(cfg: Mapping[str, Any], work_dir: PathLike, *, resume: bool = False,
                overwrite: bool = False, progress: bool = True,
                device: str = 'cpu', launcher: str = 'none') -> Path:
    """Fit every sample of ``cfg.data.path`` and write ``work_dir/fit_results.h5``.

    Args:
        cfg: a config with ``body_model``, ``registrant`` (its ``body_model`` defaults to
            the top-level one) and ``data = dict(path=..., batch_size=64,
            max_samples=None, joint_lookup=None|dict|csv path, save_vertices=False,
            views=None|[camera names], exclude_views=None|[camera names],
            skeleton_frames=200)``; the views left out are removed from the
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
    from tqdm import tqdm

    from smilfit.datasets import DatasetReader

    data_cfg = check_data_config(cfg.get('data'))
    reg_cfg = dict(cfg.get('registrant') or {})
    if not reg_cfg:
        raise FittingConfigError('the config needs a registrant = dict(type=...)')
    reg_cfg.setdefault('body_model', cfg.get('body_model'))
    rank, world, device = setup_distributed(launcher, device)
    progress = progress and rank == 0
    if not progress:
        reg_cfg['hooks'] = [h for h in reg_cfg.get('hooks', ())
                            if not (isinstance(h, Mapping) and h.get('type') == 'ProgressBarHook')]
    if reg_cfg['body_model'] is None:
        raise FittingConfigError('no body_model: set body_model (e.g. via _base_) or '
                                 'registrant.body_model')
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
        changed = _stamp_changes(stamp_path.read_text(), stamp)
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
            _warn_bad_cameras(bad_views, indices, batch['session'], reader, data_cfg['path'])
        if needs_masks:  # silhouettes: the stored masks (NaN where a view has none)
            from smilfit.datasets.masks import masks_from_hdf5
            raw['masks'], raw['mask_valid'] = masks_from_hdf5(reader, indices)
        if keep_views is not None:  # data.views / data.exclude_views
            raw = select_views(raw, keep_views[np.asarray(batch['session'], int)])
        return batch, raw, bad_views

    # One skeleton per animal and session (smilfit.apis.animals): estimated once from
    # frames spread over the session (or a calibrated one reused), then held fixed while
    # every frame is fitted.
    skeleton = animals = None
    if shared:
        meta = reader.read(np.arange(total), keys=['session', 'frame', 'instance', 'track'])
        animals = identify_animals(meta['session'], meta['instance'], meta['track'])
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
            continue
        indices = np.arange(start, min(start + batch_size, total))
        batch, raw, bad_views = read(indices)
        observations = registrant.to_tensors(raw)
        extra = {}
        if skeleton is not None:
            ids = animals.of_sample[indices]
            present, local = np.unique(ids, return_inverse=True)
            extra = dict(init_params={k: torch.as_tensor(skeleton[f'param_{k}'][present])
                                      for k in shared},
                         groups=torch.as_tensor(local), fixed=shared)
        result = registrant.fit(observations, allow_all_diverged=True, **extra)
        arrays = _batch_arrays(result, observations, registrant, indices, save_vertices)
        if animals is not None:
            arrays['animal'] = animals.of_sample[indices]
        arrays['session'] = np.asarray(batch['session'])
        arrays['frame'] = np.asarray(batch['frame'])
        arrays['bad_camera_views'] = bad_views
        arrays['history'] = np.asarray(json.dumps(result.history))
        save_npz(chunk_path, arrays)
    barrier(world)
    if rank == 0:
        _merge_chunks(chunks, results, len(starts), registrant, reader, data_cfg, stamp,
                      skeleton)
    barrier(world)
    import h5py
    with h5py.File(results, 'r') as f:
        failed = f['metrics/diverged'][:]
    if failed.size and failed.all():
        raise AllSamplesFailedError(
            f'every one of the {failed.size} samples failed (non-finite loss or gradient); '
            f'{results} holds what was reached. Check the cameras, the observations and the '
            'loss weights')
    return results


#: Keys of the fitting config's ``data`` dict (see :func:`fit_dataset`).
DATA_KEYS = ('path', 'batch_size', 'max_samples', 'joint_lookup', 'save_vertices', 'sleap',
             'synthetic', 'views', 'exclude_views', 'skeleton_frames', 'skeleton')


def check_data_config(data: Any) -> Dict[str, Any]:
    """The fitting config's ``data`` dict, checked: a path, and no unknown keys.

    Raises:
        FittingConfigError: no ``data.path``, or a key not in :data:`DATA_KEYS` (the
            message names it, suggests the closest key and lists the allowed ones).
    """
    import difflib
    data_cfg = dict(data or {})
    for key in data_cfg:
        if key not in DATA_KEYS:
            close = difflib.get_close_matches(key, DATA_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ''
            raise FittingConfigError(f"unknown key data.{key}{hint}; data takes "
                                     f"{', '.join(DATA_KEYS)}")
    if 'path' not in data_cfg:
        raise FittingConfigError("the config needs data = dict(path='dataset.h5', ...)")
    frames = data_cfg.get('skeleton_frames', DEFAULT_SKELETON_FRAMES)
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise FittingConfigError(f'data.skeleton_frames must be an integer >= 1 (frames per '
                                 f'animal its skeleton is estimated from), got {frames!r}')
    return data_cfg


def dataset_identity(path: PathLike) -> Dict[str, Any]:
    """What identifies a dataset file's content for resuming: its resolved path, size,
    modification time and recorded source (:mod:`smilfit.datasets.provenance`)."""
    from smilfit.datasets.provenance import read_source
    path = Path(path).resolve()
    st = path.stat()
    return dict(path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns,
                source=read_source(path))


def _stamp_changes(old: str, new: str) -> list:
    try:
        before = json.loads(old)
    except json.JSONDecodeError:
        return ['config']
    after = json.loads(new)
    names = dict(data='data config', registrant='registrant config', dataset='dataset file')
    return [names[k] for k in names if before.get(k) != after.get(k)]


def drop_non_finite_cameras(observations: Dict[str, np.ndarray]) -> np.ndarray:
    """Mark views whose camera has a non-finite entry invalid, in place; return them.

    A NaN in one camera must not turn a whole sample (or batch) into NaN: the view is
    dropped (``view_valid`` false, its camera replaced by a finite placeholder that no
    handler reads) and the other views are fitted.

    Args:
        observations: the dict of :func:`observations_from_batch` (``K``, ``R``, ``t``,
            ``dist`` (B, C, ...), ``view_valid`` (B, C)).

    Returns:
        (B, C) bool, the views dropped.
    """
    if 'K' not in observations:
        return np.zeros((len(next(iter(observations.values()))), 0), bool)
    B, C = observations['K'].shape[:2]
    finite = np.ones((B, C), bool)
    for key in ('K', 'R', 't', 'dist'):
        if key in observations:
            finite &= np.isfinite(observations[key]).reshape(B, C, -1).all(-1)
    valid = np.asarray(observations.get('view_valid', np.ones((B, C), bool)), bool)
    bad = valid & ~finite
    if bad.any():
        placeholder = dict(K=np.eye(3), R=np.eye(3), t=np.array([0.0, 0.0, 1.0]))
        for key in ('K', 'R', 't', 'dist'):
            if key in observations:
                arr = np.array(observations[key], copy=True)
                arr[~finite] = placeholder.get(key, 0.0)
                observations[key] = arr
        observations['view_valid'] = valid & finite
    return bad


def _warn_bad_cameras(bad: np.ndarray, indices: np.ndarray, sessions: np.ndarray, reader,
                      path: PathLike) -> None:
    import warnings
    names = []
    for b, c in zip(*np.nonzero(bad)):
        cams = reader.camera_names[int(sessions[b])]
        names.append(f'sample {int(indices[b])} camera {cams[c] if c < len(cams) else c}')
    warnings.warn(f'{path}: non-finite camera parameters; these views are left out of the '
                  f'fit: {", ".join(names[:10])}{" ..." if len(names) > 10 else ""}',
                  stacklevel=2)


def _merge_chunks(chunks: Path, results: Path, num_chunks: int, registrant, reader,
                  data_cfg: Mapping[str, Any], stamp: str,
                  skeleton: Optional[Mapping[str, np.ndarray]] = None) -> None:
    import h5py

    parts = []
    for i in range(num_chunks):
        with np.load(chunks / f'batch_{i:05d}.npz') as z:
            parts.append({k: z[k] for k in z.files})
    # Per-batch stage records (mean losses before/after, steps), one list per batch.
    histories = [json.loads(str(p.pop('history'))) for p in parts if 'history' in p]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    model = registrant.body_model
    with atomic_path(results) as tmp:
        with h5py.File(tmp, 'w') as f:
            f.attrs['format'] = 'smilfit-fit-results'
            f.attrs['dataset'] = str(Path(data_cfg['path']).resolve())
            f.attrs['config'] = stamp
            f.attrs['loss_history'] = json.dumps([r for h in histories for r in h])
            f.attrs['stages'] = json.dumps([s.name for s in registrant.stages])
            strings = h5py.string_dtype('utf-8')
            f.create_dataset('joint_names', data=np.array(model.joint_names, dtype=object),
                             dtype=strings)
            f.create_dataset('keypoint_names',
                             data=np.array(model.keypoint_names, dtype=object), dtype=strings)
            f.create_dataset('data_keypoint_names',
                             data=np.array(list(reader.keypoint_names), dtype=object),
                             dtype=strings)
            for key, value in merged.items():
                group, _, name = key.partition('_')
                if group in ('param', 'loss') and name:
                    f.create_dataset(f'{"params" if group == "param" else "losses"}/{name}',
                                     data=value)
                elif key in ('index', 'session', 'frame', 'animal'):
                    f.create_dataset(f'samples/{key}', data=value)
                elif key in ('total_loss', 'diverged', 'reprojection_px',
                             'reprojection_point_px', 'bad_camera_views'):
                    f.create_dataset(f'metrics/{key}', data=value)
                else:
                    f.create_dataset(key, data=value)
            for key, value in (skeleton or {}).items():
                # One row per animal (samples/animal indexes them).
                if key == 'stamp':
                    continue
                if key == 'identity':
                    value = np.asarray(value, dtype=object)
                    f.create_dataset('animals/identity', data=value, dtype=strings)
                else:
                    f.create_dataset(f'animals/{key}', data=value)
    if 'reprojection_point_px' in merged:
        write_fit_quality(results.parent, merged, reader)


#: Files the quality report of a fit is written to (in the work dir).
QUALITY_JSON, QUALITY_TEXT = 'fit_quality.json', 'fit_quality.txt'


def write_fit_quality(work_dir: Path, merged: Mapping[str, np.ndarray], reader) -> str:
    """Per-camera and per-keypoint reprojection table of a fit
    (:func:`smilfit.evaluation.fit_quality.fit_quality`), written to ``work_dir`` as JSON
    and text; returns the text."""
    from smilfit.evaluation.fit_quality import fit_quality, format_fit_quality
    errors = merged['reprojection_point_px']
    C = errors.shape[1]
    camera_names = [[reader.camera_names[int(s)][c] if c < len(reader.camera_names[int(s)])
                     else f'view{c}' for c in range(C)] for s in merged['session']]
    report = fit_quality(errors, camera_names, list(reader.keypoint_names),
                         failed=merged['diverged'])
    report['failed_samples'] = [int(merged['index'][i]) for i in report['failed_samples']]
    text = format_fit_quality(report)
    write_text(work_dir / QUALITY_JSON, json.dumps(report, indent=1))
    write_text(work_dir / QUALITY_TEXT, text + '\n')
    return text


__all__ = ['fit_dataset', 'export_fit_slp', 'check_data_config', 'drop_non_finite_cameras',
           'point_reprojection_errors', 'write_fit_quality', 'QUALITY_JSON', 'QUALITY_TEXT',
           'fitted_points', 'prepare_data', 'prepare_data_once',
           'load_joint_lookup', 'observations_from_batch', 'reprojection_errors',
           'FittingConfigError', 'AllSamplesFailedError', 'StaleDataError', 'RESULTS_NAME']
