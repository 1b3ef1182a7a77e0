"""Silhouette IoU between predicted (rendered) and ground-truth masks."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from smilfit.evaluation.functional import masked_percentiles, silhouette_iou
from smilfit.registry import METRICS
from .base import SmilfitMetric, format_number
from .sample_fields import get_array, stack_padded


@METRICS.register_module()
class SilhouetteIoUMetric(SmilfitMetric):
    """Intersection over union of ``pred_masks`` and ``gt_masks`` ``(C, H, W)`` per view.

    Masks are bool, or numbers binarised with ``> threshold`` (soft silhouettes). Each
    sample is reduced to per-view intersection and union counts in ``process`` (the masks
    are not kept). A view counts when its ``mask_valid`` (optional ``(C,)``) and
    ``view_valid`` (optional) are True and its union is not empty (both masks empty:
    IoU undefined).

    Args:
        threshold: binarisation threshold of numeric masks.
        percentiles: reported as ``iou_p{q}`` (low ones show the failures).
        camera_names, per_camera, collect_device, prefix, collect_dir: see
            :class:`~smilfit.evaluation.metrics.base.SmilfitMetric`.

    Metrics (default prefix ``silhouette``): ``iou`` (mean over views), ``iou_median``,
    ``iou_p{q}``, ``num_views``, ``num_samples``, ``per_camera/{cam}/iou``.

    ``last_raw``: ``iou``, ``intersection``, ``union``, ``valid``, ``camera_labels``
    ``(S, C)``, ``camera_names``, ``session``, ``frame``, ``sample_idx``.
    """
    default_prefix = 'silhouette'

    def __init__(self, threshold: float = 0.5, percentiles: Sequence[float] = (10, 25),
                 camera_names: Optional[Sequence[str]] = None, per_camera: bool = True,
                 collect_device: str = 'cpu', prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(camera_names=camera_names, per_joint=False, per_camera=per_camera,
                         collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.threshold = float(threshold)
        self.percentiles = tuple(float(q) for q in percentiles)
        if any(not 0 <= q <= 100 for q in self.percentiles):
            raise ValueError(f'percentiles must lie in [0, 100], got {self.percentiles}')

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Store per-view intersection/union counts and validity."""
        for sample, where, meta in self._iter_samples(data_samples):
            pred = get_array(sample, 'pred_masks', where, ndim=(2, 3), dtype=None)
            gt = get_array(sample, 'gt_masks', where, ndim=(2, 3), dtype=None)
            pred = pred[None] if pred.ndim == 2 else pred
            gt = gt[None] if gt.ndim == 2 else gt
            try:
                result = silhouette_iou(pred, gt, threshold=self.threshold)
            except (ValueError, TypeError) as e:
                raise type(e)(f'{where}: {e}') from None
            num_views = gt.shape[0]
            valid = result.union > 0
            for key in ('mask_valid', 'view_valid'):
                flags = get_array(sample, key, where, ndim=(0, 1), dtype=bool, required=False)
                if flags is not None:
                    if flags.size != num_views:
                        raise ValueError(f'{where}: {key} has {flags.size} entries for '
                                         f'{num_views} views')
                    valid &= flags.reshape(num_views)
            self.results.append(dict(
                intersection=result.intersection, union=result.union, valid=valid,
                camera_labels=self._camera_labels(sample, num_views, where), **meta))

    def compute_metrics(self, results: list) -> dict:
        if not results:
            raise ValueError('no samples were processed; nothing to evaluate')
        intersection = stack_padded([r['intersection'] for r in results], 0)
        union = stack_padded([r['union'] for r in results], 0)
        valid = stack_padded([r['valid'] for r in results], False)
        labels = stack_padded([r['camera_labels'] for r in results], '')
        iou = np.where(valid, intersection / np.maximum(union, 1), np.nan)
        metrics = dict(iou=np.nanmean(iou) if valid.any() else np.nan,
                       iou_median=masked_percentiles(iou, valid, [50])[0])
        for q, value in zip(self.percentiles, masked_percentiles(iou, valid, self.percentiles)):
            metrics[f'iou_p{format_number(q)}'] = value
        metrics['num_views'] = valid.sum()
        metrics['num_samples'] = len(results)
        cameras = self._unique_labels(labels)
        if self.per_camera:
            for cam in cameras:
                cam_valid = valid & (labels == cam)
                metrics[f'per_camera/{cam}/iou'] = (iou[cam_valid].mean() if cam_valid.any()
                                                    else np.nan)
        self.last_raw = dict(iou=iou, intersection=intersection, union=union, valid=valid,
                             camera_labels=labels, camera_names=np.asarray(cameras, dtype=str),
                             **self._meta_arrays(results))
        return {k: float(v) for k, v in metrics.items()}
