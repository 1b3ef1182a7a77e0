"""A fit of a session as training labels: ``tools/fit.py``'s ``fit_results.h5`` joined
with a prepared dataset of the same session (images), sample by sample.

The fit and the prepared dataset are usually different files (the fit reads keypoints,
the network crops of the images), so samples are joined by (session name, frame,
instance), read from the fit's own dataset file (its ``dataset`` attribute). What a
sample gets (:func:`load_fit_labels`):

- ``fit_params``: the fitted per-frame parameters (``global_orient``, ``body_pose``,
  ``transl``, ``global_log_scale``; world frame, the calibration's units) and
  ``fit_keypoints_3d`` (N, 3), the fitted keypoints in the data's order;
- the views whose camera the fit's report names as far off the others (a miscalibrated
  camera, the rule of :mod:`.error_outliers`) or whose camera
  was not finite: their 2D labels must not teach the network;
- with ``camera_keypoints``, also the labels of each (camera, keypoint) the report names
  as far from where the other cameras put that keypoint
  (:func:`~.error_outliers.outlier_camera_keypoints`: a camera whose labeller followed
  another convention for the tail, a left/right swap): a network cannot match one
  camera's convention without moving the animal away from the others';
- ``fit_error_px``: the sample's median reprojection error over its other views.

Samples the fit marked failed (non-finite loss), that it did not fit, or whose error is
more than ``max_error_ratio`` times the session's median sample error, are left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

from .error_outliers import outlier_camera_keypoints, outlier_groups
from .hdf5.files import read_h5
from .hdf5_format import DatasetReader

PathLike = Union[str, Path]

#: The fitted parameters a sample gets.
FIT_PARAMS = ('global_orient', 'body_pose', 'transl', 'global_log_scale')


class FitLabelsError(ValueError):
    """A fit cannot label this dataset (a different recording, a missing file)."""


@dataclass
class FitLabels:
    """Fit labels aligned with the rows of a prepared dataset (R rows).

    Attributes:
        usable: (R,) bool, rows with a fit that is neither failed nor poor.
        reason: (R,) str, why a row is not usable ('' where it is).
        params: name -> (R, ...) fitted parameters (NaN where not usable).
        keypoints_3d: (R, N, 3) fitted keypoints, data order (NaN where not usable).
        bad_views: (R, C) bool.
        bad_labels: (R, C, N) bool, the labels of (camera, keypoint) pairs far from the
            other cameras' (all ``False`` unless asked for).
        error_px: (R,) median reprojection error over the views not flagged (px).
        silenced: ``{camera: [keypoint names]}``, the labels silenced for the whole
            recording (``None`` for every keypoint of a camera far off the others).
    """

    usable: np.ndarray
    reason: np.ndarray
    params: Dict[str, np.ndarray]
    keypoints_3d: np.ndarray
    bad_views: np.ndarray
    bad_labels: np.ndarray
    error_px: np.ndarray
    silenced: Dict[str, Optional[list]]


def _row_keys(reader: DatasetReader) -> Dict[tuple, int]:
    cols = reader.read(np.arange(len(reader)), keys=['session', 'frame', 'instance'])
    names = list(reader.session_names)
    return {(names[int(s)], int(f), int(i)): r for r, (s, f, i) in
            enumerate(zip(cols['session'], cols['frame'], cols['instance']))}


#: Joined samples compared to make sure the fit is of this recording.
CHECKED_SAMPLES = 16
#: Largest median difference (source pixels) of the joined samples' labels.
SAME_LABELS_PX = 0.5


def _source_pixels(data: Dict[str, np.ndarray]) -> np.ndarray:
    """(B, C, N, 2) labels in the source images' pixels (stored pixels through the
    inverse of each view's crop)."""
    uv = data['keypoints_2d'].astype(np.float64)
    crop = data['crop'].astype(np.float64)
    inv = np.linalg.inv(crop)                                     # (B, C, 3, 3)
    h = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], -1)
    src = np.einsum('bcij,bcnj->bcni', inv, h)
    return src[..., :2] / src[..., 2:]


