"""Priors on joint rotations given as axis-angle vectors (radians).

Shapes: B batch, N posed joints: ``body_pose`` holds the J - 1 non-root joints in
ascending joint index order (the body model's convention); with ``include_root`` a
full (B, J, 3) pose. Every prior also accepts the flattened (B, N * 3) layout.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..registry import LOSSES
from .utils import (ArrayLike, BaseLoss, PerJointL2Loss, as_float_tensor, check_choice,
                    check_joint_tensor, like, resolve_model_data)
from .shape_prior import cholesky_or_raise

#: Modes of :class:`JointLimitPrior`: squared or linear hinge.
JOINT_LIMIT_MODES = ('squared', 'linear')

LimitSpec = Union[ArrayLike, Dict[str, Sequence]]


# ------------------------------------------------------------------ L2 prior
@LOSSES.register_module()
class PoseL2Prior(PerJointL2Loss):
    """Sum of squared axis-angle rotations: ``loss = sum_j w_j |theta_j|^2``.

    Pulls joints towards the rest pose; ``|theta_j|`` is the joint's rotation angle.
    Input: (B, N, 3) or (B, N * 3) axis-angle.

    Args:
        joint_weights: optional (N,) per-joint weights.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    input_name = 'pose'


# ---------------------------------------------------------------- joint limits
def joint_limit_penalty(pose: torch.Tensor, limits: torch.Tensor,
                        mode: str = 'squared') -> torch.Tensor:
    """Hinge penalty of axis-angle components outside [min, max].

    ``max(0, a - max)^2 + max(0, min - a)^2`` (``'squared'``) or without the squares
    (``'linear'``). NaN bounds are unlimited: they are replaced before any
    arithmetic, so neither values nor gradients are ever NaN.

    Args:
        pose: (B, N, 3) axis-angle components ``a`` (radians).
        limits: (N, 3, 2) (min, max) per joint and axis; NaN = unlimited.
        mode: ``'squared'`` or ``'linear'``.

    Returns:
        (B, N, 3) penalties.
    """
    lo, hi = limits[..., 0], limits[..., 1]
    has_lo, has_hi = torch.isfinite(lo), torch.isfinite(hi)
    zero = torch.zeros((), dtype=pose.dtype, device=pose.device)
    lo = torch.where(has_lo, lo, zero)
    hi = torch.where(has_hi, hi, zero)
    over = torch.where(has_hi, torch.relu(pose - hi), zero)
    under = torch.where(has_lo, torch.relu(lo - pose), zero)
    if mode == 'squared':
        return over * over + under * under
    return over + under


def _limit_rows(spec, name: str) -> np.ndarray:
    """One joint's limits: [[min, max]] x 3 with ``None``/NaN for unlimited -> (3, 2)."""
    if spec is None:
        return np.full((3, 2), np.nan)
    rows = []
    try:
        for axis in spec:
            if axis is None:
                rows.append([np.nan, np.nan])
            else:
                lo, hi = axis
                rows.append([np.nan if lo is None else float(lo),
                             np.nan if hi is None else float(hi)])
    except (TypeError, ValueError) as err:
        raise ValueError(f'joint limits of {name!r}: expected [[min, max], [min, max], '
                         f'[min, max]] (None for unlimited), got {spec!r}') from err
    if len(rows) != 3:
        raise ValueError(f'joint limits of {name!r}: expected 3 axes, got {len(rows)}')
    return np.asarray(rows, dtype=np.float64)


