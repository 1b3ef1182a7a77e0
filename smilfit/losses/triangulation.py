"""Consistency of predicted cameras and 3D points with the 2D observations.

The 2D observations of every view are undistorted and triangulated (weighted DLT,
differentiable) through the *predicted* cameras, and the triangulated points are compared
with the predicted 3D points: wrong cameras or wrong 3D points both cost. A regressor's
``triangulation`` term (multi-view, predicted cameras). Shapes: B samples, C views, N
points; pixels for 2D, model units for 3D.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..cameras.projection import undistort_pixels
from ..cameras.triangulation import triangulate_dlt
from ..registry import LOSSES
from .utils import BaseLoss


def triangulation_consistency(points2d: torch.Tensor, weights: torch.Tensor,
                              K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                              dist: Optional[torch.Tensor], points3d: torch.Tensor,
                              scale: float = 1.0) -> torch.Tensor:
    """Mean squared distance between triangulated observations and predicted 3D points.

    The 2D observations are undistorted and triangulated (DLT, differentiable) through the
    *predicted* cameras; the result is compared with the predicted 3D points.

    Args:
        points2d: (B, C, N, 2) observed pixels (NaN missing).
        weights: (B, C, N) non-negative weights (0 = absent).
        K, R, t, dist: (B, C, ...) cameras (``dist`` (B, C, 5) or None).
        points3d: (B, N, 3) predicted points, same order as ``points2d``.
        scale: length that distances are divided by (e.g. the body length).

    Returns:
        (B,) mean over the points seen in at least two views of ``|X_tri - X| ^ 2 /
        scale ^ 2`` (0 where none is).
    """
    ok = torch.isfinite(points2d).all(-1) & (weights > 0)
    uv = torch.where(ok[..., None], points2d, torch.zeros_like(points2d))
    if dist is not None:
        uv = undistort_pixels(uv, K, dist)
    P = K @ torch.cat([R, t[..., None]], -1)
    X = triangulate_dlt(uv, P, torch.where(ok, weights, torch.zeros_like(weights)))
    good = torch.isfinite(X).all(-1) & torch.isfinite(points3d).all(-1)
    diff = torch.where(good[..., None], X - points3d, torch.zeros_like(X))
    sq = (diff * diff).sum(-1) / (scale * scale)
    return sq.sum(1) / good.sum(1).clamp_min(1).to(sq.dtype)


@LOSSES.register_module()
class TriangulationConsistencyLoss(BaseLoss):
    """:func:`triangulation_consistency` as a loss module.

    Args:
        scale: length (model units, e.g. the body length) distances are divided by.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    def __init__(self, scale: float = 1.0, loss_weight: float = 1.0,
                 reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        self.scale = float(scale)

    def forward(self, points2d: torch.Tensor, weights: torch.Tensor, K: torch.Tensor,
                R: torch.Tensor, t: torch.Tensor, dist: Optional[torch.Tensor],
                points3d: torch.Tensor) -> torch.Tensor:
        """(B,) weighted loss (or reduced); arguments as :func:`triangulation_consistency`
        (``points2d`` (B, C, N, 2) px, ``weights`` (B, C, N), cameras (B, C, ...),
        ``points3d`` (B, N, 3) model units)."""
        return self.finish(triangulation_consistency(points2d, weights, K, R, t, dist,
                                                     points3d, self.scale))

    def extra_repr(self) -> str:
        return f'scale={self.scale}, ' + super().extra_repr()


__all__ = ['triangulation_consistency', 'TriangulationConsistencyLoss']
