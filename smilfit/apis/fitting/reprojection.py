"""How far a fit lands from its 2D observations: the fitted model points of a keypoint
handler (:func:`fitted_points`) projected through each sample's cameras, as pixel errors
per point (:func:`point_reprojection_errors`) or per view (:func:`reprojection_errors`)."""
from __future__ import annotations

from typing import Mapping

import torch

from smilfit.cameras import project_points


def point_reprojection_errors(keypoints: torch.Tensor, observations: Mapping[str, torch.Tensor],
                              model_index: torch.Tensor, data_index: torch.Tensor
                              ) -> torch.Tensor:
    """Pixel error of every matched fitted keypoint in every view (B, C, M).

    NaN where the keypoint is not visible, the view is invalid or the point projects to
    no finite pixel.

    Args:
        keypoints: (B, Kp, 3) fitted model points (world).
        observations: with ``keypoints_2d`` (B, C, K, 2) and per-sample cameras
            ``K``, ``R``, ``t``, optional ``dist`` (B, C, ...).
        model_index, data_index: (M,) matched model / data keypoint indices.
    """
    pts = keypoints.index_select(1, model_index)[:, None]  # (B, 1, M, 3)
    uv = project_points(pts, observations['K'], observations['R'], observations['t'],
                        observations.get('dist'))  # (B, C, M, 2)
    observed = observations['keypoints_2d'].index_select(2, data_index)
    err = (uv - observed).norm(dim=-1)  # (B, C, M)
    ok = torch.isfinite(err)
    if 'visible' in observations:
        ok &= observations['visible'].index_select(2, data_index).bool()
    if 'view_valid' in observations:
        ok &= observations['view_valid'].bool()[..., None]
    return torch.where(ok, err, torch.full_like(err, float('nan')))


def reprojection_errors(keypoints: torch.Tensor, observations: Mapping[str, torch.Tensor],
                        model_index: torch.Tensor, data_index: torch.Tensor) -> torch.Tensor:
    """Median pixel error per sample and view of the matched fitted keypoints (B, C);
    NaN where a view has none (see :func:`point_reprojection_errors`)."""
    err = point_reprojection_errors(keypoints, observations, model_index, data_index)
    return torch.nanmedian(err, dim=-1).values


def fitted_points(result, handler) -> torch.Tensor:
    """(B, N, 3) the model points of a keypoint handler's source, with fitted offsets."""
    return handler.points(result.output, result.params)


__all__ = ['point_reprojection_errors', 'reprojection_errors', 'fitted_points']
