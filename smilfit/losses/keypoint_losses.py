"""Keypoint losses (2D and 3D): weighted, optionally robust, squared residuals.

Shapes: B batch, ``...`` any further dimensions (views, frames), K keypoints,
D coordinates (2 for image keypoints in pixels, 3 for 3D points in model units).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch

from ..registry import LOSSES
from ..utils.memo import TensorMemo
from .utils import (ArrayLike, BaseLoss, as_float_tensor, check_choice, like, masked,
                    sum_nonbatch, valid_mask)

#: Normalisations of :class:`KeypointMSELoss` over the non-batch dimensions.
KEYPOINT_NORMALIZATIONS = ('sum', 'mean', 'weighted_mean')


def gmof(residual_sq: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure robust penalty ``sigma^2 r^2 / (sigma^2 + r^2)`` of squared residuals.

    Known as GMoF in SMPLify. Quadratic (``~ r^2``) for ``r << sigma``, saturating at
    ``sigma^2`` for ``r >> sigma``; ``sigma`` is in the residual's units (pixels, mm).

    Args:
        residual_sq: (...) squared residuals ``r^2`` (>= 0), e.g. squared norms.
        sigma: scale, > 0.

    Returns:
        (...) robust values, same shape.
    """
    s2 = sigma * sigma
    return s2 * residual_sq / (s2 + residual_sq)


#: The same function under its textbook name (Geman & McClure 1987).
geman_mcclure = gmof

#: Robust penalties applied to squared residual norms; ``None`` keeps ``r^2``.
ROBUST_FUNCTIONS: Dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    'gmof': gmof,
    'geman_mcclure': geman_mcclure,
}


def keypoint_residual_sq(pred: torch.Tensor, target: torch.Tensor,
                         valid: torch.Tensor) -> torch.Tensor:
    """Squared residual norms ``|pred - target|^2`` over D, zero where not ``valid``.

    Args:
        pred: (..., K, D) predictions.
        target: (..., K, D) observations, may hold NaN where ``valid`` is false.
        valid: (..., K) boolean.

    Returns:
        (..., K) squared norms; invalid entries are exactly 0 with zero gradient
        (the target is replaced before the subtraction, so NaNs never reach autograd).
    """
    diff = masked(pred - masked(target, valid), valid)
    return (diff * diff).sum(-1)


