"""Held-out-view scores: the fit on k views against DLT triangulation from the same k views,
both scored by their reprojection error in the views left out.

Input, per subset of fitting views: the pixel error of the fit's 3D keypoints and of the
DLT points in every held-out view, ``(N, C, K)`` with NaN where the view is not held out,
the point is not observed there, the fit failed or DLT has fewer than two of the k views.
Output, per k and for all held-out views together, per held-out camera and per keypoint:

- ``fit_median_px`` / ``dlt_median_px``: the median error over the points *both* give
  (pooled over subsets, frames and keypoints), so the two are compared on the same points;
- ``fit_p90_px`` / ``dlt_p90_px``: the 90th percentile on the same points (the tail a
  median hides: a few frames far off);
- ``fit_all_median_px`` / ``points_all``: the fit's median over every held-out observed
  point, including those DLT cannot triangulate (a fit always gives a point);
- ``fit_worst`` / ``dlt_worst``: the subset with the largest median (on the common points)
  and that median;
- ``fit_wins`` of ``compared_subsets``: the subsets whose fit median is strictly below
  their DLT median.

Where the subsets also give other methods' errors (``methods_px``, e.g. anipose's
triangulations beside the fit and DLT) and 3D errors against a reference
(``methods_3d``), ``methods`` compares every method on the points *all* of them give:
``methods = dict(px=dict(points, by={method: dict(median, p90)}), world=...)`` (3D in
world units).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ['holdout_summary', 'format_holdout']


def _median(x: np.ndarray) -> Optional[float]:
    return float(np.median(x)) if x.size else None


def _p90(x: np.ndarray) -> Optional[float]:
    return float(np.percentile(x, 90)) if x.size else None


def _group(per_subset: List[Dict[str, Any]], views: List[List[str]]) -> Dict[str, Any]:
    """Stats of one group (all / a camera / a keypoint) from its per-subset errors."""
    fit = np.concatenate([s['fit'] for s in per_subset]) if per_subset else np.zeros(0)
    dlt = np.concatenate([s['dlt'] for s in per_subset]) if per_subset else np.zeros(0)
    fit_all = np.concatenate([s['fit_all'] for s in per_subset]) if per_subset else np.zeros(0)
    out = dict(fit_median_px=_median(fit), dlt_median_px=_median(dlt),
               fit_p90_px=_p90(fit), dlt_p90_px=_p90(dlt),
               fit_all_median_px=_median(fit_all), points=int(fit.size),
               points_all=int(fit_all.size), fit_worst=None, dlt_worst=None, fit_wins=0,
               compared_subsets=0)
    for which in ('fit', 'dlt'):
        medians = [(_median(s[which]), i) for i, s in enumerate(per_subset) if s[which].size]
        if medians:
            value, i = max(medians)
            out[f'{which}_worst'] = dict(views=views[i], median_px=value)
    for s in per_subset:
        if s['fit'].size:
            out['compared_subsets'] += 1
            out['fit_wins'] += int(np.median(s['fit']) < np.median(s['dlt']))
    return out


def _methods_group(subsets: Sequence[Mapping[str, Any]], key: str
                   ) -> Optional[Dict[str, Any]]:
    """Every method's median and p90 on the points all methods give (pooled over subsets)."""
    if not subsets or not all(key in s for s in subsets):
        return None
    methods = list(subsets[0][key])
    pooled: Dict[str, list] = {m: [] for m in methods}
    for s in subsets:
        if list(s[key]) != methods:
            raise ValueError(f'subset {s["views"]}: {key} has methods {list(s[key])}, '
                             f'expected {methods}')
        errors = [np.asarray(s[key][m], np.float64) for m in methods]
        common = np.logical_and.reduce([np.isfinite(e) for e in errors])
        for m, e in zip(methods, errors):
            pooled[m].append(e[common])
    values = {m: np.concatenate(v) for m, v in pooled.items()}
    return dict(points=int(values[methods[0]].size),
                by={m: dict(median=_median(v), p90=_p90(v)) for m, v in values.items()})


def _exchange_counts(subsets: Sequence[Mapping[str, Any]]) -> Optional[Dict[str, int]]:
    """The subsets' left/right exchanges summed (``made``, ``found``, ``wrong``), or None
    where they are not known."""
    counts = [s['exchanges'] for s in subsets if s.get('exchanges') is not None]
    if not counts:
        return None
    return {key: int(sum(c[key] for c in counts)) for key in ('made', 'found', 'wrong')}