def resolve_joint_limits(limits: Optional[LimitSpec] = None,
                         joint_names: Optional[Sequence[str]] = None,
                         model_data=None, include_root: bool = False
                         ) -> Tuple[np.ndarray, Optional[List[str]]]:
    """Joint limits in pose order, from arrays, a name dictionary and/or a model.

    Args:
        limits: ``None`` (the model's own limits), an (N, 3, 2) array in pose order
            (a (J, 3, 2) array of a model loses its root row unless ``include_root``),
            or a dict ``{joint_name: [[min, max], [min, max], [min, max]]}`` (``None``
            for unlimited bounds or axes) that overrides the model's limits by name.
        joint_names: names of the posed joints in tensor order (without a model).
        model_data: BodyModelData, SMILModel or model file path: supplies joint names,
            the root and default limits (``BodyModelData.joint_limits``).
        include_root: the pose holds all J joints (root included), not J - 1.

    Returns:
        ``(limits (N, 3, 2) float64 with NaN = unlimited, names or None)``.
    """
    base = arr = None
    model_has_limits = False
    names = None if joint_names is None else list(joint_names)
    root_name = None
    if model_data is not None:
        if joint_names is not None:
            raise ValueError('give joint_names or model_data, not both')
        data = resolve_model_data(model_data)
        J = data.num_joints
        keep = np.arange(J)
        if not include_root:
            root = int(np.flatnonzero(np.asarray(data.parents) < 0)[0])
            root_name = data.joint_names[root]
            keep = np.delete(keep, root)
        names = [data.joint_names[i] for i in keep]
        model_has_limits = data.joint_limits is not None
        base = (np.full((J, 3, 2), np.nan) if data.joint_limits is None
                else np.asarray(data.joint_limits, dtype=np.float64))
        if base.shape != (J, 3, 2):
            raise ValueError(f'model joint_limits: expected ({J}, 3, 2), got {base.shape}')
        if limits is not None and not isinstance(limits, dict):
            arr = np.asarray(as_float_tensor(limits, 'limits', (None, 3, 2), True))
            if arr.shape[0] not in (J, len(keep)):
                raise ValueError(f'limits: expected {len(keep)} (or {J}) joints, got '
                                 f'{arr.shape[0]}')
            if arr.shape[0] != len(keep):
                arr = arr[keep]
        base = base[keep]
    if arr is not None:
        pass
    elif isinstance(limits, dict):
        if names is None:
            raise ValueError('named joint limits need joint_names or model_data to '
                             'resolve the names')
        out = np.full((len(names), 3, 2), np.nan) if base is None else base.copy()
        index = {n: i for i, n in enumerate(names)}
        for name, spec in limits.items():
            if name not in index:
                if name == root_name:
                    raise KeyError(f'joint {name!r} is the root, which body_pose does not '
                                   'hold; use include_root=True for a full pose')
                raise KeyError(f'joint limits for unknown joint {name!r}; known joints: '
                               f'{names}')
            out[index[name]] = _limit_rows(spec, name)
        arr = out
    elif limits is not None:
        arr = np.asarray(as_float_tensor(limits, 'limits', (None, 3, 2), True))
        if names is not None and arr.shape[0] != len(names):
            raise ValueError(f'limits has {arr.shape[0]} joints, joint_names {len(names)}')
    elif model_has_limits:
        arr = base
    elif model_data is not None:
        raise ValueError('the model has no joint_limits; pass limits (an array or '
                         '{joint_name: [[min, max]] * 3})')
    else:
        raise ValueError('JointLimitPrior needs limits or model_data')
    if np.any(np.isinf(arr)):
        raise ValueError('limits: use NaN (or None), not inf, for an unlimited bound')
    both = np.isfinite(arr).all(-1)
    if np.any(arr[..., 0][both] > arr[..., 1][both]):
        j, a = np.argwhere(both & (arr[..., 0] > arr[..., 1]))[0]
        who = names[j] if names else f'#{j}'
        raise ValueError(f'limits of joint {who}, axis {a}: min > max')
    return arr, names


@LOSSES.register_module()
class JointLimitPrior(BaseLoss):
    """Per-joint, per-axis hinge on axis-angle components outside their limits.

    ``loss = sum_j w_j sum_a [max(0, a_ja - max_ja)^2 + max(0, min_ja - a_ja)^2]``
    (``mode='linear'``: without the squares). NaN bounds are unlimited. See
    :func:`resolve_joint_limits` for the ways to give limits; in a config::

        dict(type='JointLimitPrior', model_data='stick.json',
             limits={'femur_L': [[-0.5, 0.5], None, [0.0, 1.2]]})

    Args:
        limits, joint_names, model_data, include_root: see :func:`resolve_joint_limits`.
        mode: ``'squared'`` or ``'linear'``.
        joint_weights: optional (N,) per-joint weights.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    def __init__(self, limits: Optional[LimitSpec] = None,
                 joint_names: Optional[Sequence[str]] = None, model_data=None,
                 include_root: bool = False, mode: str = 'squared',
                 joint_weights: Optional[ArrayLike] = None, loss_weight: float = 1.0,
                 reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        check_choice('mode', mode, JOINT_LIMIT_MODES)
        self.mode = mode
        arr, names = resolve_joint_limits(limits, joint_names, model_data, include_root)
        self.joint_names = names
        self.register_buffer('limits', torch.as_tensor(arr, dtype=torch.float64))
        self.register_buffer('joint_weights', as_float_tensor(
            joint_weights, 'joint_weights', (arr.shape[0],)))

    @classmethod
    def from_model_data(cls, model_data, **kwargs) -> 'JointLimitPrior':
        """Build from a BodyModelData, a SMILModel or a model file path."""
        return cls(model_data=model_data, **kwargs)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) or (B, N * 3) axis-angle -> (B,) weighted loss (or reduced)."""
        pose = check_joint_tensor(pose, 'pose', self.limits.shape[0])
        pen = joint_limit_penalty(pose, like(self.limits, pose), self.mode).sum(-1)
        if self.joint_weights is not None:
            pen = pen * like(self.joint_weights, pose)
        return self.finish(pen.sum(-1))

    def extra_repr(self) -> str:
        return f'joints={self.limits.shape[0]}, mode={self.mode!r}, ' + super().extra_repr()


