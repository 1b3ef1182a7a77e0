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

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from smilfit.datasets.error_outliers import error_stats as _stats
from smilfit.datasets.error_outliers import masked_outlier_groups as _masked
from smilfit.datasets.error_outliers import outlier_camera_keypoints
from smilfit.datasets.error_outliers import outlier_groups as _outliers

__all__ = ['fit_quality', 'format_fit_quality']


def fit_quality(point_errors: np.ndarray, camera_names: Sequence[Sequence[str]],
                keypoint_names: Sequence[str], failed: Optional[np.ndarray] = None,
                ratio: float = 3.0, floor_px: float = 1.0) -> Dict[str, Any]:
    """Per-camera and per-keypoint reprojection quality of a fit.

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
    errors = np.asarray(point_errors, dtype=np.float64)
    N, C, K = errors.shape
    failed = np.zeros(N, bool) if failed is None else np.asarray(failed, bool)
    errors = np.where(failed[:, None, None], np.nan, errors)
    names = np.asarray([[str(n) for n in row] for row in camera_names], dtype=object)
    if names.shape != (N, C):
        raise ValueError(f'camera_names: expected ({N}, {C}), got {names.shape}')
    cameras = {str(name): errors[names == name] for name in sorted(set(names.ravel()))}
    keypoints = {str(keypoint_names[k]): errors[:, :, k] for k in range(K)}
    keypoints = {k: v for k, v in keypoints.items() if np.isfinite(v).any()}
    outlier_cameras = _outliers(cameras, ratio, floor_px)
    # keypoints are judged on the cameras not named: a far-off camera's errors would
    # otherwise raise every keypoint's 90th percentile and hide one off in every view
    kept = ~np.isin(names, outlier_cameras)
    judged = {k: errors[:, :, i][kept] for i, k in enumerate(map(str, keypoint_names))
              if k in keypoints}
    return dict(cameras={n: _stats(e) for n, e in cameras.items()},
                keypoints={n: _stats(e) for n, e in keypoints.items()},
                overall=_stats(errors), samples=int(N),
                failed_samples=np.flatnonzero(failed).tolist(),
                outlier_cameras=outlier_cameras,
                masked_outlier_cameras=_masked(cameras, ratio, floor_px),
                outlier_keypoints=_outliers(judged, ratio, floor_px),
                outlier_camera_keypoints=outlier_camera_keypoints(
                    {n: e for n, e in cameras.items() if n not in outlier_cameras},
                    keypoint_names, ratio, floor_px))


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
