"""3D joint errors with optional root or Procrustes (similarity) alignment.

Shapes: keypoints ``(..., N, D)`` (D = 3 for world points; the functions work for any
D), masks ``(..., N)`` bool. Errors are in the units of the ground truth.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from smilfit.ops.alignment import similarity_align

from .arrays import to_numpy
from .keypoints_2d import keypoint_errors

ALIGNMENTS = ('none', 'root', 'procrustes')


class ProcrustesResult(NamedTuple):
    """Output of :func:`procrustes_align`.

    Attributes:
        aligned: ``(..., N, D)`` ``scale * R @ pred + translation``; NaN where ``ok`` is False.
        scale: ``(...)`` scale factor (1 with ``scale=False``).
        rotation: ``(..., D, D)`` proper rotation (det +1).
        translation: ``(..., D)``.
        ok: ``(...)`` bool, False where fewer than ``min_points`` points were usable or
            the prediction had no spread.
    """
    aligned: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    ok: np.ndarray


def _batch(a: np.ndarray, lead: tuple) -> torch.Tensor:
    """float64 tensor of ``a`` with its ``lead`` dimensions flattened into one."""
    return torch.from_numpy(np.ascontiguousarray(a, np.float64)).reshape(
        (-1,) + a.shape[len(lead):])


def _spread(points: np.ndarray, use: np.ndarray) -> np.ndarray:
    """(...) summed variance of the ``use`` points of (..., N, D) ``points``."""
    x = np.where(use[..., None], points, 0.0)
    n = np.maximum(use.sum(-1), 1)[..., None]
    mean = x.sum(-2) / n
    return (np.where(use[..., None], x - mean[..., None, :], 0.0) ** 2).sum((-2, -1)) / n[..., 0]


def procrustes_align(pred, gt, mask=None, scale: bool = True,
                     min_points: int = 3) -> ProcrustesResult:
    """Similarity transform that best maps ``pred`` onto ``gt`` (Umeyama 1991), batched.

    Minimises ``sum_i mask_i |s R pred_i + t - gt_i|^2`` over a proper rotation ``R``
    (reflections are excluded), a scale ``s > 0`` (``scale=True``) and ``t``. Points
    outside ``mask`` do not take part in the fit but are transformed too.

    Args:
        pred: ``(..., N, D)`` points to align.
        gt: ``(..., N, D)`` target points (NaN where missing).
        mask: ``(..., N)`` bool points used in the fit; default: where both are finite.
            Non-finite points are always left out.
        scale: also fit the scale (PA-MPJPE convention); False fits a rigid transform.
        min_points: fewest points a fit needs; batches with fewer get ``ok=False``.
    """
    pred = to_numpy(pred, 'pred')
    gt = to_numpy(gt, 'gt')
    if pred.shape != gt.shape or pred.ndim < 2:
        raise ValueError(f'pred {pred.shape} and gt {gt.shape} must have the same shape '
                         f'(..., N, D)')
    use = np.isfinite(pred).all(-1) & np.isfinite(gt).all(-1)
    if mask is not None:
        use &= to_numpy(mask, 'mask', dtype=bool)
    lead = pred.shape[:-2]
    R, t, s, count = (x.numpy().reshape(lead + x.shape[1:]) for x in similarity_align(
        _batch(pred, lead), _batch(gt, lead), _batch(use, lead), with_scale=scale))
    # A prediction collapsed to a point has no scale or rotation to fit.
    ok = (count >= min_points) & (_spread(pred, use) > 0) \
        & (_spread(pred, use) > 1e-12 * _spread(gt, use))
    s = np.where(ok, s, np.nan)
    rotation = np.where(ok[..., None, None], R, np.nan)
    translation = np.where(ok[..., None], t, np.nan)
    aligned = s[..., None, None] * np.einsum('...ij,...nj->...ni', rotation, pred) \
        + translation[..., None, :]
    return ProcrustesResult(aligned, s, rotation, translation, ok)


def root_align(points, root_index: int = 0) -> np.ndarray:
    """``points (..., N, D)`` minus their root joint ``points[..., root_index, :]``."""
    points = to_numpy(points, 'points')
    if not -points.shape[-2] <= root_index < points.shape[-2]:
        raise IndexError(f'root_index {root_index} is out of range for {points.shape[-2]} joints')
    return points - points[..., root_index:root_index + 1, :]


def joint_errors_3d(pred, gt, valid=None, alignment: str = 'none', root_index: int = 0,
                    align_mask=None, procrustes_scale: bool = True,
                    min_points: int = 3):
    """Per-joint Euclidean errors after an alignment of ``pred`` to ``gt``.

    Args:
        pred: ``(..., N, D)`` predicted joints.
        gt: ``(..., N, D)`` ground truth, NaN where missing.
        valid: optional ``(..., N)`` bool, further restricting the evaluated joints.
        alignment: ``'none'`` (MPJPE), ``'root'`` (both translated so that joint
            ``root_index`` is at the origin; the root joint itself, whose error is 0 by
            construction, and samples with a missing root are not evaluated) or
            ``'procrustes'`` (PA-MPJPE: a similarity transform fitted on the valid joints
            in ``align_mask``, see :func:`procrustes_align`; samples with fewer than
            ``min_points`` valid ground-truth joints in ``align_mask`` are not evaluated).
        align_mask: ``(N,)`` or ``(..., N)`` bool joints allowed in the Procrustes fit
            (e.g. joints with a non-zero weight). Default: all.

    Returns:
        ``errors (..., N)`` (NaN: not evaluated, inf: valid ground truth but a non-finite
        prediction) and ``valid (..., N)`` bool.
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f'alignment {alignment!r} is not one of {ALIGNMENTS}')
    pred = to_numpy(pred, 'pred')
    gt = to_numpy(gt, 'gt')
    if pred.shape != gt.shape or pred.ndim < 2:
        raise ValueError(f'pred {pred.shape} and gt {gt.shape} must have the same shape '
                         f'(..., N, D)')
    if alignment == 'none':
        return keypoint_errors(pred, gt, valid)
    if alignment == 'root':
        errors, ok = keypoint_errors(root_align(pred, root_index), root_align(gt, root_index),
                                     valid)
        ok[..., root_index] = False
        errors[..., root_index] = np.nan
        return errors, ok
    gt_ok = np.isfinite(gt).all(-1)
    if valid is not None:
        gt_ok &= to_numpy(valid, 'valid', dtype=bool)
    fit_mask = gt_ok if align_mask is None else gt_ok & to_numpy(align_mask, 'align_mask',
                                                                 dtype=bool)
    result = procrustes_align(pred, gt, mask=fit_mask, scale=procrustes_scale,
                              min_points=min_points)
    errors, ok = keypoint_errors(result.aligned, gt, gt_ok)
    # Too few ground-truth joints: not evaluable (excluded). Enough ground truth but the
    # prediction was unusable: the inf errors from keypoint_errors stay (a miss).
    evaluable = fit_mask.sum(-1) >= min_points
    ok &= evaluable[..., None]
    errors = np.where(ok, errors, np.nan)
    return errors, ok
