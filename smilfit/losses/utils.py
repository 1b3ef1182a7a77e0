"""Shared pieces of the loss modules: reductions, weighting, masking, constants.

Every smilfit loss computes a per-sample loss of shape (B,), multiplies it by
``loss_weight`` and reduces it with ``reduction``:

- ``'none'`` (default): the (B,) per-sample loss, what handlers and fitting use
  (sum per-sample losses inside a fit so weights do not depend on the batch size);
- ``'mean'`` / ``'sum'``: a scalar over the batch (regression training).

NaN observations are masked with ``torch.where`` *before* any arithmetic touches
them, so neither the loss nor its gradient ever sees a NaN (a ``where`` applied
after the arithmetic still back-propagates ``0 * NaN = NaN``).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..body_models.model_data import BodyModelData
from ..body_models.io import load_model_data

#: Legal values of every loss's ``reduction``.
REDUCTIONS = ('none', 'mean', 'sum')

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float], float]
PathLike = Union[str, 'os.PathLike[str]']


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` or raise ``ValueError`` naming the legal values."""
    if reduction not in REDUCTIONS:
        raise ValueError(f'reduction must be one of {REDUCTIONS}, got {reduction!r}')
    return reduction


def check_choice(name: str, value, choices: Sequence) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (the message lists them)."""
    if value not in choices:
        raise ValueError(f'{name} must be one of {tuple(choices)}, got {value!r}')


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """(B,) per-sample loss -> (B,) (``'none'``) or a scalar (``'mean'``, ``'sum'``)."""
    if reduction == 'none':
        return loss
    if reduction == 'sum':
        return loss.sum()
    if reduction == 'mean':
        return loss.mean()
    raise ValueError(f'reduction must be one of {REDUCTIONS}, got {reduction!r}')


def sum_nonbatch(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,): sum over every dimension but the first (zero-sized ones too)."""
    return x.reshape(x.shape[0], -1).sum(1)


