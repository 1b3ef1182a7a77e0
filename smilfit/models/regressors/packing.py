"""Packing a regressor's batched predictions into one dict per sample.

:func:`pack_predictions` is what ``mode='predict'`` returns: for each sample (CPU tensors,
detached) ``pred_params`` (world frame; ``global_orient``, ``body_pose`` axis-angle (3,),
(J', 3); with learned keypoint offsets ``keypoint_offsets`` (K, 3), model units in the
frame of each model keypoint's joint, as in a fit's result), ``pred_keypoints_2d``
(C, N, 2) pixels and ``pred_keypoints_3d`` (N, 3) model units in the data's keypoint
order, ``pred_cameras`` (``K`` (C, 3, 3), ``R`` (C, 3, 3), ``t`` (C, 3), ``dist`` (C, 5)),
``features`` ((D,) each), ``keypoint_names``,
``image_size`` (C, 2) ``(W, H)`` pixels, the ground truth the batch has
(``gt_keypoints_2d`` (C, N, 2), ``visible`` (C, N), ``confidence`` (C, N), ``view_valid``
(C,), ``crop`` (C, 3, 3): source image pixels to input pixels, ``gt_keypoints_3d`` (N, 3),
``gt_params``) and the metadata of :data:`META_KEYS`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import torch

from smilfit.body_models.rotations import matrix_to_axis_angle

from .decoding import view_tensor

#: Metadata passed from data samples into predictions.
META_KEYS = ('session', 'session_index', 'frame', 'instance', 'index', 'sample_idx',
             'flipped', 'view_indices', 'camera_names')
#: Metadata holding one string per view: collated per camera, unpacked per sample.
PER_VIEW_META_KEYS = ('camera_names',)
#: Ground truth passed through per view, with its event dimensions.
PER_VIEW_GT_KEYS = (('keypoints_2d', 2), ('visible', 1), ('confidence', 1), ('view_valid', 0),
                    ('image_size', 1), ('crop', 2))


def per_view_strings(value: Sequence[Any], i: int, B: int, C: int, key: str) -> List[str]:
    """Sample ``i``'s (C,) per-view strings (e.g. ``camera_names``) from a batch entry.

    mmengine's ``default_collate`` and ``pseudo_collate`` transpose a batch of per-sample
    string lists into one tuple per view (``value[c][i]`` is sample ``i``'s view ``c``);
    a batch assembled by hand holds one list per sample (``value[i][c]``). Collated tuples
    are told apart from per-sample lists by their type and lengths.

    Raises:
        ValueError: the entry fits neither layout (names ``key``).
    """
    value = list(value)
    collated = len(value) == C and all(isinstance(v, tuple) and len(v) == B for v in value)
    if collated:
        return [str(v[i]) for v in value]
    per_sample = len(value) == B and all(
        isinstance(v, (list, tuple)) and len(v) == C for v in value)
    if per_sample:
        return [str(n) for n in value[i]]
    raise ValueError(f'data_samples[{key!r}] must hold {C} per-view entries of {B} samples '
                     f'(as collated) or {B} per-sample lists of {C} views; got '
                     f'{len(value)} entries of lengths '
                     f'{[len(v) if isinstance(v, (list, tuple)) else None for v in value]}')


def pack_predictions(decoded: Mapping[str, Any], kps: Mapping[str, torch.Tensor],
                     feats: Mapping[str, torch.Tensor], data_samples: Mapping[str, Any],
                     image_hw: Sequence[int], num_views: int,
                     keypoint_names: Sequence[str]) -> List[Dict[str, Any]]:
    """One dict per sample (see the module docstring for the keys).

    Args:
        decoded: the last iteration's decode result (``params``, ``cameras``, ``body``
            (B, P_b); :func:`~.decoding.decode_prediction`).
        kps: ``keypoints_2d`` (B, C, N, 2) and ``keypoints_3d`` (B, N, 3)
            (:func:`~.decoding.project_keypoints`).
        feats: ``{name: (B, D)}`` features (the regressor's ``extract_features``).
        data_samples: the batch (ground truth and metadata are passed through).
        image_hw: ``(H, W)`` of the inputs, pixels (``image_size`` where the batch has none).
        num_views: C, the view slots.
        keypoint_names: the data's N keypoint names.
    """
    B, C = decoded['body'].shape[0], num_views
    params = {}
    for k, v in decoded['params'].items():
        if k in ('global_orient', 'body_pose'):
            v = matrix_to_axis_angle(v)
        params[k] = v
    cpu = {k: v.detach().cpu() for k, v in params.items()}
    cams = {k: v.detach().cpu() for k, v in decoded['cameras'].items()}
    feats = {k: v.detach().cpu() for k, v in feats.items()}
    kp2d, kp3d = kps['keypoints_2d'].detach().cpu(), kps['keypoints_3d'].detach().cpu()
    gt = {}
    for key, ev in PER_VIEW_GT_KEYS:
        x = view_tensor(data_samples, key, B, C, ev)
        if x is not None:
            gt[key] = x.detach().cpu()
    H, W = int(image_hw[0]), int(image_hw[1])
    out = []
    for i in range(B):
        sample = dict(pred_params={k: v[i] for k, v in cpu.items()},
                      pred_keypoints_2d=kp2d[i], pred_keypoints_3d=kp3d[i],
                      pred_cameras={k: v[i] for k, v in cams.items()},
                      features={k: v[i] for k, v in feats.items()},
                      keypoint_names=keypoint_names,
                      image_size=gt['image_size'][i] if 'image_size' in gt else
                      torch.tensor([[W, H]] * C))
        if 'keypoints_2d' in gt:
            sample['gt_keypoints_2d'] = gt['keypoints_2d'][i]
        for key in ('visible', 'confidence', 'view_valid', 'crop'):
            if key in gt:
                sample[key] = gt[key][i]
        if data_samples.get('keypoints_3d') is not None:
            sample['gt_keypoints_3d'] = data_samples['keypoints_3d'][i].detach().cpu()
        if data_samples.get('params'):
            sample['gt_params'] = {k: v[i].detach().cpu()
                                   for k, v in data_samples['params'].items()}
        for key in META_KEYS:
            value = data_samples.get(key)
            if value is None:
                continue
            if key in PER_VIEW_META_KEYS:
                sample[key] = per_view_strings(value, i, B, C, key)
                continue
            item = value[i]
            if isinstance(item, torch.Tensor):
                item = item.detach().cpu()
                item = item.item() if item.ndim == 0 else item
            sample[key] = item
        out.append(sample)
    return out


__all__ = ['META_KEYS', 'PER_VIEW_META_KEYS', 'PER_VIEW_GT_KEYS', 'per_view_strings',
           'pack_predictions']