def holdout_summary(subsets: Sequence[Mapping[str, Any]], keypoint_names: Sequence[str],
                    camera_order: Sequence[str] = ()) -> Dict[str, Any]:
    """Summarise the held-out errors of the subsets of one k.

    Args:
        subsets: one mapping per subset with ``views`` (the k fitting camera names),
            ``fit_px`` and ``dlt_px`` (N, C, K) held-out pixel errors (NaN where not
            scored, module docstring), ``camera_names`` (N, C) the camera of each sample's
            view slots, and optionally ``failed_samples`` (int), ``methods_px`` ({method:
            (N, C, K)} held-out pixel errors of every method compared, the fit and DLT
            included) and ``methods_3d`` ({method: (N, K)} 3D distances to a reference,
            world units), ``exchanges`` (dict(made, found, wrong): left/right exchanges
            the added noise made in the fitting views, how many of them the fit found,
            how many it made that were not made).
        keypoint_names: (K,) names.
        camera_order: the order of the per-camera rows (cameras not named follow in the
            order they appear).

    Returns:
        ``dict(subsets=[per subset: views, held_out, fit_median_px, dlt_median_px,
        fit_p90_px, dlt_p90_px, fit_all_median_px, points, points_all, failed_samples,
        fit_wins, cameras={held-out camera: dict(fit_median_px, dlt_median_px, fit_p90_px,
        dlt_p90_px, points)}],
        all=group, cameras={name: group}, keypoints={name: group}, methods=dict(px, world))``,
        a group as in the module docstring (``methods``' entries None where the subsets do
        not give them); medians are None where there is no point.
    """
    names = list(keypoint_names)
    views = [list(s['views']) for s in subsets]
    cameras: Dict[str, None] = {}
    order = {str(c): i for i, c in enumerate(camera_order)}
    flat = []
    for s in subsets:
        fit = np.asarray(s['fit_px'], np.float64)
        dlt = np.asarray(s['dlt_px'], np.float64)
        cams = np.asarray(s['camera_names'], dtype=object)
        if fit.shape != dlt.shape or fit.shape[:2] != cams.shape or fit.shape[2] != len(names):
            raise ValueError(f'subset {s["views"]}: fit_px {fit.shape}, dlt_px {dlt.shape} and '
                             f'camera_names {cams.shape} do not match {len(names)} keypoints')
        scored = np.isfinite(fit)
        common = scored & np.isfinite(dlt)
        cam_of = np.broadcast_to(cams[..., None], fit.shape)
        kp_of = np.broadcast_to(np.arange(len(names)), fit.shape)
        for name in cams[scored.any(-1)]:
            cameras.setdefault(str(name), None)
        flat.append(dict(fit=fit[common], dlt=dlt[common], fit_all=fit[scored],
                         cam=cam_of[common].astype(str), kp=kp_of[common],
                         cam_all=cam_of[scored].astype(str), kp_all=kp_of[scored]))

    def select(cam: Optional[str] = None, kp: Optional[int] = None) -> List[Dict[str, Any]]:
        out = []
        for f in flat:
            m = np.ones(f['fit'].shape, bool)
            m_all = np.ones(f['fit_all'].shape, bool)
            if cam is not None:
                m, m_all = m & (f['cam'] == cam), m_all & (f['cam_all'] == cam)
            if kp is not None:
                m, m_all = m & (f['kp'] == kp), m_all & (f['kp_all'] == kp)
            out.append(dict(fit=f['fit'][m], dlt=f['dlt'][m], fit_all=f['fit_all'][m_all]))
        return out

    cameras = dict.fromkeys(sorted(cameras, key=lambda c: order.get(c, len(order))))
    per_subset = []
    for s, v, f in zip(subsets, views, flat):
        held = [c for c in cameras if c in set(f['cam_all'].tolist())]
        by_camera = {c: dict(fit_median_px=_median(f['fit'][f['cam'] == c]),
                             dlt_median_px=_median(f['dlt'][f['cam'] == c]),
                             fit_p90_px=_p90(f['fit'][f['cam'] == c]),
                             dlt_p90_px=_p90(f['dlt'][f['cam'] == c]),
                             points=int((f['cam'] == c).sum())) for c in held}
        per_subset.append(dict(views=v, held_out=held, fit_median_px=_median(f['fit']),
                               dlt_median_px=_median(f['dlt']), fit_p90_px=_p90(f['fit']),
                               dlt_p90_px=_p90(f['dlt']),
                               fit_all_median_px=_median(f['fit_all']),
                               points=int(f['fit'].size), points_all=int(f['fit_all'].size),
                               failed_samples=int(s.get('failed_samples', 0)),
                               cameras=by_camera,
                               fit_wins=bool(f['fit'].size and
                                             np.median(f['fit']) < np.median(f['dlt']))))
    return dict(subsets=per_subset, all=_group(select(), views),
                cameras={c: _group(select(cam=c), views) for c in cameras},
                keypoints={n: _group(select(kp=j), views) for j, n in enumerate(names)},
                methods=dict(px=_methods_group(subsets, 'methods_px'),
                             world=_methods_group(subsets, 'methods_3d')),
                exchanges=_exchange_counts(subsets))


