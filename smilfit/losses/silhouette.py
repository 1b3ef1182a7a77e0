"""Silhouette loss between rendered soft silhouettes and observed masks.

Soft silhouettes (values in [0, 1]) come from a renderer in :mod:`smilfit.renderers`
(e.g. ``SoftSilhouetteRenderer``); this module only compares images. Shapes: B batch,
C views (cameras), H x W pixels.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..registry import LOSSES
from .utils import BaseLoss, check_choice, masked, valid_mask

#: Modes of :class:`SilhouetteLoss`.
SILHOUETTE_MODES = ('l2', 'bce', 'iou')
#: Per-view normalisations of the pixel terms ('l2', 'bce').
SILHOUETTE_NORMALIZATIONS = ('mean', 'sum')


def silhouette_view_loss(rendered: torch.Tensor, observed: torch.Tensor,
                         pixel_weight: torch.Tensor, mode: str = 'l2',
                         normalize: str = 'mean', eps: float = 1e-6) -> torch.Tensor:
    """(B, C, H, W) images -> (B, C) per-view losses.

    Args:
        rendered: soft silhouettes in [0, 1].
        observed: masks in [0, 1], already finite (masked pixels anything finite).
        pixel_weight: per-pixel weights, 0 for ignored pixels.
        mode: ``'l2'`` (``(r - o)^2``), ``'bce'`` (binary cross-entropy with ``r``
            clamped to [eps, 1 - eps]) or ``'iou'`` (``1 - (I + eps) / (U + eps)`` with
            soft ``I = sum w r o`` and ``U = sum w (r + o - r o)``).
        normalize: ``'mean'`` (divide pixel sums by the view's total pixel weight) or
            ``'sum'``; ignored by ``'iou'``.
        eps: numerical guard.
    """
    w = pixel_weight
    if mode == 'iou':
        inter = (w * rendered * observed).sum((-2, -1))
        union = (w * (rendered + observed - rendered * observed)).sum((-2, -1))
        return 1.0 - (inter + eps) / (union + eps)
    if mode == 'l2':
        d = rendered - observed
        pix = d * d
    elif mode == 'bce':
        r = rendered.clamp(eps, 1.0 - eps)
        pix = -(observed * torch.log(r) + (1.0 - observed) * torch.log1p(-r))
    else:
        raise ValueError(f'mode must be one of {SILHOUETTE_MODES}, got {mode!r}')
    total = (w * pix).sum((-2, -1))
    if normalize == 'mean':
        n = w.sum((-2, -1))
        total = total / torch.where(n > 0, n, torch.ones_like(n))
    return total


@LOSSES.register_module()
class SilhouetteLoss(BaseLoss):
    """Compare rendered soft silhouettes with observed masks, summed over views.

    Per view one of ``'l2'``, ``'bce'`` or ``'iou'`` (see :func:`silhouette_view_loss`);
    per sample the sum over valid views. Pixels whose observed value is NaN or whose
    ``pixel_weight`` is 0 / NaN are ignored; views with ``valid`` false contribute 0.
    (A chamfer mode is left to the rendering issue.)

    Args:
        mode: one of :data:`SILHOUETTE_MODES`.
        normalize: ``'mean'`` (per-view mean over pixels, resolution-independent) or
            ``'sum'``.
        eps: numerical guard of ``'bce'`` and ``'iou'``.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    def __init__(self, mode: str = 'l2', normalize: str = 'mean', eps: float = 1e-6,
                 loss_weight: float = 1.0, reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        check_choice('mode', mode, SILHOUETTE_MODES)
        check_choice('normalize', normalize, SILHOUETTE_NORMALIZATIONS)
        self.mode = mode
        self.normalize = normalize
        self.eps = float(eps)

    def forward(self, rendered: torch.Tensor, observed: torch.Tensor,
                valid: Optional[torch.Tensor] = None,
                pixel_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-sample silhouette loss.

        Args:
            rendered: (B, C, H, W) soft silhouettes in [0, 1].
            observed: (B, C, H, W) observed masks in [0, 1]; NaN = unknown pixel.
            valid: optional (B, C) booleans; false = view absent.
            pixel_weight: optional (B, C, H, W) (broadcastable) per-pixel weights.

        Returns:
            (B,) weighted loss (or reduced).
        """
        if rendered.ndim != 4 or rendered.shape != observed.shape:
            raise ValueError(f'rendered {tuple(rendered.shape)} and observed '
                             f'{tuple(observed.shape)} must both be (B, C, H, W)')
        ok = valid_mask(observed, 0, weight=pixel_weight)
        w = ok.to(rendered.dtype)
        if pixel_weight is not None:
            w = w * masked(torch.broadcast_to(pixel_weight, ok.shape).to(rendered.dtype), ok)
        obs = masked(observed.to(rendered.dtype), ok)
        per_view = silhouette_view_loss(rendered, obs, w, self.mode, self.normalize, self.eps)
        if valid is not None:
            v = torch.broadcast_to(valid.to(torch.bool), per_view.shape)
            per_view = torch.where(v, per_view, torch.zeros_like(per_view))
        return self.finish(per_view.sum(-1))

    def extra_repr(self) -> str:
        return f'mode={self.mode!r}, normalize={self.normalize!r}, ' + super().extra_repr()


__all__ = ['SILHOUETTE_MODES', 'SILHOUETTE_NORMALIZATIONS', 'silhouette_view_loss',
           'SilhouetteLoss']
