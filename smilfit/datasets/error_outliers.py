"""Which cameras (or keypoints) a fit's errors single out: the rule of the fit report
(:mod:`smilfit.evaluation.fit_quality`), here so that data-side readers of a fit (a fit's
labels for training, :mod:`.fit_labels`) apply the same one.

A group (a camera, a keypoint) is named when its median error is more than ``ratio`` (3)
times the median of the *other* groups' medians, above the 90th percentile of the other
groups' errors, and above ``floor_px`` (1 px: sub-pixel differences are never worth a
warning). Relative to the data: no constant in pixels tuned to a rig.

One far-off group hides another: its errors raise the others' 90th percentile. So the
report also says which groups stand out once the named ones are left out
(:func:`masked_outlier_groups`), a hint to check them too; what a training set leaves out
is :func:`outlier_groups` alone.

Per keypoint, the same rule over the cameras finds labels one camera puts far from where
the others do (:func:`outlier_camera_keypoints`), on enough points to rule out chance
among all the (camera, keypoint) pairs tested (:func:`beyond_chance`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from .error_summary import summary

__all__ = ['error_stats', 'outlier_groups', 'masked_outlier_groups', 'beyond_chance',
           'outlier_camera_keypoints']


def error_stats(errors) -> Dict[str, Any]:
    """Median and 90th percentile (px) and count of the finite ``errors`` (an array, or a
    summary of :mod:`.error_summary`)."""
    e = summary(errors)
    if e.size == 0:
        return dict(median_px=None, p90_px=None, points=0)
    return dict(median_px=e.quantile(0.5), p90_px=e.quantile(0.9), points=e.size)


def outlier_groups(groups: Mapping[str, Any], ratio: float = 3.0,
                   floor_px: float = 1.0) -> List[str]:
    """The names of ``groups`` (name -> errors, px, NaN not observed; or their summaries,
    :mod:`.error_summary`) whose errors stand out of the others' (the module
    docstring's rule)."""
    groups = {name: summary(e) for name, e in groups.items()}
    medians = {name: e.quantile(0.5) if e.size else None for name, e in groups.items()}
    named = []
    for name, median in medians.items():
        others = [m for n, m in medians.items() if n != name and m is not None]
        if median is None or not others:
            continue
        rest = type(groups[name]).combine(e for n, e in groups.items() if n != name)
        p90_rest = rest.quantile(0.9) if rest.size else 0.0
        if median > ratio * float(np.median(others)) and median > p90_rest and \
                median > floor_px:
            named.append(name)
    return named


def masked_outlier_groups(groups: Mapping[str, np.ndarray], ratio: float = 3.0,
                          floor_px: float = 1.0) -> List[str]:
    """The names of ``groups`` that :func:`outlier_groups` names once the groups it named
    are left out, round by round while at least three groups remain (so that a group is
    always compared with two or more others); not those of the first round."""
    left_out = set(outlier_groups(groups, ratio, floor_px))
    masked: List[str] = []
    found = bool(left_out)
    while found:
        rest = {n: e for n, e in groups.items() if n not in left_out}
        if len(rest) < 3:
            break
        found = outlier_groups(rest, ratio, floor_px)
        masked += found
        left_out.update(found)
    return masked


def beyond_chance(errors, rest, tests: int, alpha: float = 0.01) -> bool:
    """Whether a small group's ``errors`` lie beyond the 90th percentile of the ``rest``
    more often than chance allows: a binomial test (each of its n points beyond with
    probability 0.1 if it were like the rest) at level ``alpha`` spread over ``tests``
    groups tested (Bonferroni). A median of a few points can exceed the rest's 90th
    percentile by chance; among many (camera, keypoint) groups, some will. (Arrays, or
    summaries of :mod:`.error_summary`.)"""
    from scipy.stats import binom
    e, r = summary(errors), summary(rest)
    if e.size == 0 or r.size == 0:
        return False
    beyond = e.count_above(r.quantile(0.9))
    return bool(binom.sf(beyond - 1, e.size, 0.1) < alpha / max(int(tests), 1))


def outlier_camera_keypoints(cameras: Mapping[str, np.ndarray], keypoint_names: Sequence[str],
                             ratio: float = 3.0, floor_px: float = 1.0
                             ) -> Dict[str, Dict[str, float]]:
    """``{camera: {keypoint: median px}}``: per keypoint, the cameras of ``cameras``
    (camera -> (views, K) errors, px, NaN not observed; or K arrays, keypoint ``k``'s
    errors in that camera) whose errors on it stand out of
    the other cameras' by the outlier rule, on enough points to rule out chance among all
    the pairs tested (:func:`beyond_chance`: a few frames name nothing); nothing with
    fewer than three cameras (with two, neither can be told to be the one off). Leave
    out the cameras :func:`outlier_groups` names first: their errors would raise the
    others' percentiles."""
    found: Dict[str, Dict[str, float]] = {}
    if len(cameras) < 3:
        return found
    tests = len(cameras) * len(keypoint_names)
    for k, keypoint in enumerate(keypoint_names):
        groups = {n: e[:, k] if isinstance(e, np.ndarray) else e[k]
                  for n, e in cameras.items()}
        groups = {n: summary(e) for n, e in groups.items()}
        for camera in outlier_groups(groups, ratio, floor_px):
            rest = type(groups[camera]).combine(e for n, e in groups.items() if n != camera)
            if beyond_chance(groups[camera], rest, tests):
                found.setdefault(camera, {})[str(keypoint)] = \
                    error_stats(groups[camera])['median_px']
    return found
