"""Evaluation report directory: text/JSON summaries, plots and raw ``.npy`` arrays.

``write_report`` is what ``tools/test.py`` calls after an evaluation::

    metrics = evaluator.evaluate(len(dataset))         # flat {name: float}
    write_report('work_dirs/x/report', metrics, collect_raw(evaluator),
                 joint_names=names, camera_names=cams)

Layout (plots only where the raw arrays they need exist)::

    report/
      summary.txt                 metrics as tables (overall, per camera, per joint)
      summary.json                metrics (NaN/inf as null), units, names, file lists
      pck_curve.png               PCK vs threshold (px), overall and per camera
      error_histograms.png        one histogram per error array (px, 3D units, IoU)
      per_joint_<group>_<kind>.png  per-joint mean error bars with median and P90 marks
      per_camera_<group>.png      per-camera mean/median error (or IoU)
      keypoints_3d_error.png      3D keypoints of the median, P90 and worst samples,
                                  coloured by the percentile of each keypoint's error
      raw/<group>/<key>.npy       every raw array (np.load without pickle)

The directory is built under a temporary name beside ``out_dir`` and renamed into place,
so a failed report never leaves a partial directory. matplotlib is imported here, only
when a report is written, and used through its object API with the Agg canvas: the
global backend (e.g. a notebook's) is never changed.
"""
from __future__ import annotations

import datetime
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from smilfit.evaluation.functional import curve_auc
from smilfit.utils.atomic import atomic_dir
from smilfit.version import __version__

PathLike = Union[str, Path]
RawArrays = Mapping[str, Any]
_PER_KEY = re.compile(r'^(?:(?P<prefix>.*)/)?per_(?P<kind>camera|joint)/(?P<name>[^/]+)/'
                      r'(?P<metric>.+)$')
_SAFE = re.compile(r'[^A-Za-z0-9_.@-]+')
_DEFAULT_CAMERA = re.compile(r'^cam(\d+)$')


# ---------------------------------------------------------------------------- inputs
def normalize_raw(raw: Optional[RawArrays]) -> Dict[str, Dict[str, np.ndarray]]:
    """Raw arrays as ``{group: {key: ndarray}}``.

    Accepts the nested form of :func:`~smilfit.evaluation.collect_raw`, or a flat dict
    whose keys are ``'group/key'`` (or plain ``'key'``, grouped under ``'raw'``).
    """
    groups: Dict[str, Dict[str, np.ndarray]] = {}
    for key, value in (raw or {}).items():
        if isinstance(value, Mapping):
            for sub, array in value.items():
                groups.setdefault(str(key), {})[str(sub)] = _as_array(array, f'{key}/{sub}')
        else:
            group, _, sub = str(key).rpartition('/')
            groups.setdefault(group or 'raw', {})[sub] = _as_array(value, str(key))
    return groups


def _as_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise ValueError(f'raw array {name!r} has dtype object; only numeric, bool and '
                         f'string arrays can be saved without pickle')
    return array


def _check_results(results: Mapping[str, Any]) -> Dict[str, float]:
    out = {}
    for key, value in results.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f'results[{key!r}] = {value!r} is not a number') from None
    return out


def _json_number(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) >= 1 and abs(value) < 1e15:
        return str(int(value))
    return f'{value:.4g}'


def _safe(name: str) -> str:
    return _SAFE.sub('_', name).strip('_') or 'unnamed'


# ---------------------------------------------------------------------------- summaries
def split_results(results: Mapping[str, float]):
    """``(overall, per_camera, per_joint)``: overall ``{key: value}``; the others
    ``{column: {name: value}}`` with column ``'<prefix>/<metric>'``."""
    overall: Dict[str, float] = {}
    tables: Dict[str, Dict[str, Dict[str, float]]] = dict(camera={}, joint={})
    for key, value in results.items():
        match = _PER_KEY.match(key)
        if match is None:
            overall[key] = value
            continue
        column = '/'.join(p for p in (match['prefix'], match['metric']) if p)
        tables[match['kind']].setdefault(column, {})[match['name']] = value
    return overall, tables['camera'], tables['joint']