def valid_mask(target: torch.Tensor, event_dims: int = 1,
               mask: Optional[torch.Tensor] = None,
               weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Which observations are usable: finite target, finite weight, ``mask`` true.

    Args:
        target: ``(*S, *E)`` observations; an element of ``S`` is invalid when any of its
            ``event_dims`` trailing entries ``E`` is NaN/inf.
        event_dims: number of trailing dimensions that form one observation.
        mask: optional boolean (or 0/1) tensor broadcastable to ``S``.
        weight: optional tensor broadcastable to ``S``; non-finite weights invalidate.

    Returns:
        Boolean tensor of shape ``S``.
    """
    finite = torch.isfinite(target)
    if event_dims:
        finite = finite.reshape(finite.shape[:finite.ndim - event_dims] + (-1,)).all(-1)
    if mask is not None:
        finite = finite & torch.broadcast_to(mask.to(torch.bool), finite.shape)
    if weight is not None:
        finite = finite & torch.broadcast_to(torch.isfinite(weight), finite.shape)
    return finite


def masked(x: torch.Tensor, valid: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """``x`` where ``valid`` (broadcast over trailing dims of ``x``), ``fill`` elsewhere.

    ``valid`` has the leading shape of ``x``; it is right-padded with singleton
    dimensions. Use on observations before arithmetic so NaNs never reach autograd.
    """
    v = valid.reshape(valid.shape + (1,) * (x.ndim - valid.ndim))
    return torch.where(v, x, torch.full((), fill, dtype=x.dtype, device=x.device))


def as_float_tensor(value: Optional[ArrayLike], name: str,
                    shape: Optional[Sequence[Optional[int]]] = None,
                    allow_nan: bool = False) -> Optional[torch.Tensor]:
    """Array-like -> float64 CPU tensor (for buffers), checking shape and finiteness.

    Args:
        value: tensor, numpy array, nested list or ``None`` (returned as ``None``).
        name: used in error messages.
        shape: expected shape; ``None`` entries match any size.
        allow_nan: NaN entries allowed (e.g. unlimited joint axes); inf never is.
    """
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        t = value.detach().to('cpu', torch.float64)
    else:
        t = torch.as_tensor(np.asarray(value, dtype=np.float64))
    if shape is not None and (t.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(t.shape, shape))):
        want = tuple('*' if s is None else s for s in shape)
        raise ValueError(f'{name}: expected shape {want}, got {tuple(t.shape)}')
    bad = torch.isinf(t) if allow_nan else ~torch.isfinite(t)
    if bad.any():
        raise ValueError(f'{name}: contains {int(bad.sum())} non-finite value(s)'
                         + (' (use NaN for "unlimited", not inf)' if allow_nan else ''))
    return t


def like(buffer: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A constant buffer cast to ``x``'s dtype and device (a no-op when they match)."""
    return buffer.to(dtype=x.dtype, device=x.device)


def resolve_model_data(model_data):
    """A :class:`~smilfit.body_models.BodyModelData` or a model file path -> the data.

    Paths (``.pkl``, ``.json``, ``.json.gz``) are loaded and validated.
    """
    if isinstance(model_data, BodyModelData):
        return model_data
    if isinstance(model_data, (str, os.PathLike)):
        return load_model_data(model_data)
    data = getattr(model_data, 'data', None)  # a SMILModel holds its BodyModelData
    if isinstance(data, BodyModelData):
        return data
    raise TypeError('expected a BodyModelData, a SMILModel or a model file path, '
                    f'got {type(model_data).__name__}')


def per_joint_sq_norm(x: torch.Tensor, joint_weights: Optional[torch.Tensor] = None
                      ) -> torch.Tensor:
    """(B, J, D) -> (B,): ``sum_j w_j |x_j|^2`` (``w_j = 1`` without weights)."""
    sq = (x * x).sum(-1)
    if joint_weights is not None:
        sq = sq * like(joint_weights, x)
    return sq.sum(-1)


def check_joint_tensor(x: torch.Tensor, name: str, num_joints: Optional[int] = None,
                       dim: int = 3) -> torch.Tensor:
    """Accept (B, J, dim) or flattened (B, J * dim); return (B, J, dim).

    Raises ``ValueError`` naming ``name`` when the shape does not fit (or the joint
    count differs from ``num_joints`` where given).
    """
    if x.ndim == 2 and x.shape[1] % dim == 0:
        x = x.reshape(x.shape[0], -1, dim)
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(f'{name}: expected (B, J, {dim}) or (B, J * {dim}), '
                         f'got {tuple(x.shape)}')
    if num_joints is not None and x.shape[1] != num_joints:
        raise ValueError(f'{name}: expected {num_joints} joints, got {x.shape[1]}')
    return x


class BaseLoss(nn.Module):
    """Base of smilfit's losses: ``loss_weight`` and ``reduction`` handling.

    Subclasses compute the (B,) per-sample loss and return ``self.finish(loss)``.

    Args:
        loss_weight: factor applied to the per-sample loss.
        reduction: ``'none'`` (per-sample (B,)), ``'mean'`` or ``'sum'`` over the batch.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'none') -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.reduction = check_reduction(reduction)

    def finish(self, per_sample: torch.Tensor) -> torch.Tensor:
        """(B,) per-sample loss -> weighted and reduced output."""
        return reduce_loss(per_sample * self.loss_weight, self.reduction)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, reduction={self.reduction!r}'


class PerJointL2Loss(BaseLoss):
    """Weighted sum of squared per-joint 3-vectors: ``loss = sum_j w_j |x_j|^2``.

    The shared body of the L2 priors on per-joint quantities (rotations, bone
    translations); subclasses name the input in :attr:`input_name` for error messages.

    Args:
        joint_weights: optional (N,) per-joint weights.
        loss_weight, reduction: see :class:`BaseLoss`.
    """

    input_name = 'x'
    #: :meth:`residuals` are linear in ``x``, the same map for every sample.
    affine_residuals = True

    def __init__(self, joint_weights: Optional[ArrayLike] = None, loss_weight: float = 1.0,
                 reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        self.register_buffer('joint_weights',
                             as_float_tensor(joint_weights, 'joint_weights', (None,)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) or (B, N * 3) -> (B,) weighted loss (or reduced)."""
        n = None if self.joint_weights is None else self.joint_weights.shape[0]
        x = check_joint_tensor(x, self.input_name, n)
        return self.finish(per_joint_sq_norm(x, self.joint_weights))

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N * 3) residuals ``sqrt(loss_weight w_j) x_j`` whose squares sum to
        :meth:`forward` (least-squares form for Levenberg-Marquardt)."""
        if self.reduction != 'none':
            raise ValueError("residuals need reduction='none'")
        n = None if self.joint_weights is None else self.joint_weights.shape[0]
        x = check_joint_tensor(x, self.input_name, n)
        scale = torch.full(x.shape[1:2], float(self.loss_weight), dtype=x.dtype,
                           device=x.device)
        if self.joint_weights is not None:
            scale = scale * like(self.joint_weights, x)
        return (x * scale.sqrt()[:, None]).flatten(1)


__all__ = ['REDUCTIONS', 'BaseLoss', 'PerJointL2Loss', 'check_reduction', 'check_choice',
           'reduce_loss',
           'sum_nonbatch', 'valid_mask', 'masked', 'as_float_tensor', 'like',
           'resolve_model_data', 'per_joint_sq_norm', 'check_joint_tensor']
