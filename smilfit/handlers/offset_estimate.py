"""A label that sits consistently away from its joint: the per-animal offset that explains it.

A keypoint label that is not its joint (a back label mapped to the thoracic joint while it
sits over the lumbar one, an ear tip mapped to the ear's base) is off by the same vector in
the joint's frame in every frame and view. Seen through the noise scales estimated from the
residuals (:mod:`.residual_scale`), that bias looks like label noise: the keypoint gets a
scale of the bias's size and little weight, and the offset prior (in body units, e.g.
left/right symmetry) then holds the offset back, so the bias is never absorbed.

So before a stage that fits the offsets measures its noise scales, the offsets start where
the residuals put them: per (animal, keypoint) the joint-frame step ``d`` that minimises
``sum_{frames, views} w |r + A d|^2`` (``r`` the reprojection residual, ``A = dpix/dX M_j``
its Jacobian through the carrying joint's world map ``M_j``), weighted

1. by each (frame, view)'s robust residual scale, so a badly calibrated camera (all its
   points off) barely moves an offset;
2. then by each (animal, view, keypoint)'s scale around the first estimate, with a robust
   (GMoF, 3 scales) weight per point, so a few swapped labels do not move it.

Only a point that stands out is moved: its error (median over the animal's frames and
views, each view's errors in units of that view's scale) more than :data:`OUTLIER_RATIO`
times the animal's typical keypoint's (as the fit-quality table names a keypoint), so the
labels' ordinary offsets from their joints, which a skeleton stage fits anyway with its
priors, keep the noise scales they had. And only where the displacement is consistent:
with at least :data:`MIN_EQUATIONS_PER_UNKNOWN` equations per unknown (with fewer an
offset would also absorb the noise, and the scale measured after it would understate the
labels' noise), and where the step explains significantly more of the weighted residuals
than noise alone would (an F test of the 3 offset coordinates against the residuals
left, at significance :data:`SIGNIFICANCE`). Pose errors that differ from frame to frame,
and label noise, do not pass it; a label that sits off its joint in every frame does.
And only where every view agrees: for each view that sees the point, the step estimated
from the other views alone must lower that view's residuals too. An offset in the
joint's frame is one 3D vector every view sees; a label clicked where the view shows the
body's edge (the left flank in the left camera, the back in the top one) sits at
another point in every view, and a step driven by some views does not carry over to the
others (a single view has no other to check against and is not checked).
And only where the offset explains the point's residuals better than a constant pixel
bias per view does: a label off its joint moves in the image as the animal turns, while a
camera's labelling convention (its labeller clicks the neck a little above where another
camera's does) stays put in that image whatever the pose. The bias has two unknowns per
view, the offset three in all, so with two or more views the test is conservative: it
takes an offset only where the animal's turning shows it. A bias seen through views the
animal hardly turns in, and an offset seen in a single frame, cannot be told apart from
a convention and are left to the skeleton stage and its priors.
The stage's own optimisation (with its priors) then starts from there: where the frames
agree the noise scales are those of the labels, and the prior yields; where they do not,
the prior brings the offset back.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .residual_scale import by_group, residual_scales

Tensor = torch.Tensor

#: Equations (pixel coordinates) per unknown (3 per offset) a point needs before its
#: offset is estimated from its residuals: 12 coordinates, e.g. 3 frames in 2 views.
MIN_EQUATIONS_PER_UNKNOWN = 4
#: Robust weight: residuals beyond this many noise scales count less (as the GMoF kernel).
ROBUST_SCALES = 3.0
#: How far above the animal's typical keypoint a point's error must be (median over its
#: frames and views against the median of the animal's point medians) to be taken for a
#: displaced label: the ratio of the outlier rule of :mod:`smilfit.evaluation.fit_quality`.
OUTLIER_RATIO = 3.0
#: Significance level of the F test a point's step must pass to be taken (the chance
#: that noise alone, with no consistent displacement, would pass it).
SIGNIFICANCE = 1e-3


def _stands_out(errors: Tensor, valid: Tensor, groups: Tensor, G: int) -> Tensor:
    """(G, M) bool: points whose median error over the group's frames and views is more
    than :data:`OUTLIER_RATIO` times the median of the group's point medians. ``errors``
    are in units of each (frame, view)'s scale, so a badly calibrated camera (every point
    off) does not hide a displaced label."""
    B, C, M = errors.shape
    e = torch.where(valid, errors, torch.full_like(errors, float('nan')))
    padded = by_group(e, groups, G, float('nan'))                          # (G, S, C, M)
    point = padded.permute(0, 3, 1, 2).reshape(G, M, -1).nanmedian(-1).values     # (G, M)
    typical = point.nanmedian(-1).values                                            # (G,)
    return point > OUTLIER_RATIO * typical[:, None]


def _weighted_sum(weight: Tensor, residual: Tensor, groups: Tensor, G: int) -> Tensor:
    """(G, M) sum over each group's frames and views of ``weight |residual|^2``."""
    per = (weight * residual.pow(2).sum(-1)).sum(1)                        # (B, M)
    return per.new_zeros(G, per.shape[1]).index_add_(0, groups, per)


