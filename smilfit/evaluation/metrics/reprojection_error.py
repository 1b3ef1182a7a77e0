"""Reprojection (2D keypoint) error in pixels, overall, per camera and per joint."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from smilfit.evaluation.functional import masked_percentiles, weighted_mean
from smilfit.evaluation.functional.statistics import per_column_percentile
from smilfit.registry import METRICS
from .base import SmilfitMetric, format_number
from .keypoint_records import check_pixels, stack_keypoint_records


@METRICS.register_module()
class ReprojectionErrorMetric(SmilfitMetric):
    """Pixel distance between predicted (reprojected) and ground-truth 2D keypoints.

    Same inputs and validity rules as :class:`KeypointPCKMetric`. Means are weighted by
    the joint weights; medians and percentiles are over the valid keypoints with a
    weight > 0, each counted once.

    Args:
        percentiles: reported as ``p{q}`` (0-100).
        nonfinite_pred: ``'raise'``, ``'miss'`` (error = inf, so means become inf) or
            ``'ignore'``; see :class:`KeypointPCKMetric`.
        pixels: ``'input'`` (default: the images the model read) or ``'source'`` (the
            recording's images, through each view's ``crop``: errors of crops of any size
            in the same pixels as a fit's).
        Others: see :class:`~smilfit.evaluation.metrics.base.SmilfitMetric`.

    Metrics (default prefix ``reproj``): ``mean``, ``median``, ``p{q}``,
    ``num_keypoints``, ``num_samples``, ``num_missing_predictions``, ``per_camera/{cam}/mean``,
    ``per_camera/{cam}/median``, ``per_joint/{name}/mean``, ``per_joint/{name}/median``.

    ``last_raw``: ``errors_px (S, C, N)``, ``valid (S, C, N)`` (False for weight-0
    joints), ``pred_missing (S, C, N)``, ``camera_labels (S, C)``, ``camera_names (Cu,)``,
    ``pixels`` (``'input'`` or ``'source'``),
    ``joint_names``, ``joint_weights``, ``session``, ``frame``, ``sample_idx``.
    """
    default_prefix = 'reproj'

    def __init__(self, percentiles: Sequence[float] = (50, 75, 90, 95, 99),
                 nonfinite_pred: str = 'raise', pixels: str = 'input',
                 ignore_joints: Sequence[Union[int, str]] = (),
                 joint_weights: Union[None, Sequence[float], Mapping[str, float]] = None,
                 joint_names: Optional[Sequence[str]] = None,
                 camera_names: Optional[Sequence[str]] = None,
                 per_joint: bool = True, per_camera: bool = True,
                 collect_device: str = 'cpu', prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(ignore_joints=ignore_joints, joint_weights=joint_weights,
                         joint_names=joint_names, camera_names=camera_names,
                         per_joint=per_joint, per_camera=per_camera,
                         collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.percentiles = tuple(float(q) for q in percentiles)
        if any(not 0 <= q <= 100 for q in self.percentiles):
            raise ValueError(f'percentiles must lie in [0, 100], got {self.percentiles}')
        self.nonfinite_pred = self._check_nonfinite_policy(nonfinite_pred)
        self.pixels = check_pixels(pixels)

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Store per-sample pixel errors, validity and camera labels."""
        self._process_keypoints_2d(data_samples, pixels=self.pixels)

    def compute_metrics(self, results: list) -> dict:
        data = stack_keypoint_records(results)
        errors, labels = data['errors'], data['camera_labels']
        names, weights = self._joint_setup(errors.shape[-1])
        valid = data['valid'] & (weights > 0)
        metrics = dict(mean=weighted_mean(errors, valid, weights),
                       median=masked_percentiles(errors, valid, [50])[0])
        for q, value in zip(self.percentiles, masked_percentiles(errors, valid,
                                                                 self.percentiles)):
            metrics[f'p{format_number(q)}'] = value
        metrics['num_keypoints'] = valid.sum()
        metrics['num_samples'] = errors.shape[0]
        metrics['num_missing_predictions'] = (data['pred_missing']
                                              & (weights > 0)).sum()
        cameras = self._unique_labels(labels)
        if self.per_camera:
            for cam in cameras:
                cam_valid = valid & (labels == cam)[..., None]
                metrics[f'per_camera/{cam}/mean'] = weighted_mean(errors, cam_valid, weights)
                metrics[f'per_camera/{cam}/median'] = masked_percentiles(errors, cam_valid,
                                                                         [50])[0]
        if self.per_joint:
            joint_mean = weighted_mean(errors, data['valid'], axis=(0, 1))
            joint_median = per_column_percentile(errors.reshape(-1, errors.shape[-1]),
                                                 data['valid'].reshape(-1, errors.shape[-1]), 50)
            for j in np.flatnonzero(weights > 0):
                metrics[f'per_joint/{names[j]}/mean'] = joint_mean[j]
                metrics[f'per_joint/{names[j]}/median'] = joint_median[j]
        self.last_raw = dict(
            errors_px=errors, valid=valid, pred_missing=data['pred_missing'],
            camera_labels=labels,
            camera_names=np.asarray(cameras, dtype=str), joint_names=np.asarray(names, dtype=str),
            joint_weights=weights, pixels=np.asarray(self.pixels), **self._meta_arrays(results))
        return {k: float(v) for k, v in metrics.items()}
