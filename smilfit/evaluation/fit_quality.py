"""How good a fit is, per camera and per keypoint: the table every ``tools/fit.py`` run ends with.

Input: the reprojection error of every fitted keypoint in every view, ``(N, C, K)`` pixels
with NaN where the keypoint was not observed (or the view is invalid), the camera name of
every (sample, view) and the keypoint names. Output: per camera and per keypoint the median
and 90th percentile error and the number of points, and which cameras and keypoints stand
out (the way anipose reports calibration quality).

Outlier rule (:mod:`smilfit.datasets.error_outliers`; relative to the data, no constant in
pixels tuned to a rig): a camera (or a keypoint) is named when its median error is more
than ``ratio`` (3) times the median of the *other* cameras' medians, above the 90th
percentile of the other cameras' errors, and above ``floor_px`` (1 px: sub-pixel
differences are never worth a warning). A far-off camera hides another (its errors raise
the others' 90th percentile): the cameras that stand out once the named ones are left out
are listed too (``masked_outlier_cameras``), as a hint, and keypoints are judged on the
views of the cameras not named. And per keypoint, the same rule
over the cameras (the named ones left out, three or more remaining) finds labels one camera
puts far from where the others do (``outlier_camera_keypoints``): a left/right swap or
another labelling convention in that camera, or its calibration where most of its
keypoints are named.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from smilfit.datasets.error_outliers import error_stats as _stats
from smilfit.datasets.error_outliers import masked_outlier_groups as _masked
from smilfit.datasets.error_outliers import outlier_camera_keypoints
from smilfit.datasets.error_outliers import outlier_groups as _outliers
from smilfit.datasets.error_summary import HISTOGRAM_EDGES, ErrorHistogram

__all__ = ['PointErrorTable', 'fit_quality', 'format_fit_quality']


class PointErrorTable:
    """A fit's reprojection errors gathered batch by batch in bounded memory: one
    :class:`~smilfit.datasets.error_summary.ErrorHistogram` per (camera, keypoint) (14 KB
    each, however long the recording; quantiles within 1.1 % of the exact ones).
    :meth:`report` is :func:`fit_quality` of everything added.

    Args:
        keypoint_names: (K,) names.
    """

    def __init__(self, keypoint_names: Sequence[str]) -> None:
        self.keypoint_names = [str(k) for k in keypoint_names]
        self.camera_names: List[str] = []
        #: (cameras, K, bins) counts; (cameras, K) smallest and largest error
        self._counts = np.zeros((0, len(self.keypoint_names), len(HISTOGRAM_EDGES)),
                                np.int64)
        self._low = np.zeros((0, len(self.keypoint_names)))
        self._high = np.zeros((0, len(self.keypoint_names)))
        self.samples = 0
        self._failed: List[np.ndarray] = []

    def add(self, point_errors: np.ndarray, camera_names: Sequence[Sequence[str]],
            failed: Optional[np.ndarray] = None) -> None:
        """Add a batch: ``point_errors`` (B, C, K) px (NaN not observed), the (B, C) camera
        names of its views and its (B,) failed samples (their errors are left out)."""
        errors = np.asarray(point_errors, dtype=np.float64)
        B, C, K = errors.shape
        if K != len(self.keypoint_names):
            raise ValueError(f'point_errors: expected {len(self.keypoint_names)} keypoints, '
                             f'got {K}')
        failed = np.zeros(B, bool) if failed is None else np.asarray(failed, bool)
        names = np.asarray([[str(n) for n in row] for row in camera_names], dtype=object)
        if names.shape != (B, C):
            raise ValueError(f'camera_names: expected ({B}, {C}), got {names.shape}')
        if np.nanmin(errors, initial=0.0) < 0:
            raise ValueError('point_errors: reprojection errors cannot be negative')
        for name in sorted(set(names.ravel()) - set(self.camera_names)):
            self._grow(name)
        self._failed.append(np.flatnonzero(failed) + self.samples)
        self.samples += B
        camera = np.vectorize(self.camera_names.index, otypes=[np.int64])(names)   # (B, C)
        cell = camera[:, :, None] * K + np.arange(K)                              # (B, C, K)
        keep = np.isfinite(errors) & ~failed[:, None, None]
        values, cell = errors[keep], cell[keep]
        bins = len(HISTOGRAM_EDGES)
        self._counts += np.bincount(cell * bins + ErrorHistogram.bins(values),
                                    minlength=self._counts.size).reshape(self._counts.shape)
        np.minimum.at(self._low.reshape(-1), cell, values)
        np.maximum.at(self._high.reshape(-1), cell, values)

    def _grow(self, name: str) -> None:
        self.camera_names.append(name)
        K = len(self.keypoint_names)
        self._counts = np.concatenate([self._counts, np.zeros((1,) + self._counts.shape[1:],
                                                              np.int64)])
        self._low = np.concatenate([self._low, np.full((1, K), np.inf)])
        self._high = np.concatenate([self._high, np.full((1, K), -np.inf)])

    def cell(self, camera: int, keypoint: int) -> ErrorHistogram:
        """The errors of one camera (its index in :attr:`camera_names`) on one keypoint."""
        return ErrorHistogram(self._counts[camera, keypoint], self._low[camera, keypoint],
                              self._high[camera, keypoint])

    def report(self, ratio: float = 3.0, floor_px: float = 1.0) -> Dict[str, Any]:
        """:func:`fit_quality`'s report of every batch added (``failed_samples`` are
        positions in the order added)."""
        K = len(self.keypoint_names)
        order = sorted(range(len(self.camera_names)), key=self.camera_names.__getitem__)
        cells = {self.camera_names[c]: [self.cell(c, k) for k in range(K)] for c in order}
        combine = ErrorHistogram.combine
        cameras = {n: combine(c) for n, c in cells.items()}
        keypoints = {k: combine(c[i] for c in cells.values())
                     for i, k in enumerate(self.keypoint_names)}
        keypoints = {k: v for k, v in keypoints.items() if v.size}
        outlier_cameras = _outliers(cameras, ratio, floor_px)
        # keypoints are judged on the cameras not named: a far-off camera's errors would
        # otherwise raise every keypoint's 90th percentile and hide one off in every view
        judged = {k: combine(c[i] for n, c in cells.items() if n not in outlier_cameras)
                  for i, k in enumerate(self.keypoint_names) if k in keypoints}
        return dict(cameras={n: _stats(e) for n, e in cameras.items()},
                    keypoints={n: _stats(e) for n, e in keypoints.items()},
                    overall=_stats(combine(cameras.values())), samples=int(self.samples),
                    failed_samples=np.concatenate(self._failed or [np.zeros(0, int)]
                                                  ).astype(int).tolist(),
                    outlier_cameras=outlier_cameras,
                    masked_outlier_cameras=_masked(cameras, ratio, floor_px),
                    outlier_keypoints=_outliers(judged, ratio, floor_px),
                    outlier_camera_keypoints=outlier_camera_keypoints(
                        {n: c for n, c in cells.items() if n not in outlier_cameras},
                        self.keypoint_names, ratio, floor_px))


def fit_quality(point_errors: np.ndarray, camera_names: Sequence[Sequence[str]],
                keypoint_names: Sequence[str], failed: Optional[np.ndarray] = None,
                ratio: float = 3.0, floor_px: float = 1.0) -> Dict[str, Any]:
    """Per-camera and per-keypoint reprojection quality of a fit (all at once; a fit's
    batches one by one: :class:`PointErrorTable`).

    Args:
        point_errors: (N, C, K) pixel errors, NaN where not observed.
        camera_names: (N, C) camera name of each sample's views (views of different
            sessions with the same name are pooled).
        keypoint_names: (K,) names.
        failed: (N,) bool, samples whose fit failed (excluded from the errors).
        ratio, floor_px: the outlier rule (module docstring).

    Returns:
        ``dict(cameras={name: stats}, keypoints={name: stats}, overall=stats,
        samples=N, failed_samples=[indices], outlier_cameras=[...],
        masked_outlier_cameras=[...], outlier_keypoints=[...],
        outlier_camera_keypoints={camera: {keypoint: median_px}})``; stats are
        ``median_px``, ``p90_px``, ``points``; ``masked_outlier_cameras`` stand out once
        ``outlier_cameras`` are left out.
    """
    table = PointErrorTable(keypoint_names)
    table.add(point_errors, camera_names, failed)
    return table.report(ratio, floor_px)


def _row(name: str, stats: Mapping[str, Any], note: str = '') -> str:
    if stats['points'] == 0:
        return f'  {name:<24} {"-":>9} {"-":>9} {0:>8}'
    return (f'  {name:<24} {stats["median_px"]:>9.2f} {stats["p90_px"]:>9.2f} '
            f'{stats["points"]:>8d}{"  <- " + note if note else ""}')


def _camera_note(name: str, report: Mapping[str, Any]) -> str:
    if name in report['outlier_cameras']:
        return 'far above the rest'
    if name in (report.get('masked_outlier_cameras') or []):
        return 'far above the rest without those above'
    return ''


def format_fit_quality(report: Mapping[str, Any]) -> str:
    """The report of :func:`fit_quality` as a text table."""
    head = f'  {"":<24} {"median px":>9} {"p90 px":>9} {"points":>8}'
    lines = ['Reprojection error per camera', head]
    lines += [_row(n, s, _camera_note(n, report)) for n, s in report['cameras'].items()]
    lines += ['Reprojection error per keypoint', head]
    lines += [_row(n, s, 'far above the rest' if n in report['outlier_keypoints'] else '')
              for n, s in report['keypoints'].items()]
    o = report['overall']
    lines.append(f'All: median {o["median_px"] if o["median_px"] is None else round(o["median_px"], 2)}'
                 f' px over {o["points"]} points; {len(report["failed_samples"])} of '
                 f'{report["samples"]} samples failed')
    if report['outlier_cameras']:
        lines.append('Check the calibration of camera(s) ' + ', '.join(report['outlier_cameras'])
                     + ': their error is far above the other cameras\'.')
    masked = report.get('masked_outlier_cameras') or []
    if masked:
        left = set(report['outlier_cameras']) | set(masked)
        medians = [s['median_px'] for n, s in report['cameras'].items()
                   if n not in left and s['median_px'] is not None]
        rest = f', against a median of {float(np.median(medians)):.2f} px for the rest' \
            if medians else ''
        lines.append('Without them, camera(s) ' + ', '.join(
            f'{n} ({report["cameras"][n]["median_px"]:.2f} px)' for n in masked)
            + f' stand out too{rest}: check them as well.')
    if report['outlier_keypoints']:
        lines.append('Check the labels or the joint lookup of keypoint(s) '
                     + ', '.join(report['outlier_keypoints']) + '.')
    for camera, named in (report.get('outlier_camera_keypoints') or {}).items():
        lines.append(f'In camera {camera}, keypoint(s) '
                     + ', '.join(f'{k} ({px:.2f} px)' for k, px in named.items())
                     + ' lie far from where the other cameras put them: check their labels '
                     'there (a left/right swap, another convention) or, where most are '
                     'named, its calibration. A network trained on this fit leaves them out '
                     "with fit_outlier_labels='camera_keypoints'.")
    return '\n'.join(lines)