# ------------------------------------------------------------- Gaussian prior
def _load_npz(path, keys: Sequence[str], what: str) -> Dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} file not found: {path}')
    with np.load(path, allow_pickle=False) as f:
        return {k: np.asarray(f[k]) for k in keys if k in f.files}


@LOSSES.register_module()
class GaussianPosePrior(BaseLoss):
    """Gaussian prior over the flattened pose: ``loss = (x - mu)^T P (x - mu)``.

    ``x`` is the (B, D) flattened pose (D = N * 3), ``mu`` the mean and ``P`` the
    precision (inverse covariance). Give ``mean`` and ``precision`` (or
    ``covariance``) as arrays, or ``path`` to an ``.npz`` with keys ``mean`` and
    ``precision`` (or ``covariance``).

    Args:
        mean: (D,) mean.
        precision: (D, D) symmetric positive semi-definite precision.
        covariance: (D, D) symmetric positive-definite covariance (alternative).
        path: ``.npz`` file with the arrays above.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    def __init__(self, mean: Optional[ArrayLike] = None,
                 precision: Optional[ArrayLike] = None,
                 covariance: Optional[ArrayLike] = None, path: Optional[str] = None,
                 loss_weight: float = 1.0, reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        if path is not None:
            stored = _load_npz(path, ('mean', 'precision', 'covariance'), 'pose prior')
            if 'mean' not in stored:
                raise KeyError(f'{path}: no "mean" array')
            mean = stored['mean'] if mean is None else mean
            if precision is None and covariance is None:
                precision, covariance = stored.get('precision'), stored.get('covariance')
        mean_t = as_float_tensor(mean, 'mean', (None,))
        if mean_t is None:
            raise ValueError('GaussianPosePrior needs a mean (or a path)')
        D = mean_t.shape[0]
        if precision is not None:
            prec = as_float_tensor(precision, 'precision', (D, D))
            prec_sym = 0.5 * (prec + prec.T)
            if not torch.allclose(prec, prec_sym, atol=1e-8 * float(prec.abs().max()), rtol=0):
                raise ValueError('precision is not symmetric')
            eig = torch.linalg.eigvalsh(prec_sym)
            if eig.min() < -1e-9 * eig.abs().max():
                raise ValueError('precision is not positive semi-definite')
        elif covariance is not None:
            cov = as_float_tensor(covariance, 'covariance', (D, D))
            prec_sym = torch.cholesky_inverse(cholesky_or_raise(cov, 'covariance'))
        else:
            raise ValueError('GaussianPosePrior needs a precision or a covariance')
        self.register_buffer('mean', mean_t)
        self.register_buffer('precision', prec_sym)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        """(B, ...) pose flattening to (B, D) -> (B,) weighted loss (or reduced)."""
        x = pose.reshape(pose.shape[0], -1)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f'pose flattens to {x.shape[1]} values, prior has '
                             f'{self.mean.shape[0]}')
        d = x - like(self.mean, x)
        return self.finish(((d @ like(self.precision, x)) * d).sum(-1))


__all__ = ['JOINT_LIMIT_MODES', 'PoseL2Prior', 'joint_limit_penalty',
           'resolve_joint_limits', 'JointLimitPrior', 'GaussianPosePrior']
