"""Keypoint errors, bounding-box sizes and PCK (percentage of correct keypoints).

Conventions: keypoint arrays are ``(..., N, D)`` (N keypoints, D = 2 pixels or 3 world
units), validity masks ``(..., N)`` bool. An error is *valid* where the mask is True and
the ground truth is finite. A valid keypoint whose prediction is not finite gets error
``+inf``: it counts as a miss in PCK and makes means infinite, never silently better.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np

from .arrays import to_numpy

BBOX_SIZE_MODES = ('max', 'diagonal', 'sqrt_area')
Axis = Union[None, int, Tuple[int, ...]]


def keypoint_errors(pred, gt, valid=None) -> Tuple[np.ndarray, np.ndarray]:
    """Euclidean distance between predicted and ground-truth keypoints.

    Args:
        pred: ``(..., N, D)`` predicted keypoints.
        gt: ``(..., N, D)`` ground truth, NaN where missing.
        valid: optional ``(..., N)`` bool (e.g. visibility); None means all.

    Returns:
        ``errors (..., N)`` float64, NaN where invalid and ``+inf`` where the ground truth
        is valid but the prediction is not finite; ``valid (..., N)`` bool: the given mask
        and a finite ground truth.
    """
    pred = to_numpy(pred, 'pred')
    gt = to_numpy(gt, 'gt')
    if pred.shape != gt.shape or pred.ndim < 2:
        raise ValueError(f'pred {pred.shape} and gt {gt.shape} must have the same shape '
                         f'(..., N, D)')
    ok = np.isfinite(gt).all(-1)
    if valid is not None:
        valid = to_numpy(valid, 'valid', dtype=bool)
        if valid.shape != ok.shape:
            raise ValueError(f'valid has shape {valid.shape}, expected {ok.shape}')
        ok &= valid
    with np.errstate(invalid='ignore'):
        errors = np.linalg.norm(pred - gt, axis=-1)
    errors[ok & ~np.isfinite(pred).all(-1)] = np.inf
    errors[~ok] = np.nan
    return errors, ok


def bbox_sizes(bboxes=None, keypoints=None, valid=None, mode: str = 'max') -> np.ndarray:
    """Size of bounding boxes, the normaliser of normalised PCK.

    Either ``bboxes (..., 4)`` as ``x0, y0, x1, y1`` or, when None, the extent of the
    valid ``keypoints (..., N, 2)`` (``valid (..., N)``, default: finite ones).

    Args:
        mode: ``'max'`` = max(width, height) (mmpose's choice), ``'diagonal'`` =
            sqrt(w^2 + h^2), ``'sqrt_area'`` = sqrt(w h).

    Returns:
        ``(...)`` float64 sizes; NaN where undefined (NaN box, fewer than two valid
        keypoints, zero size), since a zero normaliser would make PCK meaningless.

    Raises:
        ValueError: unknown mode, wrong shapes, or a box with x1 < x0 or y1 < y0.
    """
    if mode not in BBOX_SIZE_MODES:
        raise ValueError(f'bbox size mode {mode!r} is not one of {BBOX_SIZE_MODES}')
    if bboxes is not None:
        bboxes = to_numpy(bboxes, 'bboxes')
        if bboxes.shape[-1:] != (4,):
            raise ValueError(f'bboxes has shape {bboxes.shape}, expected (..., 4) x0,y0,x1,y1')
        width = bboxes[..., 2] - bboxes[..., 0]
        height = bboxes[..., 3] - bboxes[..., 1]
        if np.any(width < 0) or np.any(height < 0):
            raise ValueError('bboxes must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0; got '
                             f'{bboxes[(width < 0) | (height < 0)][:3].tolist()}')
    elif keypoints is not None:
        keypoints = to_numpy(keypoints, 'keypoints')
        if keypoints.ndim < 2 or keypoints.shape[-1] != 2:
            raise ValueError(f'keypoints has shape {keypoints.shape}, expected (..., N, 2)')
        ok = np.isfinite(keypoints).all(-1)
        if valid is not None:
            ok &= to_numpy(valid, 'valid', dtype=bool)
        lo = np.where(ok[..., None], keypoints, np.inf).min(-2)
        hi = np.where(ok[..., None], keypoints, -np.inf).max(-2)
        with np.errstate(invalid='ignore'):
            extent = np.where((ok.sum(-1) >= 2)[..., None], hi - lo, np.nan)
        width, height = extent[..., 0], extent[..., 1]
    else:
        raise ValueError('bbox_sizes needs bboxes or keypoints')
    if mode == 'max':
        size = np.maximum(width, height)
    elif mode == 'diagonal':
        size = np.hypot(width, height)
    else:
        size = np.sqrt(width * height)
    return np.where(size > 0, size, np.nan)


def _reduce_axes(ndim: int, axis: Axis) -> Tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


def pck_curve(errors, valid, thresholds: Sequence[float], weights=None, norm=None,
              axis: Axis = None) -> np.ndarray:
    """Weighted fraction of valid keypoints with ``error <= threshold``, per threshold.

    Args:
        errors: ``(..., N)`` errors (from :func:`keypoint_errors`; NaN invalid, inf miss).
        valid: ``(..., N)`` bool; entries that are False (or NaN errors) are not counted.
        thresholds: ``(T,)`` thresholds in the units of ``errors / norm``.
        weights: per-keypoint weights broadcastable to ``errors`` (e.g. ``(N,)``); a
            weight of 0 removes the keypoint. Default 1.
        norm: optional normaliser broadcastable to ``errors`` (e.g. bounding-box sizes
            ``(..., 1)``); entries with a non-finite or non-positive norm are not counted.
        axis: axes of ``errors`` to reduce (None: all).

    Returns:
        ``(remaining axes..., T)`` fractions in [0, 1]; NaN where nothing was counted.
    """
    errors = to_numpy(errors, 'errors')
    ok = to_numpy(valid, 'valid', dtype=bool) & ~np.isnan(errors)
    if norm is not None:
        norm = np.broadcast_to(to_numpy(norm, 'norm'), errors.shape)
        with np.errstate(invalid='ignore'):
            ok = ok & np.isfinite(norm) & (norm > 0)
            errors = errors / np.where(ok, norm, 1.0)
    w = np.ones_like(errors) if weights is None else np.broadcast_to(
        to_numpy(weights, 'weights'), errors.shape)
    w = np.where(ok, w, 0.0)
    axes = _reduce_axes(errors.ndim, axis)
    keep = tuple(a for a in range(errors.ndim) if a not in axes)
    keep_shape = tuple(errors.shape[a] for a in keep)
    groups = int(np.prod(keep_shape, dtype=np.int64))
    # (groups, reduced elements): the kept axes first.
    order_axes = keep + axes
    e = np.where(ok, errors, np.inf).transpose(order_axes).reshape(groups, -1)
    w = w.transpose(order_axes).reshape(groups, -1)
    thresholds = to_numpy(thresholds, 'thresholds').reshape(-1)
    count = thresholds.size
    order = np.argsort(thresholds, kind='stable')
    # A cumulative weighted histogram: error e is within thresholds[k] (sorted) exactly
    # when k >= the number of thresholds below e. O(elements), no (elements, T) array.
    first_within = np.searchsorted(thresholds[order], e, side='left')
    bins = np.arange(groups)[:, None] * (count + 1) + first_within
    hist = np.bincount(bins.reshape(-1), weights=w.reshape(-1),
                       minlength=groups * (count + 1)).reshape(groups, count + 1)
    hits = np.empty((groups, count))
    hits[:, order] = np.cumsum(hist, axis=1)[:, :count]
    total = w.sum(-1, keepdims=True)
    with np.errstate(invalid='ignore', divide='ignore'):
        fraction = np.where(total > 0, hits / np.where(total > 0, total, 1.0), np.nan)
    return fraction.reshape(keep_shape + (count,))


def pck_at(errors, valid, threshold: float, weights=None, norm=None,
           axis: Axis = None) -> np.ndarray:
    """PCK at one threshold: :func:`pck_curve` without the threshold axis."""
    return pck_curve(errors, valid, [threshold], weights=weights, norm=norm, axis=axis)[..., 0]


def curve_auc(thresholds: Sequence[float], values) -> np.ndarray:
    """Normalised area under a curve sampled at increasing ``thresholds``.

    Trapezoidal area over ``[thresholds[0], thresholds[-1]]`` divided by the range, so a
    PCK curve gives a value in [0, 1] (1: every keypoint within the smallest threshold).
    With a single threshold it is the value there.

    Args:
        thresholds: ``(T,)`` strictly increasing.
        values: ``(..., T)``; NaN anywhere makes that curve's AUC NaN.
    """
    thresholds = to_numpy(thresholds, 'thresholds').reshape(-1)
    values = to_numpy(values, 'values')
    if values.shape[-1] != thresholds.size:
        raise ValueError(f'values has {values.shape[-1]} points, thresholds {thresholds.size}')
    if thresholds.size == 1:
        return values[..., 0]
    steps = np.diff(thresholds)
    if np.any(steps <= 0):
        raise ValueError(f'thresholds must increase strictly, got {thresholds.tolist()}')
    area = ((values[..., 1:] + values[..., :-1]) * 0.5 * steps).sum(-1)
    return area / (thresholds[-1] - thresholds[0])
