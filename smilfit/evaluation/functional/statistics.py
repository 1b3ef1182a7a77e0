"""Aggregates over masked (and weighted) error arrays."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np

from .arrays import to_numpy

Axis = Union[None, int, Tuple[int, ...]]


def weighted_mean(values, valid, weights=None, axis: Axis = None) -> np.ndarray:
    """Mean of ``values`` over ``valid`` entries, weighted by ``weights``.

    Args:
        values: ``(...)`` array (NaN entries are treated as invalid; inf propagates).
        valid: bool, same shape.
        weights: broadcastable to ``values`` (e.g. ``(N,)`` per joint); default 1.
        axis: axes to reduce (None: all).

    Returns:
        The mean (NaN where the total weight is 0).
    """
    values = to_numpy(values, 'values')
    ok = to_numpy(valid, 'valid', dtype=bool) & ~np.isnan(values)
    w = np.ones_like(values) if weights is None else np.broadcast_to(
        to_numpy(weights, 'weights'), values.shape)
    w = np.where(ok, w, 0.0)
    total = w.sum(axis=axis)
    with np.errstate(invalid='ignore', divide='ignore'):
        # w > 0 guard: an inf error with weight 0 must not become NaN (0 * inf).
        weighted = np.where(w > 0, w * np.where(ok, values, 0.0), 0.0).sum(axis=axis)
        return np.where(total > 0, weighted / np.where(total > 0, total, 1.0), np.nan)


def masked_percentiles(values, valid, percentiles: Sequence[float]) -> np.ndarray:
    """Percentiles (0-100, linear interpolation) of the valid, non-NaN ``values``.

    Unweighted: every valid entry counts once. Returns ``(P,)``, NaN when none is valid.
    """
    values = to_numpy(values, 'values')
    ok = to_numpy(valid, 'valid', dtype=bool) & ~np.isnan(values)
    qs = to_numpy(percentiles, 'percentiles').reshape(-1)
    if np.any((qs < 0) | (qs > 100)):
        raise ValueError(f'percentiles must lie in [0, 100], got {qs.tolist()}')
    chosen = values[ok]
    if chosen.size == 0:
        return np.full(qs.shape, np.nan)
    return _percentile_with_inf(chosen, qs, axis=None)


def _percentile_with_inf(values: np.ndarray, qs, axis) -> np.ndarray:
    """``np.nanpercentile`` where +inf (a missed prediction) ranks above every finite
    value: a percentile that reaches into the infs is inf instead of numpy's NaN."""
    inf = np.isposinf(values)
    if not inf.any():
        return np.nanpercentile(values, qs, axis=axis)
    big = np.finfo(np.float64).max
    with np.errstate(over='ignore', invalid='ignore'):
        out = np.nanpercentile(np.where(inf, big, values), qs, axis=axis)
        largest = np.nanmax(np.where(inf, -np.inf, values), axis=axis)
    return np.where(out > largest, np.inf, out)


def per_column_percentile(values, valid, percentile: float) -> np.ndarray:
    """Percentile of each column of ``values (M, N)`` over its valid rows -> ``(N,)``.

    Unweighted, linear interpolation; NaN for a column without valid entries.
    """
    values = to_numpy(values, 'values')
    ok = to_numpy(valid, 'valid', dtype=bool) & ~np.isnan(values)
    if values.ndim != 2:
        raise ValueError(f'values has shape {values.shape}, expected (M, N)')
    masked = np.where(ok, values, np.nan)
    out = np.full(values.shape[1], np.nan)
    has = ok.any(0)
    if has.any():
        out[has] = _percentile_with_inf(masked[:, has], percentile, axis=0)
    return out