def _table(rows: Sequence[str], columns: Dict[str, Dict[str, float]], row_title: str) -> str:
    headers = [row_title] + list(columns)
    body = [[row] + [_fmt(columns[c][row]) if row in columns[c] else '-' for c in columns]
            for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *body)]
    lines = ['  '.join(h.ljust(w) for h, w in zip(headers, widths)),
             '  '.join('-' * w for w in widths)]
    lines += ['  '.join(str(x).ljust(w) for x, w in zip(line, widths)) for line in body]
    return '\n'.join(lines)


def _ordered_names(columns: Dict[str, Dict[str, float]], preferred: Sequence[str]) -> List[str]:
    seen = [n for n in preferred if any(n in c for c in columns.values())]
    for column in columns.values():
        seen += [n for n in column if n not in seen]
    return seen


#: How the summary names the pixels of 2D errors (a metric's ``pixels``).
PIXELS_TEXT = {'input': 'pixels of the images the model read',
               'source': "pixels of the recording's images"}


def format_summary(results: Mapping[str, float], title: str, units: str,
                   joint_names: Sequence[str] = (), camera_names: Sequence[str] = (),
                   pixels: str = '') -> str:
    """The text summary: overall metrics grouped by prefix, then per-camera and per-joint
    tables. ``pixels``: the 2D metrics' ``pixels`` ('' where they do not say)."""
    overall, per_camera, per_joint = split_results(results)
    lines = [title, '=' * len(title),
             f'created: {datetime.datetime.now().isoformat(timespec="seconds")}',
             f'3D units: {units or "unknown"}; 2D errors in '
             f'{PIXELS_TEXT.get(pixels, "pixels")}', '']
    groups: Dict[str, Dict[str, float]] = {}
    for key, value in overall.items():
        prefix, _, name = key.rpartition('/')
        groups.setdefault(prefix or 'metrics', {})[name] = value
    for prefix, values in groups.items():
        lines.append(f'[{prefix}]')
        width = max(len(n) for n in values)
        lines += [f'  {name.ljust(width)}  {_fmt(v)}' for name, v in values.items()]
        lines.append('')
    if per_camera:
        lines += ['per camera', '----------',
                  _table(_ordered_names(per_camera, camera_names), per_camera, 'camera'), '']
    if per_joint:
        lines += ['per joint', '---------',
                  _table(_ordered_names(per_joint, joint_names), per_joint, 'joint'), '']
    return '\n'.join(lines)


