"""A minimal validation metric for regressors: mean 2D/3D keypoint error and PCK.

:class:`RegressionKeypointErrorMetric` reads the regressors' predictions and reports the
mean 2D keypoint error (pixels) over visible keypoints of valid views, the PCK at a
pixel threshold, and, when ground truth is present, the mean 3D keypoint error (model
units).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from mmengine.evaluator import BaseMetric

from smilfit.registry import METRICS


@METRICS.register_module()
class RegressionKeypointErrorMetric(BaseMetric):
    """Mean 2D/3D keypoint errors of regressor predictions.

    Args:
        pck_threshold: pixels for ``pck`` (fraction of visible keypoints within it).
        collect_device, prefix: see :class:`mmengine.evaluator.BaseMetric`.
    """

    default_prefix = 'regression'

    def __init__(self, pck_threshold: float = 5.0, collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.pck_threshold = float(pck_threshold)

    def process(self, data_batch: Any, data_samples: Sequence[Dict[str, Any]]) -> None:
        for s in data_samples:
            res = dict(err2d_sum=0.0, n2d=0, hit=0, err3d_sum=0.0, n3d=0)
            if 'gt_keypoints_2d' in s:
                pred, gt = s['pred_keypoints_2d'], s['gt_keypoints_2d'].to(
                    s['pred_keypoints_2d'])
                ok = torch.isfinite(gt).all(-1) & torch.isfinite(pred).all(-1)
                if 'visible' in s:
                    ok &= s['visible'].to(torch.bool)
                if 'view_valid' in s:
                    ok &= s['view_valid'].to(torch.bool)[..., None]
                err = (pred - gt).norm(dim=-1)[ok]
                res.update(err2d_sum=float(err.sum()), n2d=int(err.numel()),
                           hit=int((err <= self.pck_threshold).sum()))
            if 'gt_keypoints_3d' in s:
                pred, gt = s['pred_keypoints_3d'], s['gt_keypoints_3d'].to(
                    s['pred_keypoints_3d'])
                ok = torch.isfinite(gt).all(-1) & torch.isfinite(pred).all(-1)
                err = (pred - gt).norm(dim=-1)[ok]
                res.update(err3d_sum=float(err.sum()), n3d=int(err.numel()))
            self.results.append(res)

    def compute_metrics(self, results: List[Dict[str, Any]]) -> Dict[str, float]:
        n2d = sum(r['n2d'] for r in results)
        n3d = sum(r['n3d'] for r in results)
        out = {}
        if n2d:
            out['kp2d_error_px'] = sum(r['err2d_sum'] for r in results) / n2d
            out['pck'] = sum(r['hit'] for r in results) / n2d
        if n3d:
            out['kp3d_error'] = sum(r['err3d_sum'] for r in results) / n3d
        return out


__all__ = ['RegressionKeypointErrorMetric']
