"""Held-out-view evaluation of a fitting config: ``tools/test.py CONFIG --holdout-views K``.

Users choose camera setups and decide whether to trust a fit by leaving cameras out. For
every subset of k of the config's fitting views (all ``C(n, k)`` subsets, or a random
sample of ``max_subsets`` drawn with ``seed``), the config is fitted on those views only
(:func:`smilfit.apis.fitting.fit_dataset` with ``data.views``; the other views are removed
from the observations, :mod:`smilfit.datasets.view_selection`) and its 3D keypoints are
projected into the views left out. DLT triangulation
(:func:`smilfit.cameras.triangulate_dlt`) from the same k views, of the same samples and
keypoints, weighted by the same confidences and masked by the same ``visible`` flags as the
fit sees them (:func:`smilfit.cameras.triangulation.triangulate_observations`), is
scored the same way, and so are the ``peers`` asked for (anipose's triangulations,
:mod:`smilfit.evaluation.triangulation_peers`). Every method is also measured in 3D against
the true points where they are given (a synthetic session's), else against DLT of the
labels in every fitting view. With ``noise`` (:mod:`smilfit.datasets.label_noise`), every view's labels are given
a pose estimator's kind of errors before fitting and triangulating, and the held-out views
are scored against the labels as they were. The summary per k, per held-out camera and per
keypoint is :func:`smilfit.evaluation.holdout_report.holdout_summary`.

Outputs under ``out_dir``: ``fits/k<k>_<view>+<view>/`` the work dir of each fit (a rerun
resumes them: finished fits are reused when their config and data are unchanged),
``holdout_views.json`` (every number, per subset too) and ``holdout_views.txt`` (the
table), both written atomically.

The views of the fitting set are the config's own (``data.views`` /
``data.exclude_views`` narrow them, e.g. ``exclude_views=['side']`` for a camera with a bad
calibration: it is then neither fitted nor scored). A view that is not held out is never
scored; a sample whose fit failed is not scored (the failures are counted per subset).
"""
from __future__ import annotations

import copy
import itertools
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from smilfit.apis.animals import identify_animals
from smilfit.apis.fitting import (AllSamplesFailedError, check_data_config,
                                  drop_non_finite_cameras, fit_dataset, prepare_data)
from smilfit.apis.fitting.observations import (_OBSERVATION_KEYS, observations_from_batch,
                                               sample_camera_names)
from smilfit.apis.fitting.results import read_fitted_keypoints
from smilfit.cameras.projection import project_points_numpy
from smilfit.datasets import DatasetReader
from smilfit.datasets.label_noise import LabelNoise, write_noisy_dataset
from smilfit.datasets.view_selection import camera_universe, select_views, view_mask
from smilfit.evaluation.holdout_report import format_holdout, holdout_summary
from smilfit.evaluation.triangulation_peers import Peer, dlt_peer
from smilfit.handlers.keypoint2d import BEHIND_CAMERA_PX
from smilfit.utils.atomic import write_text

PathLike = Union[str, os.PathLike]
HOLDOUT_JSON, HOLDOUT_TEXT = 'holdout_views.json', 'holdout_views.txt'
NOISY_DATASET = 'noisy_labels.h5'

__all__ = ['view_subsets', 'fitting_views', 'heldout_point_errors', 'heldout_errors',
           'fitting_observations', 'evaluate_holdout_views', 'HoldoutConfigError',
           'HOLDOUT_JSON', 'HOLDOUT_TEXT', 'NOISY_DATASET']


class HoldoutConfigError(ValueError):
    """A held-out evaluation that cannot be run as asked (k, subsets, frames); the message
    says why."""


