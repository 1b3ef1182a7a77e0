"""Noise scales of keypoint observations estimated from the fit's own residuals.

A robust kernel with a scale in pixels (GMoF ``sigma=10``) is tuned to one rig: on clean
labels it throws away correct points the model does not fit yet, on a bad camera it
keeps wrong ones. Here the scale comes from the data. At the start of a stage the
reprojection errors ``e`` at the current parameters give a robust noise scale, and the
stage scores ``e / sigma`` (dimensionless), so

- a view whose points are all off (a bad calibration) gets a large ``sigma`` and little
  weight, without its points being treated as outliers one by one;
- within a view, a point many ``sigma`` away from the rest is an outlier for the robust
  kernel, whose scale is then in units of ``sigma`` (e.g. 3);
- the data term is a negative log-likelihood in units of the noise, so priors written in
  body units weigh against it the same way on any rig and image size, and more frames or
  views outweigh a prior.

Estimates (2D errors, isotropic Gaussian noise of scale ``sigma`` per axis: the median
of ``|e|`` is ``sigma * sqrt(2 ln 2)``):

- per group (the registrant's default: an animal's frames in the batch): one scale per
  (group, view, keypoint) over the group's frames, shrunk towards the (group, view)
  scale, itself shrunk towards the group's. A keypoint the model misses in every frame
  (a label that is no joint, a tail it cannot bend) keeps a scale of its own size: it
  informs the skeleton and is not rejected as an outlier in every frame, while a point
  off in one frame (a swapped or misplaced label) is an outlier of its keypoint's scale;
- per sample (``groups=None``): one scale per (sample, view), shrunk towards the
  sample's.

Shrinkage is geometric, ``log s = (n log s_own + n0 log s_pool) / (n + n0)`` with ``n``
the points behind the own estimate and ``n0`` (:data:`PRIOR_POINTS`) pseudo-points of the
pooled one: a keypoint seen in one frame only, far off, keeps a scale near its view's
(its error stays an outlier), one seen in many frames gets its own.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

Tensor = torch.Tensor

#: median(|e|) / sigma of a 2D isotropic Gaussian error (Rayleigh median).
RAYLEIGH_MEDIAN = math.sqrt(2.0 * math.log(2.0))
#: Pseudo-points of the pooled scale in the shrinkage of a finer one.
PRIOR_POINTS = 3.0
#: Smallest scale relative to the largest pooled one: keeps a view or keypoint that the
#: model happens to fit exactly from an unbounded weight.
MIN_RELATIVE_SCALE = 1e-3


def _nanmedian(x: Tensor, dims) -> Tensor:
    """Median over ``dims`` ignoring NaN (NaN where every entry is NaN)."""
    dims = sorted(d % x.ndim for d in dims)
    keep = [d for d in range(x.ndim) if d not in dims]
    flat = x.permute(keep + dims).reshape([x.shape[d] for d in keep] + [-1])
    return flat.nanmedian(-1).values


def _shrink(own: Tensor, n_own: Tensor, pooled: Tensor) -> Tensor:
    """Shrink ``own`` scales (n_own points each) geometrically towards ``pooled``
    (broadcast); where ``own`` is unknown (NaN, no points) the pooled scale."""
    tiny = torch.finfo(own.dtype).tiny
    log_own = torch.nan_to_num(own, nan=1.0).clamp_min(tiny).log()
    log_pool = pooled.clamp_min(tiny).log()
    n = torch.where(torch.isnan(own), torch.zeros_like(n_own), n_own)
    return ((n * log_own + PRIOR_POINTS * log_pool) / (n + PRIOR_POINTS)).exp()


def residual_scales(errors: Tensor, valid: Tensor, groups: Optional[Tensor] = None
                    ) -> Tensor:
    """Robust noise scale of every element from current 2D errors.

    Args:
        errors: (B, C, M) error norms ``|e|`` (pixels).
        valid: (B, C, M) bool, the elements that count.
        groups: (B,) group of every sample (per-group estimate by keypoint), or ``None``
            (per-sample estimate by view).

    Where the fit is exact (zero errors) the scale is floored at
    :data:`MIN_RELATIVE_SCALE` of the coarsest scale, and at the dtype's smallest
    normal number; where nothing was observed it is 1.

    Returns:
        (B, C, M) scales ``sigma`` (pixels, > 0; 1 where nothing was observed).
    """
    e = torch.where(valid, errors, torch.full_like(errors, float('nan'))) / RAYLEIGH_MEDIAN
    n = valid.to(errors.dtype)
    if groups is None:
        sample = _nanmedian(e, (1, 2))[:, None, None]                         # (B, 1, 1)
        view = _nanmedian(e, (2,))[..., None]                                 # (B, C, 1)
        scale = _shrink(view, n.sum(2, keepdim=True), torch.nan_to_num(sample, nan=0.0))
        top = torch.nan_to_num(sample, nan=0.0)
    else:
        scale, top = _group_scales(e, n, groups)
    floor = (MIN_RELATIVE_SCALE * top).clamp_min(torch.finfo(errors.dtype).tiny)
    scale = torch.maximum(scale, floor).expand_as(errors)
    return torch.where(scale > torch.finfo(errors.dtype).tiny, scale, torch.ones_like(scale))


def by_group(x: Tensor, groups: Tensor, num_groups: int, fill: float) -> Tensor:
    """(G, S, ...) the samples of ``x`` (B, ...) laid out per group (S the largest group's
    size, the rest ``fill``), so a statistic over every group's samples is one batched
    call whatever the group sizes."""
    B = x.shape[0]
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    counts = torch.bincount(groups, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(B, device=x.device) - starts[sorted_groups]
    S = int(counts.max()) if B else 0
    padded = x.new_full((num_groups, S) + tuple(x.shape[1:]), fill)
    padded[sorted_groups, rank] = x[order]
    return padded


def _group_scales(e: Tensor, n: Tensor, groups: Tensor):
    """Per (group, view, keypoint) scales, shrunk to (group, view), then to the group.

    The samples are laid out per group in a padded (G, S, C, M) tensor (NaN padding), so
    every median is one batched call whatever the group sizes.
    """
    G = int(groups.max()) + 1 if e.shape[0] else 0
    padded = by_group(e, groups, G, float('nan'))
    n_pad = by_group(n, groups, G, 0.0)
    group = torch.nan_to_num(_nanmedian(padded, (1, 2, 3)), nan=0.0)[:, None, None]  # (G,1,1)
    view = _shrink(_nanmedian(padded, (1, 3))[..., None], n_pad.sum((1, 3))[..., None],
                   group)                                                      # (G, C, 1)
    point = _shrink(_nanmedian(padded, (1,)), n_pad.sum(1), view)              # (G, C, M)
    return point[groups], group[groups]


__all__ = ['RAYLEIGH_MEDIAN', 'PRIOR_POINTS', 'residual_scales', 'by_group']