def _solve(residual: Tensor, jac: Tensor, weight: Tensor, groups: Tensor, G: int
           ) -> Tensor:
    """(G, M, 3) the weighted least-squares offset step of every (group, point)."""
    B, C, M = weight.shape
    H = torch.einsum('bcm,bcmki,bcmkj->bmij', weight, jac, jac)            # (B, M, 3, 3)
    g = torch.einsum('bcm,bcmki,bcmk->bmi', weight, jac, residual)         # (B, M, 3)
    H = H.new_zeros(G, M, 3, 3).index_add_(0, groups, H)
    g = g.new_zeros(G, M, 3).index_add_(0, groups, g)
    trace = H.diagonal(dim1=-2, dim2=-1).sum(-1)                           # (G, M)
    seen = torch.isfinite(trace) & (trace > 0)
    # A point seen from one direction only (one view, no turn) leaves a direction
    # unobserved: the tiny ridge keeps the step there at zero. An unseen point (or one
    # behind every camera) gets no step.
    eye = torch.eye(3, dtype=H.dtype, device=H.device)
    ridge = torch.where(seen, 1e-9 * trace, torch.ones_like(trace))
    H = torch.where(seen[..., None, None], H, torch.zeros_like(H)) + ridge[..., None, None] * eye
    g = torch.where(seen[..., None], g, torch.zeros_like(g))
    solution, info = torch.linalg.solve_ex(H, g[..., None])
    step = -solution[..., 0]
    seen = seen & (info == 0) & torch.isfinite(step).all(-1)
    return torch.where(seen[..., None], step, torch.zeros_like(step))