def _px(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{value:.2f}'


def _worst(group: Mapping[str, Any], which: str) -> str:
    w = group[f'{which}_worst']
    return 'n/a' if w is None else f'{w["median_px"]:.2f} ({"+".join(w["views"])})'


def format_holdout(report: Mapping[str, Any]) -> str:
    """The report of :func:`smilfit.apis.holdout.evaluate_holdout_views` as a text table."""
    lines = [f'Held-out-view evaluation of {report["config"]} on {report["dataset"]}'
             + (f'; fitted labels with added errors: {report["noise"]["description"]}, '
                'scored against the labels as they were' if report.get('noise') else ''),
             f'{report["samples"]} samples (frames); fitting views '
             f'{", ".join(report["views"])}',
             'Reprojection error (px) in the held-out views: the fit on k views vs DLT '
             'triangulation from the same k views, on the points both give (median and '
             '90th percentile); "fit all" counts every held-out point (DLT needs 2 of the '
             'k views).']
    header = (f'  {"held out":<18}{"fit med":>9}{"DLT med":>9}{"fit p90":>9}{"DLT p90":>9}'
              f'{"fit wins":>10}   '
              f'{"fit worst subset":<28}{"DLT worst subset":<28}{"fit all":>8}{"points":>8}')
    for k, block in report['k'].items():
        sel = block['selection']
        lines.append('')
        lines.append(f'k = {k}: {sel["count"]} of {sel["total"]} subsets'
                     + (f' (random sample, seed {sel["seed"]})' if sel['sampled'] else '')
                     + f'; failed samples: {sum(s["failed_samples"] for s in block["subsets"])}')
        # every view fitted (k = n): nothing held out, the methods in 3D only
        held_out = bool(block['all']['points_all'])
        if held_out:
            lines.append(header)
        else:
            lines.append('  every view fitted, none held out: 3D only')
        rows = [('all', block['all'])] + list(block['cameras'].items()) + [
            (f'kp {n}', g) for n, g in block['keypoints'].items()]
        for name, g in rows if held_out else []:
            wins = f'{g["fit_wins"]} of {g["compared_subsets"]}'
            lines.append(f'  {name[:18]:<18}{_px(g["fit_median_px"]):>9}'
                         f'{_px(g["dlt_median_px"]):>9}{_px(g["fit_p90_px"]):>9}'
                         f'{_px(g["dlt_p90_px"]):>9}{wins:>10}   '
                         f'{_worst(g, "fit")[:27]:<28}{_worst(g, "dlt")[:27]:<28}'
                         f'{_px(g["fit_all_median_px"]):>8}{g["points"]:>8}')
        methods = block.get('methods') or {}
        for unit, what in (('px', 'held-out px'), ('world', f'3D distance to '
                                                          f'{report.get("reference_3d")}')):
            group = methods.get(unit)
            if group:
                lines.append(f'  every method on the {group["points"]} points all give, '
                             f'{what}: ' + '; '.join(
                                 f'{m} {_px(v["median"])} ({_px(v["p90"])})'
                                 for m, v in group['by'].items()))
        exchanges = block.get('exchanges')
        if exchanges:
            lines.append(f'  left/right exchanges made in the fitting views: '
                         f'{exchanges["made"]}; found by the fit: {exchanges["found"]}; '
                         f'exchanged by the fit where none was made: {exchanges["wrong"]}')
        if not held_out:
            continue
        lines.append('  per subset: fit / DLT median (p90) px, all held-out views, then each '
                     'held-out camera:')
        for s in block['subsets']:
            cams = '; '.join(f'{c} {_px(v["fit_median_px"])} ({_px(v["fit_p90_px"])}) / '
                             f'{_px(v["dlt_median_px"])} ({_px(v["dlt_p90_px"])})'
                             for c, v in s['cameras'].items())
            both = (f'{_px(s["fit_median_px"])} ({_px(s["fit_p90_px"])}) / '
                    f'{_px(s["dlt_median_px"])} ({_px(s["dlt_p90_px"])})')
            lines.append(f'    {"+".join(s["views"]):<26}{both:<26}{cams}'
                         + (f' ({s["failed_samples"]} samples failed)'
                            if s['failed_samples'] else ''))
    return '\n'.join(lines)
