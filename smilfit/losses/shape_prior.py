"""Gaussian prior on the shape coefficients (betas).

Shapes: B batch, K shape coefficients of the model, K' <= K coefficients being fitted.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..registry import LOSSES
from .utils import ArrayLike, BaseLoss, as_float_tensor, like, resolve_model_data


def mahalanobis_sq(x: torch.Tensor, mean: torch.Tensor,
                   cov_cholesky: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance ``(x - mu)^T S^-1 (x - mu)`` via a Cholesky solve.

    Args:
        x: (B, K) samples.
        mean: (K,) mean.
        cov_cholesky: (K, K) lower-triangular ``L`` with ``S = L L^T``.

    Returns:
        (B,) squared distances (``|L^-1 (x - mu)|^2``; no matrix inverse is formed).
    """
    d = (x - mean).unsqueeze(-1)
    y = torch.linalg.solve_triangular(cov_cholesky, d, upper=False)
    return (y * y).sum((-2, -1))


def cholesky_or_raise(cov: torch.Tensor, name: str = 'covariance') -> torch.Tensor:
    """Lower Cholesky factor of a symmetric positive-definite matrix (float64).

    Raises ``ValueError`` naming ``name`` when ``cov`` is not symmetric positive
    definite.
    """
    cov = cov.to(torch.float64)
    sym = 0.5 * (cov + cov.transpose(-1, -2))
    scale = cov.abs().amax().clamp_min(1.0) if cov.numel() else torch.tensor(1.0)
    if not torch.allclose(cov, sym, atol=1e-8 * float(scale), rtol=0):
        raise ValueError(f'{name} is not symmetric')
    L, info = torch.linalg.cholesky_ex(sym)
    if torch.any(info != 0):
        raise ValueError(f'{name} is not positive definite')
    return L


@LOSSES.register_module()
class ShapePriorLoss(BaseLoss):
    """Squared Mahalanobis distance of betas from the model's shape distribution.

    ``loss = (b - mu)^T S^-1 (b - mu)`` with ``mu = shape_mean`` (zero when not given)
    and ``S = shape_cov``; without a covariance it is the L2 ``|b - mu|^2``. When only
    the leading ``K' < K`` coefficients are fitted, the marginal of the leading block
    is used (``S[:K', :K']``, whose Cholesky factor is ``L[:K', :K']``).

    Args:
        mean: optional (K,) mean.
        cov: optional (K, K) symmetric positive-definite covariance.
        model_data: optional :class:`~smilfit.body_models.BodyModelData`, SMILModel or
            model file path; supplies ``shape_mean`` / ``shape_cov`` where ``mean`` /
            ``cov`` are not given.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    def __init__(self, mean: Optional[ArrayLike] = None, cov: Optional[ArrayLike] = None,
                 model_data=None, loss_weight: float = 1.0, reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        if model_data is not None:
            data = resolve_model_data(model_data)
            mean = data.shape_mean if mean is None else mean
            cov = data.shape_cov if cov is None else cov
        mean_t = as_float_tensor(mean, 'mean', (None,))
        cov_t = as_float_tensor(cov, 'cov', (None, None))
        if cov_t is not None and cov_t.shape[0] != cov_t.shape[1]:
            raise ValueError(f'cov must be square, got {tuple(cov_t.shape)}')
        if mean_t is not None and cov_t is not None and mean_t.shape[0] != cov_t.shape[0]:
            raise ValueError(f'mean has {mean_t.shape[0]} entries, cov is '
                             f'{tuple(cov_t.shape)}')
        self.register_buffer('mean', mean_t)
        self.register_buffer('cov_cholesky',
                             None if cov_t is None else cholesky_or_raise(cov_t, 'cov'))

    @classmethod
    def from_model_data(cls, model_data, **kwargs) -> 'ShapePriorLoss':
        """Build from a BodyModelData, a SMILModel or a model file path."""
        return cls(model_data=model_data, **kwargs)

    @property
    def num_betas(self) -> Optional[int]:
        """K of the prior, or ``None`` for an unsized L2 prior."""
        src = self.cov_cholesky if self.cov_cholesky is not None else self.mean
        return None if src is None else int(src.shape[0])

    def forward(self, betas: torch.Tensor) -> torch.Tensor:
        """Per-sample shape prior.

        Args:
            betas: (B, K') shape coefficients, K' <= K.

        Returns:
            (B,) weighted loss (or reduced).
        """
        if betas.ndim != 2:
            raise ValueError(f'betas: expected (B, K), got {tuple(betas.shape)}')
        k = betas.shape[1]
        K = self.num_betas
        if K is not None and k > K:
            raise ValueError(f'betas has {k} coefficients but the prior only {K}')
        mean = (like(self.mean[:k], betas) if self.mean is not None
                else torch.zeros(k, dtype=betas.dtype, device=betas.device))
        if self.cov_cholesky is None:
            d = betas - mean
            loss = (d * d).sum(-1)
        else:
            loss = mahalanobis_sq(betas, mean, like(self.cov_cholesky[:k, :k], betas))
        return self.finish(loss)


    #: :meth:`residuals` are affine in the betas, the same map for every sample.
    affine_residuals = True

    def residuals(self, betas: torch.Tensor) -> torch.Tensor:
        """(B, K') residuals whose squares sum to :meth:`forward`: ``L^-1 (beta - mu)``
        (times ``sqrt(loss_weight)``) with the prior's Cholesky factor ``L``."""
        if self.reduction != 'none':
            raise ValueError("residuals need reduction='none'")
        k = betas.shape[1]
        mean = (like(self.mean[:k], betas) if self.mean is not None
                else torch.zeros(k, dtype=betas.dtype, device=betas.device))
        d = betas - mean
        if self.cov_cholesky is not None:
            d = torch.linalg.solve_triangular(like(self.cov_cholesky[:k, :k], betas),
                                              d.unsqueeze(-1), upper=False).squeeze(-1)
        return d * float(self.loss_weight) ** 0.5

__all__ = ['mahalanobis_sq', 'cholesky_or_raise', 'ShapePriorLoss']
