"""Plots of a fit: loss curves per stage, per-joint errors, reprojection error per camera.

Figures are built with matplotlib's object API on an Agg canvas attached to each figure,
so nothing here touches pyplot or the global backend (importing smilfit never changes
how a user's notebook draws). Every function returns the :class:`matplotlib.figure.Figure`
(tests and notebooks read its data) and writes a PNG when ``out_png`` is given (to a
temporary name, then renamed).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from ..utils.atomic import atomic_path

__all__ = ['plot_loss_curves', 'plot_per_joint_errors', 'plot_reprojection_per_camera',
           'save_figure', 'normalise_history']

PathLike = Union[str, os.PathLike]
History = Union[Mapping[str, Mapping[str, Sequence[float]]], Sequence[Mapping[str, Any]]]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout='constrained')
    FigureCanvasAgg(fig)  # a canvas of its own: no pyplot, no global backend
    return fig


def save_figure(fig, out_png: PathLike) -> Path:
    """Write ``fig`` as a PNG atomically (temporary file, then rename)."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format='png')
    return out_png


def _numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f'{name} must be numeric, got {type(x).__name__}') from err


def normalise_history(history: History) -> Dict[str, Dict[str, np.ndarray]]:
    """Loss history as ``{stage: {series: values (n,)}}``, stages in order.

    Accepts ``{stage: {handler: [values...]}}`` (values per iteration) or a list of stage
    records as :class:`smilfit.registrants.hooks.LossHistoryHook` collects them
    (``stage``, ``mean_loss_start``, ``mean_loss_end``, ``loss_trace``...; one record per
    stage and fitted batch), which become a ``'mean loss'`` series: the start value and
    the loss after every iteration, averaged over batches (start/end values for records
    without a trace).
    """
    if isinstance(history, Mapping):
        out: Dict[str, Dict[str, np.ndarray]] = {}
        for stage, series in history.items():
            if not isinstance(series, Mapping):
                raise ValueError(f'plot_loss_curves: history[{stage!r}] must map loss names '
                                 f'to values, got {type(series).__name__}')
            out[str(stage)] = {str(k): _numpy(v, f'history[{stage!r}][{k!r}]').reshape(-1)
                               for k, v in series.items()}
        return out
    out = {}
    traces: Dict[str, list] = {}
    for i, record in enumerate(history):
        if not isinstance(record, Mapping) or 'stage' not in record:
            raise ValueError(f'plot_loss_curves: history[{i}] is not a stage record with a '
                             "'stage' key")
        name = str(record['stage'])
        if record.get('skipped'):       # nothing was fitted (e.g. a fixed skeleton)
            continue
        if record.get('loss_trace'):
            traces.setdefault(name, []).append(
                [record.get('mean_loss_start', np.nan)] + list(record['loss_trace']))
            out.setdefault(name, {})
            continue
        values = [record.get('mean_loss_start', np.nan), record.get('mean_loss_end', np.nan)]
        stage = out.setdefault(name, {})
        previous = stage.get('mean loss', np.zeros(0))
        stage['mean loss'] = np.concatenate([previous, np.asarray(values, dtype=np.float64)])
    for name, runs in traces.items():
        # Batches of one stage: the mean over batches at every iteration (a batch that
        # stopped early keeps its last value).
        n = max(len(r) for r in runs)
        padded = np.array([r + [r[-1]] * (n - len(r)) for r in runs], dtype=np.float64)
        out[name]['mean loss'] = np.nanmean(padded, axis=0)
    return out


def plot_loss_curves(history: History, out_png: Optional[PathLike] = None, *,
                     log_scale: bool = True, title: str = 'loss per stage',
                     xlabel: str = 'iteration'):
    """Loss curves, stage after stage along one iteration axis, one line per loss term.

    Stages are separated by dotted vertical lines and named at the top; a loss term keeps
    its colour across stages.

    Args:
        history: ``{stage: {handler: [values per iteration]}}`` or stage records (see
            :func:`normalise_history`).
        out_png: optional PNG path.
        log_scale: logarithmic y axis (when every value is positive).
        title, xlabel: labels.

    Returns:
        The figure; its single axes holds one ``Line2D`` per (stage, loss term) with
        ``gid`` ``'<stage>/<term>'`` (and the term's name as label where it first appears),
        plus dotted stage boundaries (``gid`` ``'stage boundary'``).
    """
    data = normalise_history(history)
    if not data:
        raise ValueError('plot_loss_curves: the history is empty')
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    names: List[str] = []
    for series in data.values():
        names += [n for n in series if n not in names]
    colours = {n: f'C{i % 10}' for i, n in enumerate(names)}
    offset, positive, labelled = 0, True, set()
    for stage, series in data.items():
        length = max((len(v) for v in series.values()), default=0)
        for name, values in series.items():
            x = offset + np.arange(len(values))
            ax.plot(x, values, color=colours[name], marker='.' if len(values) < 30 else None,
                    label=None if name in labelled else name, gid=f'{stage}/{name}')
            labelled.add(name)
            finite = values[np.isfinite(values)]
            positive &= bool((finite > 0).all())
        if offset:
            ax.axvline(offset - 0.5, color='0.5', linestyle=':', gid='stage boundary')
        ax.text(offset + max(length - 1, 0) / 2, 1.0, stage, transform=ax.get_xaxis_transform(),
                ha='center', va='bottom', fontsize=9)
        offset += length
    if log_scale and positive:
        ax.set_yscale('log')
    ax.set_xlabel(xlabel)
    ax.set_ylabel('loss')
    ax.set_title(title, pad=18)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if out_png is not None:
        save_figure(fig, out_png)
    return fig


