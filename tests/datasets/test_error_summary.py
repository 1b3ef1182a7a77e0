"""Error summaries for the outlier rule: a histogram's quantiles and counts stay within one
bin of the exact ones, whatever the number of errors, in fixed memory."""
import numpy as np
import pytest

from smilfit.datasets.error_outliers import beyond_chance, error_stats, outlier_groups
from smilfit.datasets.error_summary import HISTOGRAM_EDGES, ErrorHistogram, ExactErrors

BIN = 2 ** (1 / 64) - 1     # a bin's width relative to its value


@pytest.mark.parametrize('n', [1, 2, 7, 1000, 100000])
@pytest.mark.parametrize('scale', [0.01, 1.0, 300.0])
def test_histogram_quantiles_are_within_one_bin_of_the_exact_ones(n, scale):
    rng = np.random.default_rng(n)
    e = scale * rng.lognormal(sigma=1.0, size=n)
    h, exact = ErrorHistogram.of(e), ExactErrors(e)
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        assert h.quantile(q) == pytest.approx(exact.quantile(q), rel=BIN), q
    assert h.size == n and h.counts.shape == (len(HISTOGRAM_EDGES),)


def test_constant_errors_read_exactly_and_extremes_stay_in_range():
    assert ErrorHistogram.of(np.zeros(50)).quantile(0.5) == 0.0
    assert ErrorHistogram.of(np.full(9, 3.0)).quantile(0.9) == 3.0
    huge = ErrorHistogram.of(np.array([1e6, 2e6, 3e6]))     # past the last edge
    assert 1e6 <= huge.quantile(0.5) <= 3e6


def test_counts_above_a_value_and_combined_histograms():
    rng = np.random.default_rng(0)
    a, b = rng.exponential(2.0, 5000), rng.exponential(5.0, 3000)
    both = ErrorHistogram.combine([ErrorHistogram.of(a), ErrorHistogram.of(b)])
    whole = ErrorHistogram.of(np.concatenate([a, b]))
    np.testing.assert_array_equal(both.counts, whole.counts)
    assert (both.low, both.high) == (whole.low, whole.high)
    for x in (0.5, 3.0, 10.0):
        exact = int((np.concatenate([a, b]) > x).sum())
        in_bin = int(whole.counts[np.searchsorted(HISTOGRAM_EDGES, x, 'right') - 1])
        assert abs(whole.count_above(x) - exact) <= in_bin
    assert whole.count_above(whole.high) == 0


def test_not_finite_errors_are_not_counted_and_negative_ones_refused():
    h = ErrorHistogram.of(np.array([1.0, np.nan, np.inf, 2.0]))
    assert h.size == 2
    with pytest.raises(ValueError, match='negative'):
        ErrorHistogram.of(np.array([1.0, -0.5]))
    with pytest.raises(ValueError, match='no errors'):
        ErrorHistogram().quantile(0.5)


def test_the_outlier_rule_names_the_same_groups_from_histograms_as_from_arrays():
    rng = np.random.default_rng(3)
    groups = {n: s * np.abs(rng.normal(size=400)) for n, s in
              zip('abcde', [1.0, 1.2, 0.9, 9.0, 1.1])}
    histograms = {n: ErrorHistogram.of(e) for n, e in groups.items()}
    assert outlier_groups(groups) == outlier_groups(histograms) == ['d']
    assert error_stats(histograms['a'])['points'] == 400
    rest = np.concatenate([groups[n] for n in 'abce'])
    assert beyond_chance(groups['d'], rest, 20)
    assert beyond_chance(histograms['d'], ErrorHistogram.of(rest), 20)
    assert not beyond_chance(histograms['a'], ErrorHistogram.of(rest), 20)
