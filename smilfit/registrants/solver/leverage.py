"""How much of each 2D label's error its own fit follows: the leverage of every view's
point on its sample's answer, so that noise scales come from residuals that do not shrink
with it (:mod:`smilfit.handlers.residual_scale`).

At a least-squares answer the residual of an observation with leverage ``h`` has the
expected square ``sigma^2 (1 - h)``: its noise, less the share the fitted parameters
follow. For a point handler's residual rows ``a`` (their derivatives by the point, in noise
units), the point's derivative ``D`` by the parameters and the sample's Gauss-Newton
information ``H = J^T J``::

    h = mean over the rows of  a^T D H^-1 D^T a

A body has about as many parameters per frame as two views give coordinates (97 for the
SMIL mouse against 80 at 20 keypoints), so leverages are high (on the shared session at
two cameras 0.05-0.7 in the median, by stage), and they are not shared evenly: of two
views of a point, the one with more weight has more. Scales from raw residuals therefore
run away between views: the heavier view's residual is smaller, so its next scale is
smaller and its weight larger, and the split of one point's error between two views
squares from stage to stage (``|r1| / |r2| = w2 / w1``), until one view carries the error
and the other the weight (the session's ``back`` camera at 9 px against 0.8 in ``mid``). Residuals
divided by ``sqrt(1 - h)`` (studentized) have the expectation ``sigma`` whatever the
weights, which leaves the split where the labels put it.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn

Tensor = torch.Tensor


def point_leverage(problem, x: Tensor, idx: Tensor, covariance: Tensor,
                   handlers: Sequence[nn.Module]) -> Dict[str, Tensor]:
    """name -> (n, G, M): the leverage of every view's point (the mean over its residual
    rows, a label's two coordinates) of each point handler of ``handlers``, for samples
    ``idx`` (n,) of ``problem`` (:class:`~.problem.LeastSquaresProblem`) at ``x`` (n, P)
    with the posterior covariance ``covariance`` (n, P, P), ``H^-1``."""
    out = {}
    for name, (A, D) in problem.point_terms_at(x, idx, handlers).items():
        cov = covariance.to(D.dtype)
        points = torch.einsum('nmip,npq,nmjq->nmij', D, cov, D)        # (n, M, 3, 3)
        out[name] = torch.einsum('ngmri,nmij,ngmrj->ngm', A, points, A) / A.shape[3]
    return out


__all__ = ['point_leverage']
