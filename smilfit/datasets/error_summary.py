"""Pixel errors summarised for the outlier rule of :mod:`.error_outliers`: exactly (every
value, :class:`ExactErrors`) or in bounded memory (:class:`ErrorHistogram`, what a long
fit's quality table gathers batch by batch).

Both answer the rule's three questions the same way: how many errors there are, their
quantiles, and how many lie above a value; and two summaries combine into one (a group's
"rest"). A histogram's quantile is within one bin of the exact one: its bins are 1/64 of
an octave wide (1.1 % of the value) from 2^-12 px to 2^16 px, so a median of 2.00 px reads
between 1.98 and 2.02 px whatever the number of points, and the memory is 14 KB per
summary however long the recording.
"""
from __future__ import annotations

from typing import Iterable, Union

import numpy as np

__all__ = ['ExactErrors', 'ErrorHistogram', 'summary', 'HISTOGRAM_EDGES']

#: Bin edges (px) of :class:`ErrorHistogram`: 0, then 64 bins per octave from 2^-12 px
#: to 2^16 px; the last bin holds everything above 2^16 px.
HISTOGRAM_EDGES = np.concatenate([[0.0], 2.0 ** np.arange(-12, 16 + 1 / 128, 1 / 64)])
_BINS = len(HISTOGRAM_EDGES)          # the last one is open above


class ExactErrors:
    """Every finite error, for exact quantiles.

    Args:
        errors: errors (px) of any shape, NaN where not observed.
    """

    def __init__(self, errors: np.ndarray) -> None:
        errors = np.asarray(errors).ravel()
        self.values = errors[np.isfinite(errors)]

    @property
    def size(self) -> int:
        return int(self.values.size)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (``np.percentile``'s linear rule; the median for 0.5)."""
        return float(np.median(self.values)) if q == 0.5 else \
            float(np.percentile(self.values, 100 * q))

    def count_above(self, value: float) -> int:
        return int((self.values > value).sum())

    @staticmethod
    def combine(parts: Iterable['ExactErrors']) -> 'ExactErrors':
        parts = [p.values for p in parts]
        return ExactErrors(np.concatenate(parts) if parts else np.zeros(0))


class ErrorHistogram:
    """Counts of errors in the bins of :data:`HISTOGRAM_EDGES`, with the smallest and
    largest error (so a quantile never leaves the range of the data: all-zero errors
    read 0). Bounded memory: 14 KB, however many errors are added."""

    def __init__(self, counts: np.ndarray = None, low: float = np.inf,
                 high: float = -np.inf) -> None:
        self.counts = np.zeros(_BINS, np.int64) if counts is None else counts
        self.low, self.high = float(low), float(high)

    @staticmethod
    def bins(errors: np.ndarray) -> np.ndarray:
        """The bin of each (finite, non-negative) error."""
        return np.searchsorted(HISTOGRAM_EDGES, errors, side='right') - 1

    @classmethod
    def of(cls, errors: np.ndarray) -> 'ErrorHistogram':
        e = np.asarray(errors, np.float64).ravel()
        e = e[np.isfinite(e)]
        if e.size and e.min() < 0:
            raise ValueError('errors must not be negative')
        counts = np.bincount(cls.bins(e), minlength=_BINS).astype(np.int64)
        return cls(counts, e.min() if e.size else np.inf, e.max() if e.size else -np.inf)

    @property
    def size(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, within one bin of ``np.percentile``'s: the two errors of
        ranks around ``q (n - 1)`` (each placed linearly within its bin; the first and
        the last exactly) interpolated as numpy does."""
        n = self.size
        if n == 0:
            raise ValueError('no errors')
        rank = q * (n - 1)
        below = int(np.floor(rank))
        above = min(below + 1, n - 1)
        cumulative = np.cumsum(self.counts)
        a, b = self._ranked(below, cumulative, n), self._ranked(above, cumulative, n)
        return float(a + (rank - below) * (b - a))

    def _ranked(self, i: int, cumulative: np.ndarray, n: int) -> float:
        """The error of rank ``i`` (0-based) of ``n``."""
        if i == 0:
            return self.low
        if i == n - 1:
            return self.high
        b = int(np.searchsorted(cumulative, i, side='right'))
        before = cumulative[b] - self.counts[b]
        lo = HISTOGRAM_EDGES[b]
        hi = HISTOGRAM_EDGES[b + 1] if b + 1 < _BINS else max(self.high, lo)
        value = lo + (hi - lo) * (i - before + 0.5) / self.counts[b]
        return min(max(value, self.low), self.high)

    def count_above(self, value: float) -> int:
        """Errors above ``value`` (those in its bin counted by their share of it)."""
        if value >= self.high:
            return 0
        b = int(np.searchsorted(HISTOGRAM_EDGES, value, side='right')) - 1
        lo = HISTOGRAM_EDGES[b]
        hi = HISTOGRAM_EDGES[b + 1] if b + 1 < _BINS else self.high
        share = (hi - value) / (hi - lo) if hi > lo else 1.0
        return int(round(self.counts[b + 1:].sum() + share * self.counts[b]))

    @staticmethod
    def combine(parts: Iterable['ErrorHistogram']) -> 'ErrorHistogram':
        parts = list(parts)
        if not parts:
            return ErrorHistogram()
        return ErrorHistogram(np.sum([p.counts for p in parts], axis=0),
                              min(p.low for p in parts), max(p.high for p in parts))


Summary = Union[ExactErrors, ErrorHistogram]


def summary(errors: Union[np.ndarray, Summary]) -> Summary:
    """``errors`` as a summary (an array becomes :class:`ExactErrors`)."""
    return errors if isinstance(errors, (ExactErrors, ErrorHistogram)) else ExactErrors(errors)