def view_subsets(cameras: Sequence[str], k: int, max_subsets: Optional[int] = None,
                 seed: int = 0, all_views: bool = False) -> Tuple[List[Tuple[str, ...]], int]:
    """The subsets of ``k`` cameras to fit on.

    Args:
        cameras: the fitting views' names (n).
        k: views per subset, ``1 <= k < n`` (at least one view is held out), or ``k = n``
            with ``all_views`` (nothing held out: scored in 3D only).
        max_subsets: at most this many, drawn uniformly without replacement with ``seed``
            (None: all).
        all_views: whether ``k = n`` is allowed.

    Returns:
        (subsets in the order of ``itertools.combinations(cameras, k)``, the number of all
        subsets ``C(n, k)``).
    """
    n = len(cameras)
    if not 1 <= int(k) <= (n if all_views else n - 1):
        why = ('one or more is held out; k = n, every view fitted, is scored in 3D only and '
               'needs a 3D reference the fit has not seen: added label noise or true 3D '
               'points' if not all_views else 'k = n: every view fitted, scored in 3D only')
        raise HoldoutConfigError(f'--holdout-views {k}: k must be 1 to '
                                 f'{n if all_views else n - 1} for the {n} fitting views '
                                 f'{", ".join(cameras)} ({why})')
    if max_subsets is not None and int(max_subsets) < 1:
        raise HoldoutConfigError(f'--max-subsets must be >= 1, got {max_subsets}')
    every = list(itertools.combinations(list(cameras), int(k)))
    if max_subsets is None or int(max_subsets) >= len(every):
        return every, len(every)
    pick = np.random.default_rng(int(seed)).choice(len(every), int(max_subsets), replace=False)
    return [every[i] for i in sorted(pick)], len(every)


def heldout_point_errors(observations: Mapping[str, np.ndarray], fitted: np.ndarray,
                         fit_views: np.ndarray, heldout_views: np.ndarray,
                         fit_observations: Optional[Mapping[str, np.ndarray]] = None
                         ) -> Tuple[np.ndarray, np.ndarray]:
    """Held-out pixel errors of fitted points and of DLT points from the fitting views.

    Args:
        observations: numpy, as :func:`smilfit.apis.fitting.observations_from_batch` gives
            them: ``keypoints_2d`` (B, C, K, 2) pixels, ``confidence`` / ``visible`` (B, C, K),
            ``view_valid`` (B, C), cameras ``K``, ``R``, ``t``, ``dist`` (B, C, ...): what
            the held-out views are scored against.
        fitted: (B, K, 3) the fit's keypoints in the data's keypoint order (world units;
            NaN where the fit gives none, e.g. failed samples).
        fit_views: (B, C) bool, the views the fit used (DLT uses the same).
        heldout_views: (B, C) bool, the views to score (disjoint from ``fit_views``).
        fit_observations: the labels the fit saw, where they differ from
            ``observations`` (labels with added errors, :mod:`smilfit.datasets.label_noise`);
            DLT triangulates them. None: ``observations``.

    Returns:
        ``(fit_px, dlt_px)``, (B, C, K) each: the distance in pixels between the projection
        (with lens distortion) and the observed keypoint, where the view is held out and
        valid and the keypoint observed there (finite, ``visible``); NaN elsewhere and where
        the point is missing (DLT: fewer than two fitting views see it). A point behind a
        held-out camera scores ``BEHIND_CAMERA_PX``, as in the fit's loss.
    """
    fit_views = np.asarray(fit_views, bool)
    seen = fitting_observations(fit_observations or observations, fit_views)
    errors = heldout_errors(observations, dict(fit=fitted, dlt=dlt_peer(seen)), fit_views,
                            heldout_views)
    return errors['fit'], errors['dlt']


def fitting_observations(observations: Mapping[str, np.ndarray], fit_views: np.ndarray
                         ) -> Dict[str, np.ndarray]:
    """The observations of the fitting views only (every other view removed), as the fit
    and the triangulations see them."""
    obs = dict(observations)
    drop_non_finite_cameras(obs)        # as fit_dataset does: such a view is invalid
    return select_views(obs, np.asarray(fit_views, bool))


