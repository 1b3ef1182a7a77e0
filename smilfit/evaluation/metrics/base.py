"""Base class of smilfit's metrics: joint/camera naming, joint weights, raw arrays."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from .joint_selection import default_joint_names, resolve_joint_weights
from .keypoint_records import keypoint_2d_records, read_keypoint_2d_fields
from .sample_fields import as_mapping, describe_sample, sample_meta

NONFINITE_POLICIES = ('raise', 'miss', 'ignore')


def format_number(value: float) -> str:
    """A threshold as it appears in metric names: ``10`` -> ``'10'``, ``0.05`` -> ``'0.05'``."""
    return f'{float(value):g}'


class SmilfitMetric(BaseMetric):
    """Common machinery of smilfit's metrics (not registered; subclass it).

    ``process`` turns each sample into a small record of numpy arrays (picklable, so
    mmengine can gather them across ranks) appended to ``self.results``, one record per
    sample; ``compute_metrics`` stacks the records and computes everything batched over
    the whole dataset, leaving the per-sample arrays in :attr:`last_raw`.

    Args:
        ignore_joints: joint names or indices left out of every statistic.
        joint_weights: None, N weights, or ``{name: weight}``; weight 0 ignores a joint.
        joint_names: names of the N joints; default: the dataset's ``keypoint_names`` (or
            ``joint_names``) metainfo when its length matches, else the samples'
            ``keypoint_names``, else ``joint0...``.
        camera_names: names of the views by index; default: each sample's
            ``camera_names`` when present, else the dataset's ``camera_names`` metainfo,
            else ``cam0...``. Per-camera statistics group views by these names.
        per_joint / per_camera: also report per-joint / per-camera values.
        collect_device, prefix, collect_dir: see mmengine's ``BaseMetric``.

    Attributes:
        last_raw: dict of numpy arrays from the latest ``compute_metrics`` (None before),
            e.g. per-sample errors for :func:`smilfit.evaluation.write_report`.
    """

    def __init__(self, ignore_joints: Sequence[Union[int, str]] = (),
                 joint_weights: Union[None, Sequence[float], Mapping[str, float]] = None,
                 joint_names: Optional[Sequence[str]] = None,
                 camera_names: Optional[Sequence[str]] = None,
                 per_joint: bool = True, per_camera: bool = True,
                 collect_device: str = 'cpu', prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.ignore_joints = tuple(ignore_joints or ())
        self.joint_weights = (dict(joint_weights) if isinstance(joint_weights, Mapping)
                              else None if joint_weights is None else list(joint_weights))
        self.joint_names = None if joint_names is None else [str(n) for n in joint_names]
        self.camera_names = None if camera_names is None else [str(n) for n in camera_names]
        self.per_joint = bool(per_joint)
        self.per_camera = bool(per_camera)
        self.last_raw: Optional[Dict[str, np.ndarray]] = None
        self._sample_joint_names: Optional[List[str]] = None
        self._joint_setup_cache: Dict[int, tuple] = {}

    @BaseMetric.dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict) -> None:
        self._dataset_meta = dataset_meta
        self._joint_setup_cache = {}      # names may come from the new metainfo

    # ------------------------------------------------------------------ samples
    def _iter_samples(self, data_samples: Sequence[Any]):
        """Yield ``(sample mapping, description for errors, meta dict)``."""
        for position, raw in enumerate(data_samples):
            sample = as_mapping(raw, f'sample {position} of the batch')
            if self._sample_joint_names is None and sample.get('keypoint_names') is not None:
                self._sample_joint_names = [str(n) for n in sample['keypoint_names']]
            yield sample, describe_sample(sample, position), sample_meta(sample)

    def _camera_labels(self, sample: Mapping, num_views: int, where: str) -> np.ndarray:
        """``(C,)`` str labels of a sample's views ('' marks a padded view)."""
        if self.camera_names is not None:
            if len(self.camera_names) < num_views:
                raise ValueError(f'{where} has {num_views} views but camera_names names only '
                                 f'{len(self.camera_names)}: {self.camera_names}')
            names = self.camera_names[:num_views]
        elif sample.get('camera_names') is not None:
            names = [str(n) for n in list(sample['camera_names'])]
            if len(names) != num_views:
                raise ValueError(f'{where}: camera_names has {len(names)} entries for '
                                 f'{num_views} views')
        elif self.dataset_meta and self.dataset_meta.get('camera_names') is not None \
                and len(self.dataset_meta['camera_names']) >= num_views:
            names = [str(n) for n in list(self.dataset_meta['camera_names'])[:num_views]]
        else:
            names = [f'cam{i}' for i in range(num_views)]
        return np.asarray(names, dtype=str).reshape(num_views) if num_views else \
            np.zeros(0, dtype='<U1')

    def _process_keypoints_2d(self, data_samples: Sequence[Any], with_bbox: bool = False,
                              bbox_size_mode: str = 'max', pixels: str = 'input') -> None:
        """Append one 2D keypoint record per sample (errors computed batched), with camera
        labels, meta and ``pred_missing (C, N)`` (valid ground truth, non-finite
        prediction), applying the ``nonfinite_pred`` policy."""
        samples = list(self._iter_samples(data_samples))
        fields = [read_keypoint_2d_fields(sample, where, with_bbox=with_bbox, pixels=pixels)
                  for sample, where, _ in samples]
        records = keypoint_2d_records(fields, with_bbox=with_bbox,
                                      bbox_size_mode=bbox_size_mode)
        for (sample, where, meta), record in zip(samples, records):
            missing = np.isinf(record['errors'])
            self._apply_nonfinite_policy(missing, 'pred_keypoints_2d', where)
            if self.nonfinite_pred == 'ignore':
                record['valid'] = record['valid'] & ~missing
                record['errors'] = np.where(missing, np.nan, record['errors'])
            record['pred_missing'] = missing
            record['camera_labels'] = self._camera_labels(sample, record['errors'].shape[0],
                                                          where)
            record.update(meta)
            self.results.append(record)

    @staticmethod
    def _check_nonfinite_policy(policy: str) -> str:
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f'nonfinite_pred {policy!r} is not one of {NONFINITE_POLICIES}')
        return policy

    def _apply_nonfinite_policy(self, missing: np.ndarray, key: str, where: str) -> None:
        """With ``nonfinite_pred='raise'``, raise when a joint with weight > 0 has a valid
        ground truth but a non-finite prediction (``missing (..., N)`` bool)."""
        if self.nonfinite_pred != 'raise' or not missing.any():
            return
        _, weights = self._joint_setup(missing.shape[-1])
        bad = missing & (weights > 0)
        if bad.any():
            raise ValueError(
                f'{where}: {key} is not finite at {int(bad.sum())} keypoint(s) with valid '
                f'ground truth (indices {np.argwhere(bad)[:5].tolist()}); set '
                f'nonfinite_pred="miss" to count them as misses, "ignore" to leave them out '
                f'(counted in num_missing_predictions), or list joints the model cannot '
                f'predict in ignore_joints')

    # ------------------------------------------------------------------ joints
    def _resolve_joint_names(self, num_joints: int) -> List[str]:
        if self.joint_names is not None:
            if len(self.joint_names) != num_joints:
                raise ValueError(f'{type(self).__name__}: joint_names has '
                                 f'{len(self.joint_names)} names but the samples have '
                                 f'{num_joints} keypoints')
            return list(self.joint_names)
        meta = self.dataset_meta or {}
        for key in ('keypoint_names', 'joint_names'):
            names = meta.get(key)
            if names is not None:
                if len(names) == num_joints:
                    return [str(n) for n in names]
                print_log(f'{type(self).__name__}: dataset {key} has {len(names)} names but '
                          f'the samples have {num_joints} keypoints; not using them',
                          logger='current')
        if self._sample_joint_names is not None and len(self._sample_joint_names) == num_joints:
            return list(self._sample_joint_names)
        return default_joint_names(num_joints)

    def _joint_setup(self, num_joints: int):
        """``(joint names (N,) list, weights (N,) float64)`` for this evaluation (cached
        per N until the dataset metainfo changes)."""
        if num_joints not in self._joint_setup_cache:
            names = self._resolve_joint_names(num_joints)
            self._joint_setup_cache[num_joints] = (
                names, resolve_joint_weights(names, self.ignore_joints, self.joint_weights))
        names, weights = self._joint_setup_cache[num_joints]
        return list(names), weights.copy()

    @staticmethod
    def _unique_labels(labels: np.ndarray) -> List[str]:
        """Camera labels in order of first appearance (views in index order), '' dropped."""
        flat = labels.T.reshape(-1) if labels.ndim == 2 else labels.reshape(-1)
        _, first = np.unique(flat, return_index=True)
        return [str(flat[i]) for i in sorted(first) if str(flat[i]) != '']

    @staticmethod
    def _meta_arrays(results: Sequence[Mapping]) -> Dict[str, np.ndarray]:
        return dict(session=np.asarray([r['session'] for r in results], dtype=str),
                    frame=np.asarray([r['frame'] for r in results], dtype=np.int64),
                    sample_idx=np.asarray([r['sample_idx'] for r in results], dtype=np.int64))

    def compute_metrics(self, results: list) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError
