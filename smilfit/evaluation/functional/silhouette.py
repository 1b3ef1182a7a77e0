"""Silhouette intersection over union."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .arrays import to_numpy


class SilhouetteIoU(NamedTuple):
    """Output of :func:`silhouette_iou`; each field ``(...)`` (the leading mask axes).

    Attributes:
        iou: intersection / union; NaN where both masks are empty (undefined).
        intersection: pixels in both masks.
        union: pixels in either mask.
    """
    iou: np.ndarray
    intersection: np.ndarray
    union: np.ndarray


def binarize_mask(mask, threshold: float = 0.5, name: str = 'mask') -> np.ndarray:
    """Bool masks as they are; numeric masks (probabilities, 0/255) ``> threshold``."""
    mask = to_numpy(mask, name, dtype=None)
    if mask.dtype == bool:
        return mask
    if not np.issubdtype(mask.dtype, np.number):
        raise TypeError(f'{name} has dtype {mask.dtype}; expected bool or numbers')
    return mask > threshold


def silhouette_iou(pred, gt, threshold: float = 0.5) -> SilhouetteIoU:
    """IoU of ``pred (..., H, W)`` and ``gt (..., H, W)`` masks.

    Bool masks are used as they are, numeric ones are binarised with ``> threshold``
    (so soft silhouettes in [0, 1] work; pass ``threshold=127`` for 0/255 masks).

    Raises:
        ValueError: the shapes differ (resize the prediction to the ground truth first).
    """
    pred = binarize_mask(pred, threshold, 'pred mask')
    gt = binarize_mask(gt, threshold, 'gt mask')
    if pred.shape != gt.shape or pred.ndim < 2:
        raise ValueError(f'pred mask {pred.shape} and gt mask {gt.shape} must have the same '
                         f'shape (..., H, W)')
    intersection = (pred & gt).sum((-2, -1)).astype(np.int64)
    union = (pred | gt).sum((-2, -1)).astype(np.int64)
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
    return SilhouetteIoU(iou, intersection, union)