def heldout_errors(observations: Mapping[str, np.ndarray], points: Mapping[str, np.ndarray],
                   fit_views: np.ndarray, heldout_views: np.ndarray) -> Dict[str, np.ndarray]:
    """Held-out pixel errors of several methods' 3D points.

    Args:
        observations: as :func:`heldout_point_errors`' (the labels scored against).
        points: {method: (B, K, 3) world points, NaN where the method gives none}.
        fit_views, heldout_views: (B, C) bool, disjoint.

    Returns:
        {method: (B, C, K)} pixel errors, NaN where not scored (see
        :func:`heldout_point_errors`).
    """
    fit_views, heldout_views = np.asarray(fit_views, bool), np.asarray(heldout_views, bool)
    if (fit_views & heldout_views).any():
        raise ValueError('a view is both fitted and held out')
    obs = dict(observations)
    drop_non_finite_cameras(obs)
    kp = np.asarray(obs['keypoints_2d'], np.float64)
    observed = np.isfinite(kp).all(-1)
    if 'visible' in obs:
        observed &= np.asarray(obs['visible'], bool)
    valid = heldout_views & np.asarray(obs.get('view_valid', heldout_views), bool)
    observed &= valid[..., None]
    cams = [np.asarray(obs[k], np.float64) for k in ('K', 'R', 't')]
    dist = np.asarray(obs['dist'], np.float64) if 'dist' in obs else None

    def score(p: np.ndarray) -> np.ndarray:
        uv, depth = project_points_numpy(np.asarray(p, np.float64)[:, None], *cams, dist)
        err = np.linalg.norm(uv - kp, axis=-1)
        err = np.where(depth > 0, err, BEHIND_CAMERA_PX)
        ok = observed & np.isfinite(p).all(-1)[:, None, :]
        return np.where(ok, err, np.nan)

    return {name: score(p) for name, p in points.items()}


def fitting_views(reader, data_cfg: Mapping[str, Any]) -> Tuple[List[str], np.ndarray]:
    """The config's fitting views (names; ``data.views`` / ``data.exclude_views`` of
    ``reader``'s cameras) and their (S, C) mask: what the subsets are drawn from."""
    mask = view_mask(reader.camera_names, reader.num_views, data_cfg.get('views'),
                     data_cfg.get('exclude_views'), session_names=reader.session_names)
    if mask is None:
        mask = np.zeros((len(reader.camera_names), reader.num_views), bool)
        for s, row in enumerate(reader.camera_names):
            mask[s, :len(row)] = True
    used = {name for s, row in enumerate(reader.camera_names)
            for c, name in enumerate(row[:reader.num_views]) if mask[s, c]}
    return [n for n in camera_universe(reader.camera_names) if n in used], mask


def _subset_mask(reader, names: Sequence[str]) -> np.ndarray:
    wanted = set(names)
    mask = np.zeros((len(reader.camera_names), reader.num_views), bool)
    for s, row in enumerate(reader.camera_names):
        for c, n in enumerate(row[:reader.num_views]):
            mask[s, c] = n in wanted
    return mask


def _score_fit(results: Path, readers: Tuple[Any, Any], fit_mask: np.ndarray,
               candidates: np.ndarray, peers: Mapping[str, Peer],
               truth: Optional[np.ndarray]) -> Dict[str, Any]:
    """Read one fit's results and score it, DLT and the peers in its held-out views and
    in 3D. ``readers``: (the labels scored against, the labels the fit saw); ``truth``:
    (N, K, 3) the true 3D keypoints, or None."""
    clean, fitted_from = readers
    fit = read_fitted_keypoints(results, HoldoutConfigError, 'the held-out evaluation '
                                'needs a config with a 2D keypoint handler')
    fitted, index, failed = fit['points'], fit['index'], fit['diverged']
    fitted[failed] = np.nan                 # a failed sample is counted, not scored
    keys = list(_OBSERVATION_KEYS) + ['session']
    batch = clean.read(index, keys=keys + ['frame', 'instance', 'track'])
    session = np.asarray(batch['session'], int)
    fit_views = fit_mask[session]
    scored_against = observations_from_batch(batch)
    seen = fitting_observations(observations_from_batch(fitted_from.read(index, keys=keys))
                                if fitted_from is not clean else scored_against, fit_views)
    # who is who, frame by frame: what a peer smoothing in time reads
    seen.update(frame_index=np.asarray(batch['frame'], np.int64), animal=identify_animals(
        session, batch['instance'], batch['track']).of_sample)
    points = dict(fit=fitted, DLT=dlt_peer(seen))
    points.update({name: peer(seen) for name, peer in peers.items()})
    px = heldout_errors(scored_against, points, fit_views, candidates[session] & ~fit_views)
    # Without the truth: DLT of the labels as they are in every fitting view (where the
    # fit saw noisy labels, these are the clean ones)
    reference = (np.asarray(truth, np.float64)[index] if truth is not None else
                 dlt_peer(fitting_observations(scored_against, candidates[session])))
    cams = sample_camera_names(reader=clean, sessions=session, num_views=px['fit'].shape[1])
    out = dict(fit_px=px['fit'], dlt_px=px['DLT'], camera_names=cams,
               failed_samples=int(failed.sum()),
               methods_3d={name: np.linalg.norm(p - reference, axis=-1)
                           for name, p in points.items()})
    if peers:
        out['methods_px'] = px
    exchanges = _exchanges(results, fitted_from, index, fit_views)
    if exchanges is not None:
        out['exchanges'] = exchanges
    return out


