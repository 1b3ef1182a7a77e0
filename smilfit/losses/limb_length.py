"""Limb (bone) length loss between pairs of joints or keypoints.

Shapes: B batch, K points, P pairs. Lengths are in the points' units.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..registry import LOSSES
from .utils import (ArrayLike, BaseLoss, as_float_tensor, check_choice, like, masked,
                    valid_mask)

#: Modes of :class:`LimbLengthLoss`.
LIMB_LENGTH_MODES = ('squared', 'relative')

PairSpec = Union[Sequence[Sequence[Union[int, str]]], np.ndarray, torch.Tensor]


def resolve_pairs(pairs: PairSpec, names: Optional[Sequence[str]] = None) -> torch.Tensor:
    """(P, 2) pairs of indices or names -> (P, 2) int64 tensor.

    Names are looked up in ``names`` (the point names in tensor order); an unknown
    name raises ``KeyError`` listing the known ones.
    """
    if isinstance(pairs, torch.Tensor):
        pairs = pairs.detach().cpu().numpy()
    rows = [list(p) for p in pairs]
    if any(len(r) != 2 for r in rows):
        raise ValueError('pairs must be (P, 2): one (a, b) pair per limb')
    index = {n: i for i, n in enumerate(names or [])}
    out = []
    for row in rows:
        ids = []
        for item in row:
            if isinstance(item, str):
                if item not in index:
                    raise KeyError(f'unknown point name {item!r} in pairs; known: '
                                   f'{list(index)[:50]}')
                ids.append(index[item])
            else:
                ids.append(int(item))
        out.append(ids)
    t = torch.as_tensor(out, dtype=torch.int64).reshape(-1, 2)
    if t.numel() and t.min() < 0:
        raise ValueError('pairs: negative point index')
    return t


def limb_lengths(points: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(B, K, D) points and (P, 2) index pairs -> (B, P) Euclidean lengths.

    The length of a zero-length limb is 0 with a zero (not NaN) gradient.
    """
    d = points[:, pairs[:, 0]] - points[:, pairs[:, 1]]
    sq = (d * d).sum(-1)
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(),
                       torch.zeros_like(sq))


def limb_length_residual(lengths: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                         mode: str = 'squared') -> torch.Tensor:
    """(B, P) penalties ``(l - t)^2`` or ``((l - t) / t)^2``, zero where not ``valid``.

    ``target`` may hold NaN where ``valid`` is false; in ``'relative'`` mode targets
    must be > 0 where valid.
    """
    t = torch.where(valid, target, torch.ones_like(target))
    r = lengths - t
    if mode == 'relative':
        r = r / t
    return torch.where(valid, r * r, torch.zeros_like(r))


@LOSSES.register_module()
class LimbLengthLoss(BaseLoss):
    """Penalise deviations of limb lengths from target lengths.

    ``loss = sum_p w_p c_p rho(l_p - t_p)`` with ``l_p = |x_a - x_b|``, ``rho(e) = e^2``
    (``mode='squared'``) or ``(e / t_p)^2`` (``'relative'``, scale-free), ``w_p`` the
    per-pair ``pair_weights`` and ``c_p`` the optional per-call ``weight``.

    Targets come from (first match): the ``target_lengths`` passed to ``forward``
    ((B, P) or (P,), e.g. lengths measured from data), lengths measured between
    ``observed`` points (B, K, D), or the ``target_lengths`` given at construction.
    NaN targets (and, in relative mode, targets <= 0) are masked out.

    Args:
        pairs: (P, 2) point indices, or names resolved through ``names``.
        names: point names in tensor order (needed only for named pairs).
        target_lengths: optional (P,) default targets.
        mode: ``'squared'`` or ``'relative'``.
        pair_weights: optional (P,) importance per pair.
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    def __init__(self, pairs: PairSpec, names: Optional[Sequence[str]] = None,
                 target_lengths: Optional[ArrayLike] = None, mode: str = 'squared',
                 pair_weights: Optional[ArrayLike] = None, loss_weight: float = 1.0,
                 reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        check_choice('mode', mode, LIMB_LENGTH_MODES)
        self.mode = mode
        self.register_buffer('pairs', resolve_pairs(pairs, names))
        P = self.pairs.shape[0]
        self.num_points_needed = int(self.pairs.max()) + 1 if P else 0
        self.register_buffer('target_lengths', as_float_tensor(
            target_lengths, 'target_lengths', (P,), allow_nan=True))
        self.register_buffer('pair_weights',
                             as_float_tensor(pair_weights, 'pair_weights', (P,)))

    def forward(self, points: torch.Tensor, target_lengths: Optional[torch.Tensor] = None,
                observed: Optional[torch.Tensor] = None,
                weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-sample limb length loss.

        Args:
            points: (B, K, D) predicted joints or keypoints.
            target_lengths: optional (B, P) or (P,) targets; NaN = unknown.
            observed: optional (B, K, D) observed points (NaN = missing) to measure
                target lengths from, when ``target_lengths`` is not given.
            weight: optional (B, P) per-pair confidence; NaN = unknown.

        Returns:
            (B,) weighted loss (or reduced).
        """
        if points.ndim != 3:
            raise ValueError(f'points: expected (B, K, D), got {tuple(points.shape)}')
        B, P = points.shape[0], self.pairs.shape[0]
        if self.num_points_needed > points.shape[1]:
            raise ValueError(f'pairs index point {self.num_points_needed - 1} but points '
                             f'has only {points.shape[1]}')
        pairs = self.pairs.to(points.device)
        lengths = limb_lengths(points, pairs)
        if target_lengths is not None:
            target = torch.broadcast_to(target_lengths.to(points), (B, P))
        elif observed is not None:
            if observed.shape != points.shape:
                raise ValueError(f'observed {tuple(observed.shape)} must match points '
                                 f'{tuple(points.shape)}')
            ok = valid_mask(observed, 1)
            ok_pair = ok[:, pairs[:, 0]] & ok[:, pairs[:, 1]]
            target = limb_lengths(masked(observed.to(points), ok), pairs)
            target = masked(target, ok_pair, float('nan'))
        elif self.target_lengths is not None:
            target = like(self.target_lengths, points).expand(B, P)
        else:
            raise ValueError('LimbLengthLoss needs target lengths: pass target_lengths or '
                             'observed points, or give target_lengths at construction')
        valid = valid_mask(target, 0, weight=weight)
        if self.mode == 'relative':
            valid = valid & (masked(target, valid, 1.0) > 0)
        pen = limb_length_residual(lengths, target, valid, self.mode)
        if weight is not None:
            pen = pen * masked(torch.broadcast_to(weight.to(points), (B, P)), valid)
        if self.pair_weights is not None:
            pen = pen * like(self.pair_weights, points)
        return self.finish(pen.sum(-1))

    def extra_repr(self) -> str:
        return f'pairs={self.pairs.shape[0]}, mode={self.mode!r}, ' + super().extra_repr()


__all__ = ['LIMB_LENGTH_MODES', 'resolve_pairs', 'limb_lengths', 'limb_length_residual',
           'LimbLengthLoss']
