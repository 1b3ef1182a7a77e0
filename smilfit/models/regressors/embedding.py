"""An AniMer-style embedding of a regressor's features (optional).

A regressor's ``embedding=dict(neck=dict(type='FeatureFusionNeck', ...), inputs=(...),
part_keypoint=..., part_size=0.4, part_resolution=None)`` fuses some of its features into one
embedding vector (:class:`~smilfit.models.FeatureFusionNeck`): ``backbone`` (D_b,), ``fused``
(D,), ``params`` (P_b,) the final body vector, and ``part``: the backbone's pooled features of
a square crop of view slot 0 around a predicted model keypoint (e.g. the head), projected
through the predicted camera. :func:`embedding_settings` checks the options and fills in the
neck's ``in_dims``; :func:`part_centre` and :func:`part_crops` make the crops (pixels).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import torch

from smilfit.cameras.projection import project_points

#: Default embedding inputs.
DEFAULT_EMBEDDING_INPUTS = ('backbone', 'part', 'params')


def embedding_settings(cfg: Mapping[str, Any], sizes: Mapping[str, int],
                       model_keypoints: Sequence[str]) -> Tuple[dict, dict]:
    """Check a regressor's ``embedding`` options.

    Args:
        cfg: ``neck`` (``MODELS`` config, default ``FeatureFusionNeck``), ``inputs``,
            ``part_keypoint``, ``part_size`` (fraction of the shorter image side, default
            0.4), ``part_resolution`` (crop size in pixels: int or (h, w); default the
            image's).
        sizes: ``{input: feature size}`` of every input the regressor can give.
        model_keypoints: the body model's keypoint names (``part_keypoint`` is one).

    Returns:
        ``(neck, settings)``: the neck's config with ``in_dims`` filled in, and
        ``dict(inputs, part_keypoint, part_size, part_resolution)``.

    Raises:
        KeyError: an unknown input, option or ``part_keypoint``.
        ValueError: input ``'part'`` without ``part_keypoint``.
    """
    cfg = dict(cfg)
    inputs = tuple(cfg.pop('inputs', DEFAULT_EMBEDDING_INPUTS))
    neck = dict(cfg.pop('neck', dict(type='FeatureFusionNeck')))
    unknown = [k for k in inputs if k not in sizes]
    if unknown:
        raise KeyError(f'embedding inputs {unknown} unknown; choose from {sorted(sizes)}')
    neck['in_dims'] = {k: sizes[k] for k in inputs}
    part = cfg.pop('part_keypoint', None)
    if 'part' in inputs and part is None:
        raise ValueError("embedding input 'part' needs part_keypoint (a model keypoint "
                         'name to crop around, e.g. the head)')
    if part is not None and part not in model_keypoints:
        raise KeyError(f'embedding part_keypoint {part!r} is not a model keypoint; '
                       f'model keypoints: {model_keypoints}')
    settings = dict(inputs=inputs, part_keypoint=part,
                    part_size=float(cfg.pop('part_size', 0.4)),
                    part_resolution=cfg.pop('part_resolution', None))
    if cfg:
        raise KeyError(f'embedding: unknown options {sorted(cfg)}')
    return neck, settings


def part_centre(decoded: Mapping[str, Any], index: int) -> torch.Tensor:
    """(B, 2) pixels: model keypoint ``index`` of a decoded prediction (``output``,
    ``cameras``) projected into view slot 0."""
    cams = decoded['cameras']
    pt = decoded['output'].keypoints[:, index:index + 1]
    return project_points(pt, cams['K'][:, 0], cams['R'][:, 0], cams['t'][:, 0],
                          cams['dist'][:, 0])[:, 0]


def part_crops(x: torch.Tensor, centre: torch.Tensor, part_size: float,
               resolution: Optional[Union[int, Sequence[int]]] = None) -> torch.Tensor:
    """(B, 3, h, w) square crops of images ``x`` (B, 3, H, W) centred on ``centre`` (B, 2)
    pixels (NaN: the corner), ``part_size`` times the shorter image side wide, resampled
    to ``resolution`` (int or (h, w); None: (H, W)) (bilinear, ``roi_align``; no gradient
    to ``centre``)."""
    from torchvision.ops import roi_align
    B, _, H, W = x.shape
    half = 0.5 * part_size * min(H, W)
    centre = torch.nan_to_num(centre.detach().to(x.dtype), nan=0.0)
    boxes = torch.cat([torch.arange(B, device=x.device, dtype=x.dtype)[:, None],
                       centre - half, centre + half], 1)
    res = resolution or (H, W)
    res = (int(res), int(res)) if isinstance(res, (int, float)) else tuple(res)
    return roi_align(x, boxes, res, spatial_scale=1.0, sampling_ratio=2, aligned=True)


__all__ = ['DEFAULT_EMBEDDING_INPUTS', 'embedding_settings', 'part_centre', 'part_crops']