def _check_same_recording(reader: DatasetReader, fit_reader: DatasetReader, pairs,
                          results: Path) -> None:
    """The joined samples (up to :data:`CHECKED_SAMPLES`, spread over them) must have the
    same cameras and the same labels in source pixels: another recording with the same
    session names and frame numbers is refused, not silently joined."""
    if not pairs:
        return
    picks = np.unique(np.linspace(0, len(pairs) - 1, min(len(pairs), CHECKED_SAMPLES))
                      .round().astype(int))
    mine = sorted(pairs[i][0] for i in picks)
    theirs = [dict(pairs)[r] for r in mine]
    keys = ['keypoints_2d', 'crop', 'R', 't', 'valid']
    a = reader.read(mine, keys=keys)
    order = np.argsort(theirs)
    b_sorted = fit_reader.read(np.asarray(theirs)[order], keys=keys)
    b = {k: v[np.argsort(order)] for k, v in b_sorted.items()}
    if a['valid'].shape != b['valid'].shape:
        raise FitLabelsError(f'{results}: the fit has {b["valid"].shape[1]} views, the '
                             f'dataset {a["valid"].shape[1]}: not the same recording')
    both = a['valid'].astype(bool) & b['valid'].astype(bool)
    same_cameras = np.allclose(a['R'][both], b['R'][both], atol=1e-5) and np.allclose(
        a['t'][both], b['t'][both], rtol=1e-5, atol=1e-6)
    diff = np.linalg.norm(_source_pixels(a) - _source_pixels(b), axis=-1)[both]
    diff = diff[np.isfinite(diff)]
    if not same_cameras or (diff.size and np.median(diff) > SAME_LABELS_PX):
        raise FitLabelsError(
            f'{results}: its samples and the dataset\'s with the same session, frame and '
            'instance have other cameras or labels: no sample of this dataset is in the '
            'fit (a fit of another recording?)')


