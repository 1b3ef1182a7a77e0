"""Gathering the raw per-sample arrays of evaluated metrics (for reports / .npy files)."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np


def collect_raw(metrics: Any) -> Dict[str, Dict[str, np.ndarray]]:
    """``{prefix: metric.last_raw}`` for every smilfit metric after an evaluation.

    Args:
        metrics: an mmengine ``Evaluator``, one metric, or a sequence of metrics. Metrics
            without ``last_raw`` (not smilfit's) are skipped.

    Raises:
        RuntimeError: a smilfit metric has not computed anything yet (on non-main ranks
            ``compute_metrics`` never runs: call this on rank 0).
        ValueError: two metrics share a prefix.
    """
    if hasattr(metrics, 'metrics'):          # mmengine Evaluator
        metrics = metrics.metrics
    elif not isinstance(metrics, (list, tuple)):
        metrics = [metrics]
    raw: Dict[str, Dict[str, np.ndarray]] = {}
    for metric in metrics:
        if not hasattr(metric, 'last_raw'):
            continue
        name = metric.prefix or type(metric).__name__
        if metric.last_raw is None:
            raise RuntimeError(f'{type(metric).__name__} (prefix {name!r}) has not been '
                               f'evaluated yet; call evaluate() first, on the main process')
        if name in raw:
            raise ValueError(f'two metrics share the prefix {name!r}; give them distinct '
                             f'prefixes')
        raw[name] = dict(metric.last_raw)
    return raw