def plot_per_joint_errors(errors: Any, names: Optional[Sequence[str]] = None,
                          out_png: Optional[PathLike] = None, *, unit: str = 'px',
                          title: str = 'error per joint'):
    """A bar per joint: its error, or its mean over frames with a standard-deviation bar.

    Args:
        errors: (N,) errors, or (T, N) errors per frame (NaN where missing: ignored).
        names: N joint names (default ``0 .. N-1``).
        out_png: optional PNG path.
        unit: unit label of the errors (``'px'``, ``'mm'``, ...).
        title: figure title.

    Returns:
        The figure; ``fig.axes[0].patches`` are the N bars, whose heights are ``errors``
        (or the NaN-ignoring means over T).
    """
    e = _numpy(errors, 'errors')
    if e.ndim not in (1, 2) or e.shape[-1] == 0:
        raise ValueError(f'plot_per_joint_errors: errors must be (N,) or (T, N), got {e.shape}')
    N = e.shape[-1]
    names = [str(i) for i in range(N)] if names is None else [str(n) for n in names]
    if len(names) != N:
        raise ValueError(f'plot_per_joint_errors: {len(names)} names for {N} joints')
    if e.ndim == 2:
        with np.errstate(all='ignore'), _quiet():
            height = np.nanmean(e, axis=0)
            spread = np.nanstd(e, axis=0)
    else:
        height, spread = e, None
    fig = _figure(max(6, 0.28 * N + 2), 4.5)
    ax = fig.add_subplot()
    x = np.arange(N)
    ax.bar(x, np.nan_to_num(height), yerr=None if spread is None else np.nan_to_num(spread),
           color='C0', capsize=2)
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel(f'error ({unit})')
    ax.set_title(title + (f' (mean ± std over {e.shape[0]} frames)' if e.ndim == 2 else ''))
    ax.grid(axis='y', alpha=0.3)
    if out_png is not None:
        save_figure(fig, out_png)
    return fig


class _quiet:
    """Silence numpy's "mean of empty slice" warnings for all-NaN columns."""

    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter('ignore', RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def plot_reprojection_per_camera(errors: Any, camera_names: Optional[Sequence[str]] = None,
                                 out_png: Optional[PathLike] = None, *,
                                 title: str = 'reprojection error per camera'):
    """Reprojection error per camera: median bars with quartile whiskers, and over time.

    Args:
        errors: (T, C, N) pixel errors per frame, camera and keypoint, or (T, C) per frame
            and camera (NaN where missing: ignored).
        camera_names: C names (default ``cam0 ..``).
        out_png: optional PNG path.
        title: figure title.

    Returns:
        The figure. ``fig.axes[0].patches`` are the C bars, whose heights are the NaN-
        ignoring medians over frames (and keypoints) per camera; ``fig.axes[1]`` (when
        T > 1) has one line per camera of the per-frame median.
    """
    e = _numpy(errors, 'errors')
    if e.ndim == 2:
        e = e[..., None]
    if e.ndim != 3:
        raise ValueError(f'plot_reprojection_per_camera: errors must be (T, C, N) or (T, C), '
                         f'got {e.shape}')
    T, C, _ = e.shape
    names = [f'cam{c}' for c in range(C)] if camera_names is None else \
        [str(n) for n in camera_names]
    if len(names) != C:
        raise ValueError(f'plot_reprojection_per_camera: {len(names)} names for {C} cameras')
    flat = np.moveaxis(e, 1, 0).reshape(C, -1)                 # (C, T * N)
    with np.errstate(all='ignore'), _quiet():
        median = np.nanmedian(flat, axis=1)
        q25, q75 = np.nanpercentile(flat, 25, axis=1), np.nanpercentile(flat, 75, axis=1)
        per_frame = np.nanmedian(e, axis=2)                     # (T, C)
    fig = _figure(max(6, 0.6 * C + 3), 4.5 if T == 1 else 7)
    ax = fig.add_subplot(2 if T > 1 else 1, 1, 1)
    x = np.arange(C)
    lower = np.nan_to_num(median - q25)
    upper = np.nan_to_num(q75 - median)
    ax.bar(x, np.nan_to_num(median), yerr=np.stack([lower, upper]), color='C1', capsize=3)
    ax.set_xticks(x, names)
    ax.set_ylabel('median error (px), quartiles')
    ax.set_title(title)
    ax.grid(axis='y', alpha=0.3)
    if T > 1:
        ax2 = fig.add_subplot(2, 1, 2)
        for c in range(C):
            ax2.plot(np.arange(T), per_frame[:, c], label=names[c], color=f'C{c % 10}')
        ax2.set_xlabel('frame')
        ax2.set_ylabel('median error (px)')
        ax2.legend(fontsize=8, ncols=min(C, 6))
        ax2.grid(alpha=0.3)
    if out_png is not None:
        save_figure(fig, out_png)
    return fig
