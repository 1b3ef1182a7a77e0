"""PCK of 2D keypoints: absolute pixel thresholds, bounding-box-normalised thresholds,
and the PCK curve with its AUC."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from smilfit.evaluation.functional import curve_auc, pck_curve
from smilfit.evaluation.functional.keypoints_2d import BBOX_SIZE_MODES
from smilfit.registry import METRICS
from .base import SmilfitMetric, format_number
from .keypoint_records import check_pixels, stack_keypoint_records


@METRICS.register_module()
class KeypointPCKMetric(SmilfitMetric):
    """Percentage of correct 2D keypoints over all views of all samples.

    A keypoint is *correct* at threshold ``t`` when its pixel error is ``<= t``
    (normalised: ``error / bbox_size <= a``). Only valid keypoints count: visible, with
    finite ground truth, in a valid view, with a joint weight > 0; each counts with its
    joint weight. Views without a usable bounding-box size (no ``bbox`` and fewer than two
    valid keypoints) are left out of the normalised PCK only.

    Reads ``pred_keypoints_2d``/``gt_keypoints_2d`` ``(C, N, 2)``, ``visible (C, N)``,
    optional ``bbox (C, 4)``, ``view_valid (C,)``, ``camera_names (C,)``.

    Args:
        thresholds_px: absolute thresholds, reported as ``pck@{t}px``.
        normalized_thresholds: fractions of the bounding-box size, reported as
            ``pck@{a}bbox``.
        curve_min_px, curve_max_px, curve_step_px: the PCK curve is sampled at
            ``curve_min_px, curve_min_px + step, ..., curve_max_px``; its normalised area
            (trapezoidal, divided by the range, in [0, 1]) is
            ``pck_auc@{min}-{max}px``.
        bbox_size_mode: ``'max'`` (max of width and height), ``'diagonal'``,
            ``'sqrt_area'``.
        per_joint_threshold_px: the threshold of the per-joint values
            ``per_joint/{name}/pck@{t}px`` and per-camera values
            ``per_camera/{cam}/pck@{t}px``; default: the middle of ``thresholds_px``.
        nonfinite_pred: what to do with a NaN/inf prediction where the ground truth is
            valid (and the joint's weight > 0): ``'raise'`` (default), ``'miss'`` (an
            incorrect keypoint) or ``'ignore'`` (left out); all counted in
            ``num_missing_predictions``.
        pixels: ``'input'`` (default: the images the model read) or ``'source'`` (the
            recording's images, through each view's ``crop``: errors of crops of any size
            in the same pixels as a fit's; thresholds are then in source pixels).
        Others: see :class:`~smilfit.evaluation.metrics.base.SmilfitMetric`.

    Metrics (before mmengine adds ``prefix/``, default prefix ``kp2d``): ``pck@{t}px``,
    ``pck@{a}bbox``, ``pck_auc@{min}-{max}px``, ``num_keypoints``,
    ``num_keypoints_bbox``, ``num_samples``, ``num_missing_predictions``, and per
    camera/joint as above plus ``per_camera/{cam}/pck_auc@{min}-{max}px``.

    ``last_raw``: ``errors_px (S, C, N)`` (NaN invalid), ``valid (S, C, N)`` (also False for
    joints with weight 0), ``pred_missing (S, C, N)``, ``bbox_size (S, C)``,
    ``camera_labels (S, C)``, ``camera_names (Cu,)``,
    ``joint_names (N,)``, ``joint_weights (N,)``, ``pck_curve_thresholds_px (T,)``,
    ``pck_curve (T,)``, ``pck_curve_per_camera (Cu, T)``, ``pck_curve_per_joint (N, T)``,
    ``pixels`` (``'input'`` or ``'source'``),
    ``session``, ``frame``, ``sample_idx`` ``(S,)``.
    """
    default_prefix = 'kp2d'

    def __init__(self, thresholds_px: Sequence[float] = (5, 10, 20),
                 normalized_thresholds: Sequence[float] = (0.05, 0.1),
                 curve_max_px: float = 50, curve_min_px: float = 1,
                 curve_step_px: float = 1, bbox_size_mode: str = 'max',
                 per_joint_threshold_px: Optional[float] = None,
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
        self.thresholds_px = tuple(float(t) for t in thresholds_px)
        self.normalized_thresholds = tuple(float(a) for a in normalized_thresholds)
        if any(t <= 0 for t in self.thresholds_px + self.normalized_thresholds):
            raise ValueError(f'PCK thresholds must be > 0, got {self.thresholds_px} and '
                             f'{self.normalized_thresholds}')
        if not (0 <= curve_min_px < curve_max_px and curve_step_px > 0):
            raise ValueError(f'PCK curve needs 0 <= curve_min_px < curve_max_px and a positive '
                             f'step, got {curve_min_px}, {curve_max_px}, {curve_step_px}')
        count = int(np.floor((curve_max_px - curve_min_px) / curve_step_px + 1e-9)) + 1
        self.curve_thresholds_px = curve_min_px + curve_step_px * np.arange(count, dtype=float)
        self.auc_name = (f'pck_auc@{format_number(curve_min_px)}-'
                         f'{format_number(self.curve_thresholds_px[-1])}px')
        if bbox_size_mode not in BBOX_SIZE_MODES:
            raise ValueError(f'bbox_size_mode {bbox_size_mode!r} is not one of '
                             f'{BBOX_SIZE_MODES}')
        self.bbox_size_mode = bbox_size_mode
        if per_joint_threshold_px is None:
            if not self.thresholds_px:
                raise ValueError('per_joint_threshold_px is needed when thresholds_px is empty')
            per_joint_threshold_px = self.thresholds_px[len(self.thresholds_px) // 2]
        self.per_joint_threshold_px = float(per_joint_threshold_px)
        self.nonfinite_pred = self._check_nonfinite_policy(nonfinite_pred)
        self.pixels = check_pixels(pixels)

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Store per-sample errors, validity, bounding-box sizes and camera labels."""
        self._process_keypoints_2d(data_samples, with_bbox=True,
                                   bbox_size_mode=self.bbox_size_mode, pixels=self.pixels)

    def compute_metrics(self, results: list) -> dict:
        data = stack_keypoint_records(results)
        errors, labels = data['errors'], data['camera_labels']
        names, weights = self._joint_setup(errors.shape[-1])
        valid = data['valid'] & (weights > 0)
        norm = data['bbox_size'][..., None]
        metrics = {}
        # One pass per grouping, with every threshold of that grouping at once.
        curve_thr = self.curve_thresholds_px
        num_abs = len(self.thresholds_px)
        overall = pck_curve(errors, valid, np.concatenate([self.thresholds_px, curve_thr]),
                            weights)
        for t, value in zip(self.thresholds_px, overall[:num_abs]):
            metrics[f'pck@{format_number(t)}px'] = value
        if self.normalized_thresholds:
            normalized = pck_curve(errors, valid, self.normalized_thresholds, weights, norm=norm)
            for a, value in zip(self.normalized_thresholds, normalized):
                metrics[f'pck@{format_number(a)}bbox'] = value
        curve = overall[num_abs:]
        metrics[self.auc_name] = curve_auc(curve_thr, curve)
        metrics['num_keypoints'] = valid.sum()
        metrics['num_keypoints_bbox'] = (valid & (np.isfinite(norm) & (norm > 0))).sum()
        metrics['num_samples'] = errors.shape[0]
        metrics['num_missing_predictions'] = (data['pred_missing']
                                              & (weights > 0)).sum()

        thr_name = f'pck@{format_number(self.per_joint_threshold_px)}px'
        with_thr = np.concatenate([[self.per_joint_threshold_px], curve_thr])
        cameras = self._unique_labels(labels)
        per_camera = (np.stack([pck_curve(errors, valid & (labels == cam)[..., None], with_thr,
                                          weights) for cam in cameras])
                      if cameras else np.zeros((0, with_thr.size)))
        per_camera_curves = per_camera[:, 1:]
        if self.per_camera:
            for cam, values in zip(cameras, per_camera):
                metrics[f'per_camera/{cam}/{thr_name}'] = values[0]
                metrics[f'per_camera/{cam}/{self.auc_name}'] = curve_auc(curve_thr, values[1:])
        per_joint = pck_curve(errors, data['valid'], with_thr, axis=(0, 1))         # (N, 1+T)
        per_joint_curves = per_joint[:, 1:]
        if self.per_joint:
            for j in np.flatnonzero(weights > 0):
                metrics[f'per_joint/{names[j]}/{thr_name}'] = per_joint[j, 0]

        self.last_raw = dict(
            errors_px=errors, valid=valid, pred_missing=data['pred_missing'],
            bbox_size=data['bbox_size'], camera_labels=labels,
            camera_names=np.asarray(cameras, dtype=str), joint_names=np.asarray(names, dtype=str),
            joint_weights=weights, pck_curve_thresholds_px=self.curve_thresholds_px.copy(),
            pck_curve=curve, pck_curve_per_camera=per_camera_curves,
            pck_curve_per_joint=per_joint_curves, pixels=np.asarray(self.pixels),
            **self._meta_arrays(results))
        return {k: float(v) for k, v in metrics.items()}
