"""Per-sample 2D keypoint records shared by the PCK and reprojection-error metrics."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from smilfit.datasets.ingest_images import apply_affine
from smilfit.evaluation.functional import bbox_sizes, keypoint_errors
from .sample_fields import get_array, stack_padded


#: Where 2D errors are measured: in the pixels of the images the model read, or of the
#: source images they were cropped from (through each view's ``crop``).
PIXELS = ('input', 'source')


def check_pixels(pixels: str) -> str:
    """``pixels`` if it is one of :data:`PIXELS`."""
    if pixels not in PIXELS:
        raise ValueError(f'pixels must be one of {PIXELS}, got {pixels!r}')
    return pixels


def read_keypoint_2d_fields(sample: Mapping, where: str, with_bbox: bool = False,
                            pixels: str = 'input') -> Dict[str, Optional[np.ndarray]]:
    """Read and check one sample's 2D keypoint fields.

    Reads ``pred_keypoints_2d`` and ``gt_keypoints_2d`` ``(C, N, 2)`` (or ``(N, 2)`` for
    one view), optional ``visible (C, N)`` and ``view_valid (C,)``; with ``with_bbox`` also
    the optional ``bbox (C, 4)`` (x0, y0, x1, y1). With ``pixels='source'`` the keypoints
    (and the box's corners) are mapped into the source images through the sample's
    ``crop`` ``(C, 3, 3)`` (required then), so that errors are in the pixels of the
    recording, whatever size each crop had.

    Returns:
        ``pred``, ``gt`` ``(C, N, 2)`` float64, ``valid (C, N)`` bool (visible and view
        valid; finiteness is checked later) and ``bbox`` ``(C, 4)`` or None.
    """
    pred = get_array(sample, 'pred_keypoints_2d', where, ndim=(2, 3), last=2)
    gt = get_array(sample, 'gt_keypoints_2d', where, ndim=(2, 3), last=2)
    pred = pred[None] if pred.ndim == 2 else pred
    gt = gt[None] if gt.ndim == 2 else gt
    if pred.shape != gt.shape:
        raise ValueError(f'{where}: pred_keypoints_2d {pred.shape} and gt_keypoints_2d '
                         f'{gt.shape} differ in shape')
    num_views, num_joints = gt.shape[:2]
    valid = np.ones((num_views, num_joints), dtype=bool)
    visible = get_array(sample, 'visible', where, ndim=(1, 2), dtype=bool, required=False)
    if visible is not None:
        visible = visible.reshape(-1, visible.shape[-1])
        if visible.shape != valid.shape:
            raise ValueError(f'{where}: visible has shape {visible.shape}, expected '
                             f'{valid.shape} (C, N)')
        valid &= visible
    view_valid = get_array(sample, 'view_valid', where, ndim=(0, 1), dtype=bool,
                           required=False)
    if view_valid is not None:
        if view_valid.size != num_views:
            raise ValueError(f'{where}: view_valid has {view_valid.size} entries for '
                             f'{num_views} views')
        valid &= view_valid.reshape(num_views, 1)
    bbox = None
    if with_bbox:
        bbox = get_array(sample, 'bbox', where, ndim=(1, 2), last=4, required=False)
        if bbox is not None:
            bbox = bbox.reshape(-1, 4)
            if bbox.shape[0] != num_views:
                raise ValueError(f'{where}: bbox has {bbox.shape[0]} boxes for {num_views} '
                                 f'views')
            if np.any(bbox[:, 2:] < bbox[:, :2]):
                raise ValueError(f'{where}: bbox must be x0, y0, x1, y1 with x1 >= x0 and '
                                 f'y1 >= y0, got {bbox.tolist()}')
    if check_pixels(pixels) == 'source':
        crop = get_array(sample, 'crop', where, ndim=(2, 3), required=False)
        if crop is None:
            raise ValueError(f"{where}: pixels='source' needs the views' crop matrices "
                             "('crop', source pixels to input pixels); this sample has none")
        crop = crop.reshape(-1, 3, 3).astype(np.float64)
        if crop.shape[0] != num_views:
            raise ValueError(f'{where}: crop has {crop.shape[0]} matrices for {num_views} '
                             'views')
        back = np.linalg.inv(crop)                      # input pixels -> source pixels
        pred, gt = apply_affine(back, pred), apply_affine(back, gt)
        if bbox is not None:
            corners = apply_affine(back, bbox.reshape(-1, 2, 2))
            bbox = np.concatenate([corners.min(1), corners.max(1)], -1)
    return dict(pred=pred, gt=gt, valid=valid, bbox=bbox)


def keypoint_2d_records(fields: Sequence[Mapping], with_bbox: bool = False,
                        bbox_size_mode: str = 'max') -> List[Dict[str, np.ndarray]]:
    """Errors of many samples' 2D keypoints, computed batched.

    Samples with the same ``(C, N)`` are stacked and computed together (a batch usually
    is one such group).

    Args:
        fields: outputs of :func:`read_keypoint_2d_fields`.

    Returns:
        One record per sample, in order: ``errors (C, N)`` px (NaN invalid, inf:
        non-finite prediction), ``valid (C, N)`` bool and, with ``with_bbox``,
        ``bbox_size (C,)`` (the given box's size, else the extent of the valid ground
        truth; NaN where undefined).
    """
    records: List[Optional[Dict[str, np.ndarray]]] = [None] * len(fields)
    by_shape: Dict[tuple, List[int]] = {}
    for i, f in enumerate(fields):
        by_shape.setdefault(f['gt'].shape, []).append(i)
    for members in by_shape.values():
        group = [fields[i] for i in members]
        gt = np.stack([f['gt'] for f in group])                            # (B, C, N, 2)
        errors, valid = keypoint_errors(np.stack([f['pred'] for f in group]), gt,
                                        np.stack([f['valid'] for f in group]))
        sizes = None
        if with_bbox:
            sizes = bbox_sizes(keypoints=gt, valid=valid, mode=bbox_size_mode)  # (B, C)
            given = [k for k, f in enumerate(group) if f['bbox'] is not None]
            if given:
                sizes[given] = bbox_sizes(bboxes=np.stack([group[k]['bbox'] for k in given]),
                                          mode=bbox_size_mode)
        for k, i in enumerate(members):
            record = dict(errors=errors[k], valid=valid[k])
            if sizes is not None:
                record['bbox_size'] = sizes[k]
            records[i] = record
    return records


def stack_keypoint_records(results: Sequence[Mapping]) -> Dict[str, np.ndarray]:
    """Stack per-sample records into ``errors (S, C, N)``, ``valid``, ``camera_labels
    (S, C)``, and ``pred_missing (S, C, N)`` and ``bbox_size (S, C)`` when present; views
    are padded (invalid, label '') when samples have different numbers of views."""
    if not results:
        raise ValueError('no samples were processed; nothing to evaluate')
    out = dict(errors=stack_padded([r['errors'] for r in results], np.nan),
               valid=stack_padded([r['valid'] for r in results], False),
               camera_labels=stack_padded([r['camera_labels'] for r in results], ''))
    if 'pred_missing' in results[0]:
        out['pred_missing'] = stack_padded([r['pred_missing'] for r in results], False)
    if 'bbox_size' in results[0]:
        out['bbox_size'] = stack_padded([r['bbox_size'] for r in results], np.nan)
    return out