def load_fit_labels(results: PathLike, reader: DatasetReader,
                    max_error_ratio: Optional[float] = 3.0,
                    param_names: Sequence[str] = FIT_PARAMS,
                    camera_keypoints: bool = False) -> FitLabels:
    """Align ``results`` (a ``fit_results.h5``) with the rows of ``reader``.

    ``camera_keypoints``: name the labels of (camera, keypoint) pairs the fit's report
    names (``bad_labels``), besides whole cameras.

    ``param_names`` names the fitted parameters to read (those the file has): by default the
    per-frame ones a network learns; a renderer of the fitted animal adds its skeleton
    (``bone_trans``) and shape.

    Raises:
        FileNotFoundError: no results file, or the fit's dataset file is gone.
        FitLabelsError: not a fit results file, the keypoints differ, or no sample of
            the fit is in this dataset.
    """
    results = Path(results)
    if not results.is_file():
        raise FileNotFoundError(f'fit results {results} do not exist')
    with read_h5(results, 'fit results', written_whole=True) as f:
        if f.attrs.get('format') != 'smilfit-fit-results':
            raise FitLabelsError(f'{results} is not a tools/fit.py results file')
        fit_dataset = Path(str(f.attrs['dataset']))
        rows = f['samples/index'][:].astype(np.int64)
        diverged = f['metrics/diverged'][:].astype(bool)
        errors = f['metrics/reprojection_px'][:].astype(np.float64)          # (S, C)
        bad = f['metrics/bad_camera_views'][:].astype(bool)
        point_errors = f['metrics/reprojection_point_px'][:].astype(np.float64)
        fit_sessions = f['samples/session'][:].astype(np.int64)
        fitted = f['fitted_keypoints_3d'][:].astype(np.float64)              # (S, N, 3)
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in f['data_keypoint_names'][:]]
        params = {k: f[f'params/{k}'][:].astype(np.float64) for k in param_names
                  if f'params/{k}' in f}
    if list(names) != list(reader.keypoint_names):
        raise FitLabelsError(f'{results}: the fit has keypoints {names}, the dataset '
                             f'{list(reader.keypoint_names)}')
    if not fit_dataset.is_file():
        raise FileNotFoundError(f'{results} was fitted on {fit_dataset}, which is gone: '
                                'samples are joined through it (session, frame, instance)')
    with DatasetReader(fit_dataset) as fit_reader:
        fit_keys = _row_keys(fit_reader)
        cameras = [list(fit_reader.camera_names[int(i)]) if int(i) < len(
            fit_reader.camera_names) else [] for i in fit_sessions]
        target = _row_keys(reader)
        pairs = [(row, fit_keys[key]) for key, row in target.items() if key in fit_keys]
        _check_same_recording(reader, fit_reader, pairs, results)
    C = errors.shape[1]
    cameras = [(c + [''] * C)[:C] for c in cameras]
    # cameras far off the others (the fit report's rule): their labels teach nothing
    camera_of = np.asarray(cameras, dtype=object)
    kept = np.where(diverged[:, None, None], np.nan, point_errors)
    by_camera = {str(n): kept[camera_of == n] for n in sorted(set(camera_of.ravel()))}
    far = outlier_groups(by_camera)
    bad = bad | np.isin(camera_of, far)
    bad_labels = np.zeros(point_errors.shape, bool)                      # (S, C, N)
    silenced: Dict[str, Optional[list]] = {str(camera): None for camera in far}
    if camera_keypoints:
        named = outlier_camera_keypoints(
            {n: e for n, e in by_camera.items() if n not in far}, names)
        for camera, keypoints in named.items():
            columns = np.isin(names, list(keypoints))
            bad_labels |= (camera_of == camera)[:, :, None] & columns[None, None, :]
            silenced[camera] = list(keypoints)
    by_key = {key: row for key, row in fit_keys.items()}
    fit_row_of_sample = {int(r): s for s, r in enumerate(rows)}
    R = len(reader)
    sample_of_row = np.full(R, -1, dtype=np.int64)
    for key, row in target.items():
        fit_row = by_key.get(key)
        if fit_row is not None and fit_row in fit_row_of_sample:
            sample_of_row[row] = fit_row_of_sample[fit_row]
    if not (sample_of_row >= 0).any():
        raise FitLabelsError(f'no sample of {reader.path} is in the fit {results} '
                             '(joined by session name, frame and instance)')
    has = sample_of_row >= 0
    s = np.where(has, sample_of_row, 0)
    err = np.where(bad[s], np.nan, errors[s])
    with np.errstate(all='ignore'):
        error_px = np.nanmedian(np.where(np.isfinite(err), err, np.nan), axis=1)
    reason = np.full(R, '', dtype=object)
    reason[~has] = 'not fitted'
    failed = has & diverged[s]
    reason[failed & (reason == '')] = 'fit failed'
    reason[has & ~np.isfinite(error_px) & (reason == '')] = 'no reprojection error'
    if max_error_ratio is not None:
        ok = (reason == '')
        typical = np.median(error_px[ok]) if ok.any() else np.nan
        poor = ok & (error_px > float(max_error_ratio) * typical)
        reason[poor] = f'error above {max_error_ratio:g}x the median sample'
    usable = reason == ''
    nan = np.nan

    def aligned(x: np.ndarray) -> np.ndarray:
        out = x[s].copy()
        out[~usable] = nan
        return out
    return FitLabels(usable=usable, reason=reason.astype(str),
                     params={k: aligned(v) for k, v in params.items()},
                     keypoints_3d=aligned(fitted), bad_views=bad[s] & has[:, None],
                     bad_labels=bad_labels[s] & has[:, None, None],
                     error_px=np.where(has, error_px, nan), silenced=silenced)


__all__ = ['FitLabels', 'FitLabelsError', 'load_fit_labels', 'FIT_PARAMS']