@LOSSES.register_module()
class KeypointMSELoss(BaseLoss):
    """Weighted (robust) squared keypoint error, per sample: 2D or 3D keypoints.

    Per keypoint ``l_k = c_k w_k rho(|x_k - y_k|^2)`` with ``c`` the per-element
    confidence (``weight``), ``w`` the per-keypoint importance (``keypoint_weights``)
    and ``rho`` the identity (``robust=None``) or :func:`gmof` (``'gmof'`` and its alias
    ``'geman_mcclure'``; note the penalty acts on the squared residual *norm*, not per
    coordinate as in SMPLify's code). Per sample, over every non-batch element
    (views, frames, keypoints):

    - ``normalize='sum'``: ``sum l_k``;
    - ``normalize='mean'``: ``sum l_k / n_valid`` (0 when nothing is valid);
    - ``normalize='weighted_mean'``: ``sum l_k / sum c_k w_k`` over valid elements.

    Elements with a non-finite target or confidence or a false ``mask`` do not count.

    Args:
        robust: ``None``, ``'gmof'`` or ``'geman_mcclure'``.
        sigma: robust scale in the keypoints' units (pixels for 2D), > 0.
        keypoint_weights: optional (K,) per-keypoint importance.
        normalize: one of :data:`KEYPOINT_NORMALIZATIONS`.
        dim: expected number of coordinates D (``None``: any).
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    def __init__(self, robust: Optional[str] = None, sigma: float = 1.0,
                 keypoint_weights: Optional[ArrayLike] = None, normalize: str = 'sum',
                 dim: Optional[int] = None, loss_weight: float = 1.0,
                 reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        check_choice('robust', robust, (None,) + tuple(ROBUST_FUNCTIONS))
        check_choice('normalize', normalize, KEYPOINT_NORMALIZATIONS)
        if robust is not None and not sigma > 0:
            raise ValueError(f'sigma must be > 0, got {sigma!r}')
        self.robust = robust
        self.sigma = float(sigma)
        self.normalize = normalize
        self.dim = dim
        self.register_buffer('keypoint_weights',
                             as_float_tensor(keypoint_weights, 'keypoint_weights', (None,)))
        self._observed = TensorMemo()   # see _observed_parts

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-sample keypoint loss.

        Args:
            pred: (B, ..., K, D) predicted keypoints.
            target: (B, ..., K, D) observed keypoints; NaN marks a missing one.
            weight: optional confidences broadcastable to (B, ..., K); NaN = missing.
            mask: optional booleans broadcastable to (B, ..., K); false = ignore.

        Returns:
            (B,) weighted loss (or reduced, see ``reduction``).
        """
        self._check(pred, target)
        valid, w, clean, _ = self._observed_parts(pred, target, weight, mask)
        diff = masked(pred - clean, valid)
        r2 = (diff * diff).sum(-1)
        if self.robust is not None:
            r2 = ROBUST_FUNCTIONS[self.robust](r2, self.sigma)
        loss = sum_nonbatch(w * r2)
        if self.normalize == 'mean':
            loss = loss / sum_nonbatch(valid.to(pred.dtype)).clamp_min(1.0)
        elif self.normalize == 'weighted_mean':
            total = sum_nonbatch(w)
            loss = loss / torch.where(total > 0, total, torch.ones_like(total))
        return self.finish(loss)

    def _check(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape != target.shape:
            raise ValueError(f'pred {tuple(pred.shape)} and target {tuple(target.shape)} '
                             'must have the same shape (B, ..., K, D)')
        if pred.ndim < 3:
            raise ValueError(f'expected (B, ..., K, D) keypoints, got {tuple(pred.shape)}')
        if self.dim is not None and pred.shape[-1] != self.dim:
            raise ValueError(f'expected D = {self.dim} coordinates, got {pred.shape[-1]}')

    def _observed_parts(self, pred: torch.Tensor, target: torch.Tensor,
                        weight: Optional[torch.Tensor], mask: Optional[torch.Tensor]):
        """``(valid, w, clean target (B, ..., K, D), factor (B, ..., K, 1))``: what
        counts and its weight (:meth:`_weights`), the target with 0 where it does not
        count, and the least-squares factor ``sqrt(s c w)`` (``s``: the normalisation and
        ``loss_weight``). They depend on the observations only, so they are computed
        once per target, weight and mask tensors (an optimiser's many evaluations on
        one batch)."""
        return self._observed(
            (target, weight, mask, self.keypoint_weights),
            (pred.dtype, pred.device, tuple(pred.shape), float(self.loss_weight),
             self.normalize),
            lambda: self._compute_observed_parts(pred, target, weight, mask))

    def _compute_observed_parts(self, pred, target, weight, mask):
        valid, w = self._weights(pred, target, weight, mask)
        B = pred.shape[0]
        scale = torch.full((B,), float(self.loss_weight), dtype=pred.dtype,
                           device=pred.device)
        if self.normalize == 'mean':
            scale = scale / sum_nonbatch(valid.to(pred.dtype)).clamp_min(1.0)
        elif self.normalize == 'weighted_mean':
            total = sum_nonbatch(w)
            scale = scale / torch.where(total > 0, total, torch.ones_like(total))
        factor = (w * scale.reshape((B,) + (1,) * (w.ndim - 1))).sqrt()[..., None]
        return valid, w, masked(target, valid), factor

    def _weights(self, pred: torch.Tensor, target: torch.Tensor,
                 weight: Optional[torch.Tensor], mask: Optional[torch.Tensor]):
        """``(valid (B, ..., K) bool, w (B, ..., K))``: what counts and its weight."""
        self._check(pred, target)
        valid = valid_mask(target, 1, mask, weight)
        w = valid.to(pred.dtype)
        if weight is not None:
            w = w * masked(torch.broadcast_to(weight, valid.shape).to(pred.dtype), valid)
        if self.keypoint_weights is not None:
            K = pred.shape[-2]
            if self.keypoint_weights.shape[0] != K:
                raise ValueError(f'keypoint_weights has {self.keypoint_weights.shape[0]} '
                                 f'entries for {K} keypoints')
            w = w * like(self.keypoint_weights, pred)
        return valid, w

    def residuals(self, pred: torch.Tensor, target: torch.Tensor,
                  weight: Optional[torch.Tensor] = None,
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Residual vectors whose squares sum to :meth:`forward` (least-squares form).

        Per keypoint ``r_k = sqrt(s c_k w_k) phi(e_k)`` with ``e_k = pred - target``,
        ``phi(e) = e`` (no robust penalty) or ``sigma e / sqrt(sigma^2 + |e|^2)``
        (GMoF: ``|phi(e)|^2 = rho(|e|^2)``) and ``s`` the normalisation and
        ``loss_weight``, so ``(r * r).sum(non-batch dims) == forward(...)``. Used by
        Gauss-Newton / Levenberg-Marquardt fitting.

        Returns:
            (B, ..., K, D), zero where an element does not count.
        """
        diff, factor = self._residual_parts(pred, target, weight, mask)
        if self.robust is not None:
            s2 = self.sigma * self.sigma
            diff = diff * _saturation((s2 / (s2 + (diff * diff).sum(-1, keepdim=True))).sqrt())
        return diff * factor

    def _residual_parts(self, pred: torch.Tensor, target: torch.Tensor,
                        weight: Optional[torch.Tensor], mask: Optional[torch.Tensor]):
        """Masked errors ``e`` (B, ..., K, D) and the per-keypoint factor (B, ..., K, 1)
        ``sqrt(s c w)`` of the least-squares form (``s``: normalisation, loss weight)."""
        if self.reduction != 'none':
            raise ValueError("residuals need reduction='none'")
        self._check(pred, target)
        valid, _, clean, factor = self._observed_parts(pred, target, weight, mask)
        return masked(pred - clean, valid), factor

    def residual_jacobian(self, pred: torch.Tensor, target: torch.Tensor,
                          weight: Optional[torch.Tensor] = None,
                          mask: Optional[torch.Tensor] = None,
                          chain: Optional[torch.Tensor] = None):
        """:meth:`residuals` (B, ..., K, D) and their derivative w.r.t. ``pred``
        (B, ..., K, D, D) (each keypoint's residual depends on its own prediction only).

        ``chain``: (B, ..., K, D, X) the derivative of ``pred`` w.r.t. X variables; the
        residuals' derivative w.r.t. them, (B, ..., K, D, X), is returned instead
        (without the D x D matrices: a scale, or a scale and a rank-one term)."""
        e, factor = self._residual_parts(pred, target, weight, mask)
        if self.robust is None:
            if chain is not None:
                return e * factor, factor[..., None] * chain
            eye = torch.eye(pred.shape[-1], dtype=pred.dtype, device=pred.device)
            return e * factor, factor[..., None] * eye
        # r = f sigma e / q with q = sqrt(sigma^2 + |e|^2): dr/de = f sigma (I/q - e e^T/q^3)
        s2 = self.sigma * self.sigma
        q = (s2 + (e * e).sum(-1, keepdim=True)).sqrt()
        g = factor * self.sigma * _saturation(1.0 / q)                 # (..., K, 1)
        if chain is not None:   # g (chain - e (e^T chain) / q^2)
            ec = (e[..., None] * chain).sum(-2, keepdim=True)           # (..., K, 1, X)
            return e * g, g[..., None] * (chain - e[..., None] * (ec / (q * q)[..., None]))
        eye = torch.eye(pred.shape[-1], dtype=pred.dtype, device=pred.device)
        jac = g[..., None] * (eye - e[..., :, None] * e[..., None, :] / (q * q)[..., None])
        return e * g, jac

    def extra_repr(self) -> str:
        return (f'robust={self.robust!r}, sigma={self.sigma}, normalize={self.normalize!r}, '
                f'dim={self.dim}, ' + super().extra_repr())


def _saturation(value: torch.Tensor) -> torch.Tensor:
    """``value``, NaN where it is 0 because ``|e|^2`` overflowed: the robust loss of such
    an error is NaN (inf / inf), and its residual must not pass for a perfect fit."""
    return torch.where(value > 0, value, torch.full_like(value, float('nan')))


@LOSSES.register_module()
class Keypoint3DLoss(KeypointMSELoss):
    """:class:`KeypointMSELoss` for 3D points: the same loss, checking D = 3."""

    def __init__(self, robust: Optional[str] = None, sigma: float = 1.0,
                 keypoint_weights: Optional[ArrayLike] = None, normalize: str = 'sum',
                 loss_weight: float = 1.0, reduction: str = 'none') -> None:
        super().__init__(robust=robust, sigma=sigma, keypoint_weights=keypoint_weights,
                         normalize=normalize, dim=3, loss_weight=loss_weight,
                         reduction=reduction)


__all__: Sequence[str] = ['KEYPOINT_NORMALIZATIONS', 'ROBUST_FUNCTIONS', 'gmof',
                          'geman_mcclure', 'keypoint_residual_sq', 'KeypointMSELoss',
                          'Keypoint3DLoss']
