"""Similarity (Umeyama) and rigid (Kabsch) alignment of point sets, batched.

One implementation for the fitter's initial pose (:mod:`smilfit.registrants.initialization`)
and the Procrustes-aligned metrics (:mod:`smilfit.evaluation.functional.keypoints_3d`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .linalg import batched_svd

Tensor = torch.Tensor


def similarity_align(source: Tensor, target: Tensor, weights: Optional[Tensor] = None,
                     with_scale: bool = True) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Weighted least-squares ``target ~ s R source + t`` (Umeyama 1991).

    Minimises ``sum_n w_n |s R source_n + t - target_n|^2`` over a proper rotation ``R``
    (reflections excluded), ``t`` and, with ``with_scale``, ``s > 0`` (else ``s = 1``).

    Args:
        source: (B, N, D) points; non-finite ones are left out.
        target: (B, N, D) points; non-finite ones are left out.
        weights: (B, N) non-negative weights or None (all 1); non-finite ones count 0.

    Returns:
        ``(R (B, D, D), t (B, D), s (B,), count (B,))``, ``count`` the points with
        positive weight. With fewer than ``D`` such points (or a source with no spread
        under ``with_scale``) ``R`` is the identity and ``s`` 1; with none ``t`` is 0;
        callers decide what such a batch means.
    """
    valid = torch.isfinite(target).all(-1) & torch.isfinite(source).all(-1)
    w = torch.ones(target.shape[:2], dtype=target.dtype, device=target.device)
    if weights is not None:
        w = torch.where(torch.isfinite(weights), weights.to(w), torch.zeros_like(w))
    w = torch.where(valid, w, torch.zeros_like(w))
    target = torch.where(valid[..., None], target, torch.zeros_like(target))
    source = torch.where(valid[..., None], source, torch.zeros_like(source))
    total = w.sum(1, keepdim=True)
    safe_total = total.clamp_min(1e-12)
    mu_s = (w[..., None] * source).sum(1) / safe_total
    mu_t = (w[..., None] * target).sum(1) / safe_total
    cov = torch.einsum('bn,bni,bnj->bij', w, target - mu_t[:, None], source - mu_s[:, None])
    U, sv, Vh = batched_svd(cov)  # chunked on CUDA (bounded cuSOLVER workspace)
    det = torch.linalg.det(U @ Vh)
    fix = torch.ones_like(cov[:, 0])
    fix[:, -1] = torch.sign(det) + (det == 0).to(det.dtype)
    R = U @ torch.diag_embed(fix) @ Vh
    count = (w > 0).sum(1)
    enough = count >= source.shape[-1]
    eye = torch.eye(R.shape[-1], dtype=R.dtype, device=R.device).expand_as(R)
    R = torch.where(enough[:, None, None], R, eye)
    scale = torch.ones_like(total[:, 0])
    if with_scale:
        var = (w * ((source - mu_s[:, None]) ** 2).sum(-1)).sum(1)
        scale = torch.where(enough & (var > 0), (sv * fix).sum(1) / var.clamp_min(1e-30),
                            scale)
    t = mu_t - scale[:, None] * (R @ mu_s[..., None]).squeeze(-1)
    t = torch.where(total > 0, t, torch.zeros_like(t))
    return R, t, scale, count


__all__ = ['similarity_align']