def _exchanges(results: Path, fitted_from, index: np.ndarray, fit_views: np.ndarray
               ) -> Optional[Dict[str, int]]:
    """The fit's left/right exchanges against the ones the added noise made, in the
    fitting views: ``dict(made, found, wrong)`` (found: made and exchanged by the fit;
    wrong: exchanged by the fit, not made), or None when either is unknown."""
    import h5py
    with h5py.File(results, 'r') as f:
        if 'metrics/exchanged_views' not in f:
            return None
        fitted = f['metrics/exchanged_views'][()].astype(bool)
    with h5py.File(fitted_from.path, 'r') as f:
        if 'label_noise/swapped' not in f:
            return None
        made = f['label_noise/swapped'][()][index].astype(bool)
    made, fitted = made & fit_views, fitted & fit_views
    return dict(made=int(made.sum()), found=int((made & fitted).sum()),
                wrong=int((fitted & ~made).sum()))


def _noisy_dataset(clean: Path, path: Path, noise: LabelNoise) -> Path:
    """``path``: the dataset ``clean`` with ``noise`` added, written unless it holds
    exactly that already (same noise, written from the same file)."""
    import h5py
    stamp = json.dumps(dict(asdict(noise), source=str(clean.resolve()),
                            source_bytes=clean.stat().st_size,
                            source_mtime_ns=clean.stat().st_mtime_ns), sort_keys=True)
    if path.is_file():
        with h5py.File(path, 'r') as f:
            if f.attrs.get('label_noise_source') == stamp:
                return path
    write_noisy_dataset(clean, path, noise, attrs=dict(label_noise_source=stamp))
    return path


