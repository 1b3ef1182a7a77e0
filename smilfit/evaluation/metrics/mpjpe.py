"""MPJPE of 3D keypoints: raw, root-aligned and Procrustes-aligned (PA-MPJPE)."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from smilfit.evaluation.functional import joint_errors_3d, masked_percentiles, weighted_mean
from smilfit.evaluation.functional.keypoints_3d import ALIGNMENTS, procrustes_align
from smilfit.registry import METRICS
from .base import SmilfitMetric, format_number
from .joint_selection import resolve_joint_index
from .sample_fields import get_array

#: Metric name of each alignment.
ALIGNMENT_NAMES = dict(none='mpjpe', root='mpjpe_root', procrustes='pa_mpjpe')


@METRICS.register_module()
class MPJPEMetric(SmilfitMetric):
    """Mean per-joint position error of 3D keypoints, in the dataset's units.

    Reads ``pred_keypoints_3d`` and ``gt_keypoints_3d`` ``(N, 3)`` (gt NaN = missing) and
    optional ``visible_3d (N,)`` bool. Errors are Euclidean distances multiplied by
    ``scale`` (e.g. 1000 to report metres in mm). Means are over all valid (sample,
    joint) pairs weighted by the joint weights (every keypoint counts, so samples with
    more visible joints weigh more); percentiles are over the same pairs, unweighted.

    Alignments:

    - ``'none'`` -> ``mpjpe``: no alignment.
    - ``'root'`` -> ``mpjpe_root``: both skeletons translated so that joint ``root_index``
      is at the origin; the root joint itself (error 0 by construction) and samples whose
      root is missing are left out.
    - ``'procrustes'`` -> ``pa_mpjpe``: the prediction is mapped onto the ground truth by
      the best similarity transform (rotation, translation, and scale unless
      ``procrustes_scale=False``) fitted on the sample's valid joints with weight > 0;
      samples with fewer than 3 such joints are left out.

    Args:
        alignments: any of ``'none', 'root', 'procrustes'``.
        root_index: root joint, an index or a joint name.
        units: label of the unit (reports, docs); default: the dataset's ``units``
            metainfo, else ``'unknown'``.
        scale: factor applied to all errors (unit conversion).
        percentiles: reported as ``{name}_p{q}``.
        nonfinite_pred: a NaN/inf prediction where the ground truth is valid (the
            regressors predict NaN for data keypoints no model keypoint matches):
            ``'raise'`` (default), ``'miss'`` (error = inf) or ``'ignore'`` (the joint
            is left out of that sample); counted in ``num_missing_predictions``.
        Others: see :class:`~smilfit.evaluation.metrics.base.SmilfitMetric`.

    Metrics (default prefix ``kp3d``), for each alignment name: ``{name}``,
    ``{name}_p{q}``, ``{name}_num_keypoints``, ``{name}_num_samples`` (samples with at least
    one evaluated joint), ``per_joint/{joint}/{name}``; and ``num_samples``,
    ``num_missing_predictions``.

    ``last_raw``: ``errors_{name} (S, N)`` and ``valid_{name} (S, N)`` per alignment,
    ``gt_keypoints_3d``, ``pred_keypoints_3d`` ``(S, N, 3)``, ``pred_missing (S, N)``,
    ``pred_keypoints_3d_pa`` (the Procrustes-aligned prediction, with 'procrustes'),
    ``units`` (0-d str),
    ``joint_names``, ``joint_weights``, ``session``, ``frame``, ``sample_idx``.
    """
    default_prefix = 'kp3d'

    def __init__(self, alignments: Sequence[str] = ('none', 'root', 'procrustes'),
                 root_index: Union[int, str] = 0, units: Optional[str] = None,
                 scale: float = 1.0,
                 percentiles: Sequence[float] = (50, 75, 90, 95, 99),
                 procrustes_scale: bool = True, nonfinite_pred: str = 'raise',
                 ignore_joints: Sequence[Union[int, str]] = (),
                 joint_weights: Union[None, Sequence[float], Mapping[str, float]] = None,
                 joint_names: Optional[Sequence[str]] = None,
                 per_joint: bool = True,
                 collect_device: str = 'cpu', prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(ignore_joints=ignore_joints, joint_weights=joint_weights,
                         joint_names=joint_names, per_joint=per_joint, per_camera=False,
                         collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        alignments = tuple(alignments)
        unknown = [a for a in alignments if a not in ALIGNMENTS]
        if unknown or not alignments:
            raise ValueError(f'alignments {list(alignments)} must be a non-empty subset of '
                             f'{ALIGNMENTS}')
        self.alignments = alignments
        self.root_index = root_index
        self.units = units
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f'scale must be a positive number, got {scale}')
        self.scale = float(scale)
        self.percentiles = tuple(float(q) for q in percentiles)
        if any(not 0 <= q <= 100 for q in self.percentiles):
            raise ValueError(f'percentiles must lie in [0, 100], got {self.percentiles}')
        self.procrustes_scale = bool(procrustes_scale)
        self.nonfinite_pred = self._check_nonfinite_policy(nonfinite_pred)

    @property
    def resolved_units(self) -> str:
        """The unit label: ``units``, else the dataset's ``units`` metainfo, else 'unknown'."""
        if self.units is not None:
            return str(self.units)
        return str((self.dataset_meta or {}).get('units', 'unknown'))

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Store each sample's predicted and ground-truth 3D keypoints (float64)."""
        for sample, where, meta in self._iter_samples(data_samples):
            pred = get_array(sample, 'pred_keypoints_3d', where, ndim=(2,), last=3)
            gt = get_array(sample, 'gt_keypoints_3d', where, ndim=(2,), last=3)
            if pred.shape != gt.shape:
                raise ValueError(f'{where}: pred_keypoints_3d {pred.shape} and '
                                 f'gt_keypoints_3d {gt.shape} differ in shape')
            visible = get_array(sample, 'visible_3d', where, ndim=(1,), dtype=bool,
                                required=False)
            if visible is not None and visible.shape != gt.shape[:1]:
                raise ValueError(f'{where}: visible_3d has shape {visible.shape}, expected '
                                 f'{gt.shape[:1]}')
            if visible is not None:
                gt = np.where(visible[:, None], gt, np.nan)
            missing = np.isfinite(gt).all(-1) & ~np.isfinite(pred).all(-1)
            self._apply_nonfinite_policy(missing, 'pred_keypoints_3d', where)
            self.results.append(dict(pred=pred, gt=gt, **meta))

    def compute_metrics(self, results: list) -> dict:
        if not results:
            raise ValueError('no samples were processed; nothing to evaluate')
        shapes = {r['gt'].shape for r in results}
        if len(shapes) > 1:
            raise ValueError(f'3D keypoints of the samples differ in shape: {sorted(shapes)}')
        pred = np.stack([r['pred'] for r in results]) * self.scale        # (S, N, 3)
        gt = np.stack([r['gt'] for r in results]) * self.scale
        names, weights = self._joint_setup(gt.shape[1])
        root = resolve_joint_index(self.root_index, names, 'root_index')
        use = weights > 0
        missing = np.isfinite(gt).all(-1) & ~np.isfinite(pred).all(-1)      # (S, N)
        gt_raw = gt
        if self.nonfinite_pred == 'ignore':
            gt = np.where(missing[..., None], np.nan, gt)
        metrics, raw = {}, {}
        for alignment in self.alignments:
            name = ALIGNMENT_NAMES[alignment]
            errors, valid = joint_errors_3d(pred, gt, alignment=alignment, root_index=root,
                                            align_mask=use,
                                            procrustes_scale=self.procrustes_scale)
            valid &= use
            metrics[name] = weighted_mean(errors, valid, weights)
            for q, value in zip(self.percentiles,
                                masked_percentiles(errors, valid, self.percentiles)):
                metrics[f'{name}_p{format_number(q)}'] = value
            metrics[f'{name}_num_keypoints'] = valid.sum()
            metrics[f'{name}_num_samples'] = valid.any(-1).sum()
            if self.per_joint:
                joint_mean = weighted_mean(errors, valid, axis=0)
                for j in np.flatnonzero(use):
                    if not (alignment == 'root' and j == root):   # 0 by construction
                        metrics[f'per_joint/{names[j]}/{name}'] = joint_mean[j]
            raw[f'errors_{name}'] = errors
            raw[f'valid_{name}'] = valid
        metrics['num_samples'] = gt.shape[0]
        metrics['num_missing_predictions'] = (missing & use).sum()
        if 'procrustes' in self.alignments:
            raw['pred_keypoints_3d_pa'] = procrustes_align(
                pred, gt, mask=np.isfinite(gt).all(-1) & use,
                scale=self.procrustes_scale).aligned
        self.last_raw = dict(raw, gt_keypoints_3d=gt_raw, pred_keypoints_3d=pred,
                             pred_missing=missing,
                             units=np.asarray(self.resolved_units),
                             joint_names=np.asarray(names, dtype=str), joint_weights=weights,
                             **self._meta_arrays(results))
        return {k: float(v) for k, v in metrics.items()}
