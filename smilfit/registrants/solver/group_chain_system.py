"""Levenberg-Marquardt state of groups of frames sharing parameters whose frames are also
coupled in time: every group (an animal) one unit, its frames' chains inside it.

The block-arrow system of a group (:mod:`.group_problem`) with its frames' block
``U`` no longer block diagonal but block-banded along each chain (the motion terms,
:mod:`.chain_system`):

    [ U_band  W ] [dx]     [gx]
    [ W^T     V ] [dy] = - [gy]

solved by the Schur complement over the chains: ``Y = U^-1 W`` and ``z = U^-1 gx`` from
each chain's banded factor, ``S = V - W^T Y``, ``S dy = -gy + W^T z``, ``dx = -(z + Y
dy)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .banded import banded_solve
from .chain_system import ChainMotion, MotionTerms
from .group_problem import GroupLeastSquaresProblem, frame_costs
from .group_system import GroupSystem, GroupTrial
from .scatter import scatter_max, sum_into

Tensor = torch.Tensor


@dataclass
class GroupChainTrial(GroupTrial):
    """A :class:`~.group_system.GroupTrial` with its frames' motion costs."""

    motion_cost: Optional[Tensor] = None   # (n,) per frame of ``frames``


class GroupChainSystem(GroupSystem):
    """:class:`~.group_system.GroupSystem` whose frames are coupled in time.

    Args:
        problem: the stage's :class:`~.group_problem.GroupLeastSquaresProblem`.
        motion: the :class:`~.chain_system.MotionTerms` on the per-frame columns.
        damping: a name of :data:`~.trust_region.DAMPING`.
    """

    # Never stopped by the progress test: the shared parameters must reach their minimum.
    # A bone's length trades off against its neighbours' rotations in a flat valley, and
    # stopping where the chains' steps stop mattering left an animal's skeleton 2.6 % of
    # its body length off on labels without noise (0.08 % at the minimum).
    stops_on_progress = False

    def __init__(self, problem: GroupLeastSquaresProblem, motion: MotionTerms,
                 damping: str) -> None:
        super().__init__(problem, damping)
        B = problem.B
        self.motion = ChainMotion(motion, torch.zeros(B, dtype=torch.bool, device=self.device),
                                  self.device, self.dtype)
        self.chain_group = problem.groups.to(self.device)[self.motion.table[:, 0]]
        self.motion_cost = torch.zeros(B, dtype=self.dtype, device=self.device)

    def _chains(self, units: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The chains of the groups ``units`` (longest first), their table (m, T) and
        each one's row in ``units``."""
        local = torch.full((self.problem.G,), -1, dtype=torch.long, device=self.device)
        local[units] = torch.arange(units.numel(), device=self.device)
        chains = torch.nonzero(local[self.chain_group] >= 0).flatten()
        table, _ = self.motion.frames(chains)
        return chains, table, local[self.chain_group[chains]]

    def _extra(self, x_rows: Tensor, table: Tensor) -> Tuple[Tensor, Tensor]:
        """Motion costs (m, T) and the constants (m,) of chains at ``x_rows`` (m, T, Px)."""
        m = self.motion
        r, _ = m.residuals(x_rows, table)
        return (r * r).sum(2), m.gather(m.constant, table).sum(1)

    def report(self) -> Tensor:
        p = self.problem
        return frame_costs(self.frame_cost + self.motion.constant + self.motion_cost,
                           self.prior_cost, p.groups, p.counts)

    def linearize(self, units: Tensor) -> Tuple[Tensor, Tensor]:
        bad, grad_max = super().linearize(units)
        m = self.motion
        chains, table, loc = self._chains(units)
        X = m.gather(self.x, table)
        r, coef = m.residuals(X, table)
        motion = (r * r).sum(2)
        self.motion_cost[table[table >= 0]] = motion[table >= 0]
        extra = motion.sum(1) + m.gather(m.constant, table).sum(1)
        Ga = units.numel()
        self.cost[units] = self.cost[units] + sum_into(extra, loc, Ga)
        grad = m.gather(self.gx, table) + m.normal(r, coef)[0]
        grad_max = torch.maximum(grad_max, scatter_max(grad.abs().amax((1, 2)), loc, Ga))
        return bad | ~torch.isfinite(self.cost[units]), grad_max

    def propose(self, units: Tensor, lam: Tensor) -> GroupChainTrial:
        p, m = self.problem, self.motion
        Px, Ga = p.Px, units.numel()
        idx, loc_frames = self._frames(units)
        chains, table, loc = self._chains(units)
        valid = (table >= 0)[..., None]
        X = m.gather(self.x, table)
        r, coef = m.residuals(X, table)
        grad_m, diag_m, below_m = m.normal(r, coef)
        gx = m.gather(self.gx, table) + grad_m                             # (m, T, Px)
        U = m.gather(self.U, table)                                        # (m, T, Px, Px)
        W = m.gather(self.W, table)                                        # (m, T, Px, Py)
        V, gy, y = self.V[units], self.gy[units], self.y[units]
        dU = (U.diagonal(dim1=-2, dim2=-1).to(self.dtype) + diag_m) * valid
        dV = V.diagonal(dim1=-2, dim2=-1).to(self.dtype)
        # the mean and the largest diagonal entry of each group's whole system
        mean = (sum_into(dU.sum((1, 2)), loc, Ga) + dV.sum(1)) / (
            p.counts[units].to(self.dtype) * Px + p.Py)
        largest = torch.maximum(dV.amax(1), scatter_max(dU.amax((1, 2)), loc, Ga))
        C, T = table.shape
        Dx = self.damping(dU.reshape(C, -1), mean[loc], largest[loc]).reshape(C, T, Px) * valid
        Dy = self.damping(dV, mean, largest)
        A = U.clone()
        A.diagonal(dim1=-2, dim2=-1).add_((diag_m + lam[loc, None, None] * Dx).to(A.dtype))
        # U^-1 [gx, W] in one solve
        solved_x, chain_info = banded_solve(
            A, below_m.to(A.dtype),
            torch.cat([gx.to(A.dtype)[..., None], W.to(A.dtype)], -1), m.lengths[chains])
        z, Y = solved_x[..., 0], solved_x[..., 1:]
        S = V - sum_into((W.mT @ Y).sum(1), loc, Ga)
        S.diagonal(dim1=-2, dim2=-1).add_((lam[:, None] * Dy).to(S.dtype))
        rhs = -gy.to(S.dtype) + sum_into((W.mT @ z[..., None])[..., 0].sum(1), loc, Ga)
        schur, info = torch.linalg.cholesky_ex(S)
        dy = torch.cholesky_solve(rhs[..., None], schur)[..., 0]
        chain_ok = sum_into((chain_info != 0).to(self.dtype), loc, Ga) == 0
        solved = (info == 0) & chain_ok & torch.isfinite(dy).all(1)
        dy = torch.where(solved[:, None], dy, torch.zeros_like(dy))
        dx = -(z + (Y @ dy[loc][:, None, :, None])[..., 0]) * valid
        dx = torch.where(solved[loc][:, None, None], dx, torch.zeros_like(dx))
        dx, dy = dx.to(self.dtype), dy.to(self.dtype)
        gs = sum_into((gx * dx).sum((1, 2)), loc, Ga) + (gy * dy).sum(1)
        # s^T H s of the undamped system from (H + lam D) s = -g
        curvature = (-gs - sum_into((lam[loc, None, None] * Dx * dx * dx).sum((1, 2)), loc, Ga)
                     - (lam[:, None] * Dy * dy * dy).sum(1))
        predicted = torch.where(solved, -(2.0 * gs + curvature),
                                torch.full_like(lam, float('inf')))
        step = torch.zeros_like(self.x)
        step[table[table >= 0]] = dx[table >= 0]
        dx_frames = step[idx]
        x = self.x[idx]
        step_max = torch.maximum(dy.abs().amax(1), scatter_max(
            dx_frames.abs().amax(1) if Px else dx_frames.new_zeros(idx.numel()), loc_frames, Ga))
        size_max = torch.maximum(y.abs().amax(1), scatter_max(
            x.abs().amax(1) if Px else x.new_zeros(idx.numel()), loc_frames, Ga))
        return GroupChainTrial(units, idx, loc_frames, x + dx_frames, y + dy, solved,
                               predicted, step_max, size_max)

    def evaluate(self, trial: GroupChainTrial, linearize: bool) -> Tensor:
        cost = super().evaluate(trial, linearize)
        m = self.motion
        _, table, loc = self._chains(trial.units)
        row = torch.full((self.problem.B,), -1, dtype=torch.long, device=self.device)
        row[trial.frames] = torch.arange(trial.frames.numel(), device=self.device)
        X = m.gather(trial.x, row[table.clamp_min(0)].masked_fill(table < 0, -1))
        motion, constant = self._extra(X, table)
        per_frame = torch.zeros(trial.frames.numel(), dtype=self.dtype, device=self.device)
        per_frame[row[table[table >= 0]]] = motion[table >= 0]
        trial.motion_cost = per_frame
        trial.cost = cost + sum_into(motion.sum(1) + constant, loc, trial.units.numel())
        return trial.cost

    def take(self, trial: GroupChainTrial, accept: Tensor) -> None:
        super().take(trial, accept)
        keep = accept[trial.loc]
        self.motion_cost[trial.frames] = torch.where(keep, trial.motion_cost,
                                                     self.motion_cost[trial.frames])
        return None


__all__ = ['GroupChainSystem', 'GroupChainTrial']