def evaluate_holdout_views(cfg: Mapping[str, Any], out_dir: PathLike, ks: Sequence[int], *,
                           max_subsets: Optional[int] = None, seed: int = 0,
                           frames: Optional[int] = None, overwrite: bool = False,
                           progress: bool = True, device: str = 'cpu',
                           config_name: str = '', noise: Optional[LabelNoise] = None,
                           peers: Optional[Mapping[str, Peer]] = None,
                           reference_3d: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Fit on every subset of k views and score fit and DLT in the views left out.

    Args:
        cfg: a fitting config (``registrant``, ``data``; see
            :func:`smilfit.apis.fitting.fit_dataset`). Its dataset is prepared once (SLEAP
            ingestion or synthetic generation as ``tools/fit.py`` does) and reused by every
            fit.
        out_dir: where the fits and the report go.
        ks: the subset sizes k (each ``1 <= k <`` number of fitting views; ``k =`` that
            number too with ``noise`` or ``reference_3d``: nothing is held out and the
            methods are scored in 3D only).
        max_subsets: per k, at most this many subsets, a random sample drawn with ``seed``
            (stated in the report); None: all of them.
        frames: fit and score only the first N samples (frames) of the dataset.
        overwrite: fit again even where ``out_dir/fits`` holds finished fits.
        progress: a progress bar over the subsets.
        device: torch device for fitting.
        config_name: the config's name in the report.
        noise: errors added to every view's labels before fitting
            (:class:`~smilfit.datasets.label_noise.LabelNoise`, as a pose estimator's
            predictions have them; the noisy copy of the dataset is ``out_dir/noisy_labels.h5``).
            The fit, DLT and the peers see the noisy labels; the held-out views are scored
            against the labels as they were. None: the labels as they are.
        peers: {name: triangulation} compared beside the fit and DLT from the same views
            and labels (:mod:`smilfit.evaluation.triangulation_peers`, e.g. anipose's).
        reference_3d: (N, K, 3) every sample's true 3D keypoints (a synthetic session's),
            what the methods' 3D points are measured against; None: DLT of the labels
            scored against in every fitting view (on clean labels this shares k views'
            labels with DLT from k views, which favours DLT; with ``noise`` it does not).

    Returns:
        The report: ``dict(config, dataset, views, samples, frames, noise, reference_3d,
        k={k: dict(selection, subsets, all, cameras, keypoints, methods)})`` (see
        :func:`smilfit.evaluation.holdout_report.holdout_summary`), also written to
        ``out_dir/holdout_views.json`` and, as a table, ``out_dir/holdout_views.txt``.
    """
    from tqdm import tqdm

    if not ks:
        raise HoldoutConfigError('--holdout-views needs at least one k')
    if frames is not None and int(frames) < 1:
        raise HoldoutConfigError(f'--frames must be >= 1, got {frames}')
    # A plain dict copy (mmengine Config / ConfigDict or a dict): every fit gets its own.
    base = copy.deepcopy(cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg))
    data_cfg = check_data_config(base.get('data'))
    prepare_data(base, progress=progress)
    reader = DatasetReader(data_cfg['path'])
    names, candidates = fitting_views(reader, data_cfg)
    if reference_3d is not None and np.shape(reference_3d) != (len(reader),
                                                               len(reader.keypoint_names), 3):
        raise HoldoutConfigError(f'reference_3d must be (samples, keypoints, 3) = '
                                 f'{(len(reader), len(reader.keypoint_names), 3)}, got '
                                 f'{np.shape(reference_3d)}')
    out_dir = Path(out_dir)
    dataset, fitted_from = str(data_cfg['path']), reader
    if noise is not None:
        noisy = _noisy_dataset(Path(data_cfg['path']), out_dir / NOISY_DATASET, noise)
        data_cfg = dict(data_cfg, path=str(noisy))
        fitted_from = DatasetReader(noisy)
    total = len(reader)
    if data_cfg.get('max_samples') is not None:
        total = min(total, int(data_cfg['max_samples']))
    if frames is not None:
        total = min(total, int(frames))
    plan = []
    for k in sorted({int(k) for k in ks}):
        # k = n holds nothing out: 3D only, against a reference the fit has not seen (the
        # clean labels' DLT where the fit saw noisy ones, or the truth)
        subsets, count = view_subsets(names, k, max_subsets, seed,
                                      all_views=noise is not None or reference_3d is not None)
        plan.append((k, subsets, count))
    # Only the views given, never the config's own selection, in each fit: the dataset
    # is prepared already (one ingestion for all fits).
    base['data'] = dict(data_cfg, max_samples=total, sleap=None, synthetic=None)
    base['data'].pop('exclude_views', None)
    scored: Dict[int, List[Dict[str, Any]]] = {k: [] for k, _, _ in plan}
    jobs = [(k, s) for k, subsets, _ in plan for s in subsets]
    bar = tqdm(jobs, desc='held-out subsets', unit='subset', disable=not progress)
    for k, subset in bar:
        bar.set_postfix_str('+'.join(subset))
        sub_cfg = copy.deepcopy(base)
        sub_cfg['data']['views'] = list(subset)
        work = out_dir / 'fits' / f'k{k}_{"+".join(subset)}'
        try:   # resumed: a rerun reuses the finished fits of the same config and data
            results = fit_dataset(sub_cfg, work, resume=not overwrite, overwrite=overwrite,
                                  progress=False, device=device)
        except AllSamplesFailedError:
            results = work / 'fit_results.h5'   # every sample failed: scored as failed
        record = _score_fit(results, (reader, fitted_from), _subset_mask(reader, subset),
                            candidates, peers or {}, reference_3d)
        scored[k].append(dict(record, views=list(subset)))
    report: Dict[str, Any] = dict(
        config=config_name, dataset=dataset, views=names, samples=total,
        frames=frames, k={},
        reference_3d=('the true 3D keypoints' if reference_3d is not None
                      else 'DLT of the scored labels in every fitting view'),
        noise=None if noise is None else dict(asdict(noise), description=noise.describe()))
    for k, subsets, count in plan:
        block = holdout_summary(scored[k], list(reader.keypoint_names), names)
        block['selection'] = dict(count=len(subsets), total=count,
                                  sampled=len(subsets) < count, seed=int(seed),
                                  max_subsets=max_subsets)
        report['k'][str(k)] = block
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / HOLDOUT_JSON, json.dumps(report, indent=1, allow_nan=False))
    write_text(out_dir / HOLDOUT_TEXT, format_holdout(report) + '\n')
    return report