# ---------------------------------------------------------------------------- plots
def _figure(width: float, height: float, **margins: float):
    """A Figure with fixed margins (inches converted to fractions). A layout engine
    (constrained/tight) would double the drawing time, which dominates a report."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    inches = dict(left=0.7, right=0.25, bottom=0.55, top=0.4)
    inches.update(margins)
    fig.subplots_adjust(left=inches['left'] / width, right=1 - inches['right'] / width,
                        bottom=inches['bottom'] / height, top=1 - inches['top'] / height)
    return fig


def _save(fig, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    fig.savefig(path)


def _unit_of(key: str, group: Mapping[str, np.ndarray], units: str) -> str:
    if key.endswith('_px'):
        return 'px'
    if key == 'iou':
        return 'IoU'
    if 'units' in group and group['units'].ndim == 0:
        return str(group['units'])
    return units


def _error_arrays(groups: Mapping[str, Mapping[str, np.ndarray]]):
    """``(group, key, errors, valid)`` for each error array (and silhouette IoU).

    An array identical to one already yielded (e.g. the pixel errors that both the PCK
    and the reprojection metric keep) is skipped, so its plots are not repeated.
    """
    seen: List[Tuple[np.ndarray, np.ndarray]] = []
    for group_name, group in groups.items():
        for key, values in group.items():
            if not (key.startswith('errors_') or key == 'iou'):
                continue
            if not np.issubdtype(values.dtype, np.number):
                continue
            valid = group.get('valid_' + key[len('errors_'):], group.get('valid'))
            if valid is None or valid.shape != values.shape:
                valid = ~np.isnan(values)
            values = values.astype(np.float64)
            valid = valid.astype(bool) & ~np.isnan(values)
            if any(v.shape == values.shape and np.array_equal(m, valid)
                   and np.array_equal(v[m], values[valid]) for v, m in seen):
                continue
            seen.append((values, valid))
            yield group_name, key, values, valid


def _relabel_cameras(labels: Sequence[str], camera_names: Sequence[str]) -> List[str]:
    out = []
    for label in labels:
        match = _DEFAULT_CAMERA.match(str(label))
        if match and camera_names and int(match[1]) < len(camera_names):
            out.append(str(camera_names[int(match[1])]))
        else:
            out.append(str(label))
    return out


def plot_pck_curves(groups, path: Path, camera_names: Sequence[str]) -> bool:
    curves = [(name, g) for name, g in groups.items()
              if 'pck_curve' in g and 'pck_curve_thresholds_px' in g]
    if not curves:
        return False
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    for name, g in curves:
        thresholds = g['pck_curve_thresholds_px']
        curve = g['pck_curve']
        auc = float(curve_auc(thresholds, curve))
        ax.plot(thresholds, curve, lw=2.5, label=f'{name}: all (AUC {auc:.3f})')
        per_camera = g.get('pck_curve_per_camera')
        labels = _relabel_cameras(list(g.get('camera_names', [])), camera_names)
        if per_camera is not None and len(labels) == len(per_camera) and len(labels) > 1:
            for label, cam_curve in zip(labels, per_camera):
                ax.plot(thresholds, cam_curve, lw=1, alpha=0.8, label=f'{name}: {label}')
    ax.set_xlabel('threshold (px)')
    ax.set_ylabel('PCK')
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='lower right')
    ax.set_title('PCK curve')
    _save(fig, path)
    return True


def plot_histograms(groups, path: Path, units: str) -> bool:
    arrays = list(_error_arrays(groups))
    if not arrays:
        return False
    cols = min(3, len(arrays))
    rows = -(-len(arrays) // cols)
    fig = _figure(4.2 * cols, 3.3 * rows, top=0.5)
    fig.subplots_adjust(wspace=0.3, hspace=0.6)
    for i, (group_name, key, values, valid) in enumerate(arrays):
        ax = fig.add_subplot(rows, cols, i + 1)
        chosen = values[valid]
        finite = chosen[np.isfinite(chosen)]
        unit = _unit_of(key, groups[group_name], units)
        if finite.size:
            hi = 1.0 if key == 'iou' else float(np.percentile(finite, 99.5)) * 1.05 or 1.0
            above = int((finite > hi).sum()) + int((~np.isfinite(chosen)).sum())
            counts, edges = np.histogram(np.clip(finite, 0, hi), bins=50, range=(0, hi))
            ax.stairs(counts, edges, fill=True, color='C0')  # one artist: much faster than hist
            for q, style in ((50, '-'), (95, '--')):
                ax.axvline(np.percentile(finite, q), color='k', ls=style, lw=1,
                           label=f'P{q} {np.percentile(finite, q):.3g}')
            ax.legend(fontsize=7)
            extra = f', {above} beyond the range (last bin)' if above else ''
        else:
            extra = ', no valid values'
        ax.set_title(f'{group_name}/{key}\nn={chosen.size}{extra}', fontsize=8)
        ax.set_xlabel(unit)
        ax.set_ylabel('count')
    _save(fig, path)
    return True


def _per_joint_stats(values: np.ndarray, valid: np.ndarray):
    flat = np.where(valid, values, np.nan).reshape(-1, values.shape[-1])
    with warnings.catch_warnings():   # all-NaN columns (joints never valid) are expected
        warnings.simplefilter('ignore', RuntimeWarning)
        return (np.nanmean(flat, 0), np.nanpercentile(flat, 50, 0),
                np.nanpercentile(flat, 90, 0))


def plot_per_joint(groups, out_dir: Path, joint_names: Sequence[str], units: str) -> List[str]:
    written = []
    for group_name, key, values, valid in _error_arrays(groups):
        if key == 'iou' or values.ndim < 2:
            continue
        n = values.shape[-1]
        names = list(joint_names) if len(joint_names) == n else \
            [str(x) for x in groups[group_name].get('joint_names', [f'joint{i}' for i in range(n)])]
        if len(names) != n:
            names = [f'joint{i}' for i in range(n)]
        keep = valid.reshape(-1, n).any(0)
        if not keep.any():
            continue
        mean, median, p90 = _per_joint_stats(values, valid)
        idx = np.flatnonzero(keep)
        label_inches = 0.3 + 0.06 * max(len(names[j]) for j in idx)   # 7 pt labels
        fig = _figure(6.0 + label_inches, 1.2 + 0.22 * idx.size, left=label_inches)
        ax = fig.add_subplot()
        y = np.arange(idx.size)
        ax.barh(y, np.where(np.isfinite(mean[idx]), mean[idx], 0), color='C0', label='mean')
        ax.plot(median[idx], y, 'k|', ms=10, label='median')
        ax.plot(p90[idx], y, 'r|', ms=10, label='P90')
        ax.set_yticks(y, [names[j] for j in idx], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(_unit_of(key, groups[group_name], units))
        ax.set_title(f'{group_name}/{key} per joint')
        ax.legend(fontsize=7, loc='lower right')
        ax.grid(axis='x', alpha=0.3)
        name = f'per_joint_{_safe(group_name)}_{_safe(key[len("errors_"):])}.png'
        _save(fig, out_dir / name)
        written.append(name)
    return written


def plot_per_camera(groups, out_dir: Path, camera_names: Sequence[str], units: str) -> List[str]:
    written = []
    for group_name, key, values, valid in _error_arrays(groups):
        labels = groups[group_name].get('camera_labels')
        if labels is None or labels.shape != values.shape[:labels.ndim] or values.ndim < 2:
            continue
        cams = [str(c) for c in groups[group_name].get('camera_names', np.unique(labels))
                if str(c)]
        if not cams:
            continue
        cam_valid = [(valid & (labels == c).reshape(labels.shape + (1,) * (values.ndim -
                                                                         labels.ndim)))
                     for c in cams]
        means = [values[m].mean() if m.any() else np.nan for m in cam_valid]
        medians = [np.median(values[m]) if m.any() else np.nan for m in cam_valid]
        label_inches = 0.3 + 0.05 * max(len(c) for c in cams)   # rotated labels
        fig = _figure(2.0 + 0.8 * len(cams), 3.4 + label_inches,
                      bottom=0.2 + label_inches)
        ax = fig.add_subplot()
        x = np.arange(len(cams))
        ax.bar(x - 0.2, means, width=0.4, label='mean')
        ax.bar(x + 0.2, medians, width=0.4, label='median')
        ax.set_xticks(x, _relabel_cameras(cams, camera_names), rotation=45, ha='right',
                      fontsize=8)
        ax.set_ylabel(_unit_of(key, groups[group_name], units))
        ax.set_title(f'{group_name}/{key} per camera', fontsize=9)
        ax.legend(fontsize=7)
        name = f'per_camera_{_safe(group_name)}_{_safe(key)}.png'
        _save(fig, out_dir / name)
        written.append(name)
    return written


def _pick_3d(groups) -> Optional[Tuple[str, str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    for group_name, g in groups.items():
        if 'gt_keypoints_3d' not in g:
            continue
        for key, pred_key in (('errors_pa_mpjpe', 'pred_keypoints_3d_pa'),
                              ('errors_mpjpe', 'pred_keypoints_3d')):
            if key in g and pred_key in g:
                valid = g.get('valid_' + key[len('errors_'):], ~np.isnan(g[key]))
                return group_name, key, g[key], valid & ~np.isnan(g[key]), \
                    g['gt_keypoints_3d'], g[pred_key]
    return None


def plot_keypoints_3d(groups, path: Path, units: str) -> bool:
    """3D keypoints of the samples at the median, P90 and maximum of the per-sample mean
    error, each keypoint coloured by the percentile of its error among all keypoints."""
    picked = _pick_3d(groups)
    if picked is None:
        return False
    group_name, key, errors, valid, gt, pred = picked
    has = valid.any(-1)
    if not has.any():
        return False
    all_errors = np.sort(errors[valid])
    with np.errstate(invalid='ignore'):
        sample_error = np.where(has, np.where(valid, errors, 0).sum(-1) /
                                np.maximum(valid.sum(-1), 1), np.nan)
    candidates = np.flatnonzero(has)
    order = candidates[np.argsort(sample_error[candidates], kind='stable')]
    picks = []
    for label, q in (('median', 50), ('P90', 90), ('worst', 100)):
        pos = min(len(order) - 1, int(round(q / 100 * (len(order) - 1))))
        picks.append((label, order[pos]))
    meta = groups[group_name]
    unit = _unit_of(key, meta, units)
    fig = _figure(13.0, 4.8, left=0.1, right=0.1, bottom=0.1, top=0.6)
    scatter = None
    for i, (label, s) in enumerate(picks):
        ax = fig.add_subplot(1, len(picks), i + 1, projection='3d')
        ok = np.isfinite(gt[s]).all(-1)
        rank = 100.0 * np.searchsorted(all_errors, errors[s], side='right') / all_errors.size
        for j in np.flatnonzero(ok & np.isfinite(pred[s]).all(-1)):
            ax.plot(*zip(gt[s, j], pred[s, j]), color='0.6', lw=0.8)
        scatter = ax.scatter(*gt[s][ok & valid[s]].T, c=rank[ok & valid[s]], cmap='viridis',
                             vmin=0, vmax=100, s=28, depthshade=False)
        if (ok & ~valid[s]).any():
            ax.scatter(*gt[s][ok & ~valid[s]].T, c='0.8', s=12, depthshade=False)
        fin = np.isfinite(pred[s]).all(-1)
        ax.scatter(*pred[s][fin].T, c='k', marker='x', s=10, depthshade=False)
        who = f'sample {int(meta["sample_idx"][s])}' if 'sample_idx' in meta and \
            int(meta['sample_idx'][s]) >= 0 else f'sample #{s}'
        if 'session' in meta and str(meta['session'][s]):
            who += f' {meta["session"][s]}'
        if 'frame' in meta and int(meta['frame'][s]) >= 0:
            who += f' frame {int(meta["frame"][s])}'
        ax.set_title(f'{label}: {who}\nmean {key[len("errors_"):]} {sample_error[s]:.3g} '
                     f'{unit}', fontsize=8)
        _equal_axes(ax, np.concatenate([gt[s][ok], pred[s][fin]]))
    fig.colorbar(scatter, ax=fig.axes, shrink=0.7, label='error percentile (all keypoints)')
    aligned = ' (Procrustes-aligned)' if key == 'errors_pa_mpjpe' else ''
    fig.suptitle(f'{group_name}: ground truth (dots, coloured by error percentile) and '
                 f'prediction{aligned} (x)', fontsize=9)
    _save(fig, path)
    return True


def _equal_axes(ax, points: np.ndarray) -> None:
    if points.size == 0:
        return
    centre = (points.max(0) + points.min(0)) / 2
    half = max(float((points.max(0) - points.min(0)).max()) / 2, 1e-9)
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(centre[2] - half, centre[2] + half)


# ---------------------------------------------------------------------------- main
def write_report(out_dir: PathLike, results: Mapping[str, Any],
                 raw: Optional[RawArrays] = None,
                 joint_names: Optional[Sequence[str]] = None,
                 camera_names: Optional[Sequence[str]] = None,
                 units: Optional[str] = None, title: str = 'smilfit evaluation',
                 overwrite: bool = False, plots: bool = True) -> Path:
    """Write an evaluation report directory (see the module docstring for its layout).

    Args:
        out_dir: the report directory to create.
        results: flat ``{name: number}`` from the metrics (``Evaluator.evaluate``).
        raw: per-sample arrays, ``{group: {key: array}}`` as from
            :func:`~smilfit.evaluation.collect_raw`, or flat ``{'group/key': array}``.
        joint_names: names for per-joint plots (default: each group's ``joint_names``).
        camera_names: names of the views by index; default labels ``cam<i>`` are shown
            as ``camera_names[i]``.
        units: 3D unit label (default: a group's ``units`` array, else 'unknown').
        title: first line of the summaries.
        overwrite: replace an existing report at ``out_dir`` (only a directory holding a
            ``summary.json``, or an empty one, is ever replaced).
        plots: False writes summaries and raw arrays only.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False, or it is not a
            previous report.
        ValueError: a result is not a number, or a raw array has dtype object.
    """
    out_dir = Path(out_dir)
    metrics = _check_results(results)
    groups = normalize_raw(raw)
    if units is None:
        units = next((str(g['units']) for g in groups.values()
                      if 'units' in g and g['units'].ndim == 0), 'unknown')
    joint_names = [str(n) for n in joint_names] if joint_names is not None else next(
        ([str(n) for n in g['joint_names']] for g in groups.values() if 'joint_names' in g), [])
    camera_names = [str(n) for n in camera_names] if camera_names is not None else []
    # the 2D metrics' pixels where they all say the same
    said = {str(g['pixels']) for g in groups.values() if 'pixels' in g and g['pixels'].ndim == 0}
    pixels = said.pop() if len(said) == 1 else ''
    if out_dir.exists():
        if not overwrite:
            raise FileExistsError(f'{out_dir} exists; pass overwrite=True to replace it')
        if not out_dir.is_dir() or (any(out_dir.iterdir())
                                    and not (out_dir / 'summary.json').is_file()):
            raise FileExistsError(f'{out_dir} exists and is not a smilfit report (no '
                                  f'summary.json); refusing to replace it')
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir, replace=True) as tmp_dir:
        tmp = Path(tmp_dir)
        raw_files: Dict[str, Dict[str, str]] = {}
        for group_name, group in groups.items():
            folder = tmp / 'raw' / _safe(group_name)
            folder.mkdir(parents=True, exist_ok=True)
            for key, array in group.items():
                rel = f'raw/{_safe(group_name)}/{_safe(key)}.npy'
                np.save(tmp / rel, array, allow_pickle=False)
                raw_files.setdefault(group_name, {})[key] = rel
        written: List[str] = []
        if plots:
            if plot_pck_curves(groups, tmp / 'pck_curve.png', camera_names):
                written.append('pck_curve.png')
            if plot_histograms(groups, tmp / 'error_histograms.png', units):
                written.append('error_histograms.png')
            written += plot_per_joint(groups, tmp, joint_names, units)
            written += plot_per_camera(groups, tmp, camera_names, units)
            if plot_keypoints_3d(groups, tmp / 'keypoints_3d_error.png', units):
                written.append('keypoints_3d_error.png')
        (tmp / 'summary.txt').write_text(format_summary(metrics, title, units, joint_names,
                                                        camera_names, pixels) + '\n')
        summary = dict(
            title=title, created=datetime.datetime.now().isoformat(timespec='seconds'),
            smilfit_version=_version(), units=units, pixels=pixels or None,
            metrics={k: _json_number(v) for k, v in metrics.items()},
            non_finite_metrics=sorted(k for k, v in metrics.items() if not math.isfinite(v)),
            joint_names=joint_names, camera_names=camera_names, plots=written,
            raw_files=raw_files)
        (tmp / 'summary.json').write_text(json.dumps(summary, indent=1, allow_nan=False))
    return out_dir


def _version() -> str:
    return str(__version__)