def offset_steps(residual: Tensor, jac: Tensor, valid: Tensor, groups: Tensor,
                 num_groups: int) -> Tuple[Tensor, Tensor]:
    """The joint-frame offset step of every (group, point) that explains its residuals.

    Args:
        residual: (B, C, M, 2) model minus labelled pixels.
        jac: (B, C, M, 2, 3) pixels' Jacobian w.r.t. the point's joint-frame offset.
        valid: (B, C, M) bool, the observations that count.
        groups: (B,) long, each sample's group (animal), in ``[0, num_groups)``.
        num_groups: G.

    Returns:
        ``(step (G, M, 3), moved (G, M) bool)``: the step (model units, joint frame;
        zero where not moved) and the points moved (enough equations, a significant
        consistent displacement that every view agrees on and that a constant pixel
        bias per view does not explain as well).
    """
    from scipy.stats import f as f_distribution
    dtype = residual.dtype
    residual = torch.where(valid[..., None], residual, torch.zeros_like(residual))
    jac = torch.where(valid[..., None, None], jac, torch.zeros_like(jac))
    errors = residual.norm(dim=-1)
    # 1. every (sample, view) weighted by its robust scale (over its points)
    view_scale = residual_scales(errors, valid)                            # (B, C, M)
    stands_out = _stands_out(errors / view_scale, valid, groups, num_groups)
    step = _solve(residual, jac, valid.to(dtype) / view_scale ** 2, groups, num_groups)
    # 2. every (group, view, point) by its scale around the first step, robustly
    moved_residual = residual + torch.einsum('bcmki,bmi->bcmk', jac, step[groups])
    moved = torch.where(valid, moved_residual.norm(dim=-1), torch.zeros_like(errors))
    scale = residual_scales(moved, valid, groups)
    robust = 1.0 / (1.0 + (moved / (ROBUST_SCALES * scale)) ** 2) ** 2
    weight = valid.to(dtype) * robust / scale ** 2
    step = _solve(residual, jac, weight, groups, num_groups)
    equations = 2 * torch.zeros(num_groups, valid.shape[2], dtype=torch.long,
                                device=valid.device).index_add_(
        0, groups, valid.sum(1, dtype=torch.long))
    enough = equations >= 3 * MIN_EQUATIONS_PER_UNKNOWN
    # F test: the weighted sum of squares the step removes, per offset coordinate,
    # against what is left per remaining degree of freedom.
    before = _weighted_sum(weight, residual, groups, num_groups)
    after = _weighted_sum(weight, residual + torch.einsum('bcmki,bmi->bcmk', jac,
                                                          step[groups]), groups, num_groups)
    dof = (equations - 3).clamp_min(1).to(dtype)
    statistic = ((before - after) / 3.0) / (after / dof).clamp_min(torch.finfo(dtype).tiny)
    critical = torch.as_tensor(f_distribution.isf(SIGNIFICANCE, 3, dof.cpu().numpy()),
                               dtype=dtype, device=dof.device)
    view_bias = _per_view_bias(residual, weight, groups, num_groups)[groups]
    beats_view_bias = after < _weighted_sum(weight, residual - view_bias, groups, num_groups)
    take = (enough & stands_out & (statistic > critical) & beats_view_bias
            & _every_view_agrees(residual, jac, weight, groups, num_groups))
    return torch.where(take[..., None], step, torch.zeros_like(step)), take


def _per_view_bias(residual: Tensor, weight: Tensor, groups: Tensor, G: int) -> Tensor:
    """(G, C, M, 2) each (group, view, point)'s ``weight``-ed mean residual over the
    group's frames: the constant pixel bias that best explains the residuals of a view
    (zero where the view never sees the point)."""
    total = residual.new_zeros(G, *residual.shape[1:]).index_add_(
        0, groups, weight[..., None] * residual)
    mass = weight.new_zeros(G, *weight.shape[1:]).index_add_(0, groups, weight)[..., None]
    return total / mass.clamp_min(torch.finfo(weight.dtype).tiny)    # unseen: 0 / tiny


def _seen(weight: Tensor, groups: Tensor, G: int) -> Tensor:
    """(G, M) bool: the points with an observation of positive ``weight`` (B, C, M) in
    the group."""
    per = weight.gt(0).any(1).to(torch.long)                               # (B, M)
    return per.new_zeros(G, per.shape[1]).index_add_(0, groups, per) > 0


def _every_view_agrees(residual: Tensor, jac: Tensor, weight: Tensor, groups: Tensor,
                       G: int) -> Tensor:
    """(G, M) bool: whether, for every view that sees the point, the step estimated from
    the other views alone lowers that view's weighted residuals. An offset in the
    joint's frame is one 3D vector that every view sees; a bias of one view's labels
    (a point clicked on the silhouette's edge, which moves with the viewing direction)
    is not, and the step it drives in the other views does not carry over."""
    agrees = torch.ones(G, weight.shape[2], dtype=torch.bool, device=weight.device)
    for c in range(weight.shape[1]):
        alone = torch.zeros_like(weight)
        alone[:, c] = weight[:, c]
        others = weight - alone
        # (only where this view and some other see the point: one view has no other
        # to check against)
        checked = _seen(alone, groups, G) & _seen(others, groups, G)
        if not bool(checked.any()):
            continue
        step = _solve(residual, jac, others, groups, G)
        moved = residual + torch.einsum('bcmki,bmi->bcmk', jac, step[groups])
        lower = (_weighted_sum(alone, moved, groups, G)
                 < _weighted_sum(alone, residual, groups, G))
        agrees = agrees & (lower | ~checked)
    return agrees


__all__ = ['offset_steps', 'MIN_EQUATIONS_PER_UNKNOWN', 'ROBUST_SCALES', 'SIGNIFICANCE',
           'OUTLIER_RATIO']
