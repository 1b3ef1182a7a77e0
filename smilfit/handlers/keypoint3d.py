"""3D keypoint handler: model keypoints against observed (e.g. triangulated) 3D points."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch

from ..registry import HANDLERS
from .base import LossSpec
from .matching import KeypointHandlerBase


@HANDLERS.register_module()
class Keypoint3DHandler(KeypointHandlerBase):
    """Distance of model keypoints to observed 3D keypoints, matched by name.

    Reads ``observations[key]`` (``'keypoints_3d'`` by default) (B, K, 3) in world
    units; NaN marks a missing point. Optional ``observations[confidence_key]`` (B, K)
    weights the points. Offsets (``params['keypoint_offsets']``) and importance
    weights by name work as in :class:`~.keypoint2d.Keypoint2DHandler`. Loss:
    ``KeypointMSELoss`` by default (``robust='gmof', sigma=<world units>`` for
    robustness to triangulation outliers).

    Args:
        name, loss, weight, source, keypoints: see :class:`~.matching.KeypointHandlerBase`.
        joint_lookup, keypoint_weights, offsets_key, offsets_frame, check_finite: likewise.
        key: observation key of the 3D points.
        confidence_key: optional observation key of (B, K) confidences.
    """

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 source: str = 'keypoints', keypoints: Optional[Sequence[str]] = None,
                 joint_lookup: Optional[Mapping[str, Optional[str]]] = None,
                 keypoint_weights: Optional[Mapping[str, float]] = None,
                 offsets_key: Optional[str] = 'auto', offsets_frame: str = 'world',
                 key: str = 'keypoints_3d', confidence_key: Optional[str] = None,
                 check_finite: bool = False) -> None:
        super().__init__(name, dict(type='KeypointMSELoss') if loss is None else loss,
                         weight, source=source, keypoints=keypoints,
                         joint_lookup=joint_lookup, keypoint_weights=keypoint_weights,
                         offsets_key=offsets_key, offsets_frame=offsets_frame,
                         check_finite=check_finite)
        self.key = key
        self.confidence_key = confidence_key

    residual_kind = 'points'

    def _terms(self, pts: torch.Tensor, observations: Mapping[str, Any]):
        obs = observations.get(self.key)
        if obs is None:
            raise KeyError(f'handler {self.name!r}: observations have no {self.key!r} '
                           f'(keys: {sorted(observations)})')
        if obs.ndim != 3 or obs.shape[0] != pts.shape[0] or obs.shape[-1] != 3:
            raise ValueError(f'handler {self.name!r}: observations[{self.key!r}] must be '
                             f'({pts.shape[0]}, K, 3), got {tuple(obs.shape)}')
        target = self.select_data(obs.to(pts), 1)
        w = None
        if self.confidence_key is not None and observations.get(self.confidence_key) is not None:
            w = self.select_data(observations[self.confidence_key].to(pts), 1)
        imp = self.importance_like(pts)
        if imp is not None:
            w = imp.expand(pts.shape[0], -1) if w is None else w * imp
        return target, w

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        pts = self.matched_points(output, params)
        target, w = self._terms(pts, observations)
        return self.loss(pts, target, weight=w)

    def point_residuals(self, points: torch.Tensor, observations: Mapping[str, Any],
                        params: Mapping[str, Any]) -> torch.Tensor:
        """(B, 1, M, 3) residuals of the (B, M, 3) matched points (offsets added here)."""
        if not hasattr(self.loss, 'residuals'):
            raise NotImplementedError(self._no_residuals())
        pts = self.offset_points(points, params)
        target, w = self._terms(pts, observations)
        return self.loss.residuals(pts, target, weight=w)[:, None]

__all__ = ['Keypoint3DHandler']
