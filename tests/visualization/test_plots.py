"""Plots hold the data they were given (bar heights, line values), without pyplot."""
import sys

import numpy as np
import pytest

from smilfit.visualization.plots import (normalise_history, plot_loss_curves,
                                         plot_per_joint_errors, plot_reprojection_per_camera)


def bar_heights(ax):
    return np.array([p.get_height() for p in ax.patches])


def test_per_joint_error_bars_equal_the_inputs(tmp_path):
    errors = np.array([1.5, 0.25, 3.0, 7.0])
    fig = plot_per_joint_errors(errors, ['nose', 'ear', 'tail', 'paw'], tmp_path / 'e.png')
    ax = fig.axes[0]
    np.testing.assert_allclose(bar_heights(ax), errors)
    assert [t.get_text() for t in ax.get_xticklabels()] == ['nose', 'ear', 'tail', 'paw']
    assert (tmp_path / 'e.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # (T, N): NaN-ignoring mean over frames.
    per_frame = np.array([[1.0, np.nan, 2.0], [3.0, 4.0, np.nan]])
    fig = plot_per_joint_errors(per_frame)
    np.testing.assert_allclose(bar_heights(fig.axes[0]), [2.0, 4.0, 2.0])
    with pytest.raises(ValueError, match='3 names for 4 joints'):
        plot_per_joint_errors(errors, ['a', 'b', 'c'])


def test_reprojection_bars_are_per_camera_medians():
    rng = np.random.default_rng(0)
    errors = rng.gamma(2.0, size=(6, 3, 5))
    errors[0, 2, :] = np.nan                                    # a frame with no points
    fig = plot_reprojection_per_camera(errors, ['top', 'side', 'back'])
    expected = [np.nanmedian(errors[:, c]) for c in range(3)]
    np.testing.assert_allclose(bar_heights(fig.axes[0]), expected)
    lines = fig.axes[1].get_lines()
    assert [line.get_label() for line in lines] == ['top', 'side', 'back']
    np.testing.assert_allclose(lines[1].get_ydata(), np.median(errors[:, 1], axis=1))
    # (T, C) per-view medians work too.
    fig = plot_reprojection_per_camera(np.array([[1.0, 2.0], [3.0, 6.0]]))
    np.testing.assert_allclose(bar_heights(fig.axes[0]), [2.0, 4.0])
    with pytest.raises(ValueError, match='2 names for 3 cameras'):
        plot_reprojection_per_camera(errors, ['a', 'b'])


def test_loss_curves_hold_every_stage_in_order(tmp_path):
    history = {'rigid': {'kp2d': [10.0, 5.0, 4.0]},
               'full': {'kp2d': [4.0, 2.0], 'shape_prior': [0.5, 0.4]}}
    fig = plot_loss_curves(history, tmp_path / 'loss.png')
    lines = [line for line in fig.axes[0].get_lines() if line.get_gid() != 'stage boundary']
    assert [line.get_gid() for line in lines] == ['rigid/kp2d', 'full/kp2d', 'full/shape_prior']
    data = [(list(line.get_xdata()), list(line.get_ydata())) for line in lines]
    assert data == [([0, 1, 2], [10.0, 5.0, 4.0]), ([3, 4], [4.0, 2.0]), ([3, 4], [0.5, 0.4])]
    assert lines[0].get_color() == lines[1].get_color()         # one colour per loss term
    assert fig.axes[0].get_yscale() == 'log'
    assert (tmp_path / 'loss.png').exists()
    # Records as LossHistoryHook collects them.
    records = [dict(stage='rigid', steps=3, mean_loss_start=9.0, mean_loss_end=3.0),
               dict(stage='rigid', steps=3, mean_loss_start=8.0, mean_loss_end=2.0)]
    assert {k: {n: list(v) for n, v in s.items()} for k, s in
            normalise_history(records).items()} == {'rigid': {'mean loss': [9.0, 3.0, 8.0,
                                                                            2.0]}}
    fig = plot_loss_curves({'s': {'a': [1.0, -1.0]}})
    assert fig.axes[0].get_yscale() == 'linear'                 # negative values: linear
    with pytest.raises(ValueError, match='empty'):
        plot_loss_curves({})


def test_plotting_leaves_pyplot_and_the_backend_alone():
    import matplotlib
    had_pyplot = 'matplotlib.pyplot' in sys.modules             # another test may have it
    get_backend = getattr(matplotlib.rcParams, '_get_backend_or_none', lambda: None)
    backend = get_backend()  # rcParams['backend'] itself would import pyplot
    plot_per_joint_errors(np.ones(3))
    plot_loss_curves({'s': {'a': [1.0, 2.0]}})
    assert ('matplotlib.pyplot' in sys.modules) == had_pyplot
    assert get_backend() == backend
