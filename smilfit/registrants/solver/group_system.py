"""Levenberg-Marquardt state of groups of samples sharing parameters: every group its own
unit (an :class:`~.loop.LMSystem` over a :class:`~.group_problem.GroupLeastSquaresProblem`).

The shared parameters couple a group's frames, so they accept or reject a step
together; ``'levenberg'`` damping adds ``lambda_g`` times the mean diagonal of the
group's whole system (frames and shared block), ``'marquardt'`` ``lambda_g`` times each
diagonal entry (floored at the group's largest).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .group_problem import GroupLeastSquaresProblem, frame_costs
from .linear_solver import BlockArrow, SchurComplement
from .scatter import scatter_max, sum_into
from .trust_region import DAMPING

Tensor = torch.Tensor


@dataclass
class GroupTrial:
    """A proposed step of the groups ``units`` (see :class:`~.loop.Trial`)."""

    units: Tensor          # (Ga,) groups
    frames: Tensor         # (n,) their frames
    loc: Tensor            # (n,) each frame's row in units
    x: Tensor              # (n, Px) the frames' trial parameters
    y: Tensor              # (Ga, Py) the groups' trial parameters
    solved: Tensor
    predicted: Tensor
    step_max: Tensor
    size_max: Tensor
    frame_cost: Optional[Tensor] = None   # (n,) at the trial point, once evaluated
    prior_cost: Optional[Tensor] = None   # (Ga,)
    cost: Optional[Tensor] = None         # (Ga,)


class GroupSystem:
    """Every frame's parameters ``x`` (B, Px), every group's ``y`` (G, Py), their costs and
    block-arrow normal equations.

    Args:
        problem: the stage's :class:`~.group_problem.GroupLeastSquaresProblem`.
        damping: a name of :data:`~.trust_region.DAMPING`.
    """

    linearizes_trials = False
    stops_on_progress = False

    def __init__(self, problem: GroupLeastSquaresProblem, damping: str) -> None:
        self.problem = problem
        self.x, self.y = problem.initial()
        B, G, Px, Py = problem.B, problem.G, problem.Px, problem.Py
        self.num_units = G
        self.dtype, self.device = self.y.dtype, self.y.device
        dtype, device = self.dtype, self.device
        ldt = problem.per_frame.linear_dtype or dtype
        self.frame_cost = torch.zeros(B, dtype=dtype, device=device)
        self.U = torch.zeros(B, Px, Px, dtype=ldt, device=device)
        self.W = torch.zeros(B, Px, Py, dtype=ldt, device=device)
        self.gx = torch.zeros(B, Px, dtype=dtype, device=device)
        self.V = torch.zeros(G, Py, Py, dtype=ldt, device=device)
        self.gy = torch.zeros(G, Py, dtype=dtype, device=device)
        self.cost = torch.zeros(G, dtype=dtype, device=device)
        self.prior_cost = torch.zeros(G, dtype=dtype, device=device)
        self.damping = DAMPING[damping]
        self.solver = SchurComplement()

    def finished(self) -> Tensor:
        return self.problem.counts == 0      # a group without frames has nothing to fit

    def costs(self) -> Tensor:
        return self.cost

    def report(self) -> Tensor:
        """(B,) frame costs, a group's priors spread evenly over its frames."""
        p = self.problem
        return frame_costs(self.frame_cost, self.prior_cost, p.groups, p.counts)

    def _frames(self, units: Tensor) -> Tuple[Tensor, Tensor]:
        """The frames (n,) of the groups ``units`` and each one's row in ``units``."""
        p = self.problem
        running = torch.zeros(p.G, dtype=torch.bool, device=self.device)
        running[units] = True
        frames = torch.nonzero(running[p.groups]).flatten()
        local = torch.full((p.G,), -1, dtype=torch.long, device=self.device)
        local[units] = torch.arange(units.numel(), device=self.device)
        return frames, local[p.groups[frames]]

    def linearize(self, units: Tensor) -> Tuple[Tensor, Tensor]:
        p, Px = self.problem, self.problem.Px
        idx, loc = self._frames(units)
        Ga = units.numel()
        # Without per-frame parameters only the group sums of J^T J are needed:
        # built summed, never as (n, P, P) per-frame matrices.
        (c, g, H), (pc, pg, pH) = p.linearize(self.x[idx], self.y[units], idx, units, loc,
                                              summed=Px == 0)
        V = (H if Px == 0 else sum_into(H[:, Px:, Px:], loc, Ga)) + pH
        gy = sum_into(g[:, Px:], loc, Ga) + pg
        cost = sum_into(c, loc, Ga) + pc
        finite = torch.isfinite(c) & torch.isfinite(g.sum(1))
        if Px:
            finite &= torch.isfinite(H.sum((1, 2)))
            self.U[idx], self.W[idx] = H[:, :Px, :Px], H[:, :Px, Px:]
        bad = (sum_into((~finite).to(self.dtype), loc, Ga) > 0) | ~torch.isfinite(cost) \
            | ~torch.isfinite(gy.sum(1)) | ~torch.isfinite(V.sum((1, 2)))
        self.gx[idx] = g[:, :Px]
        self.frame_cost[idx] = c
        self.V[units], self.gy[units] = V.to(self.V.dtype), gy
        self.cost[units], self.prior_cost[units] = cost, pc
        grad_max = torch.maximum(gy.abs().amax(1), scatter_max(
            g[:, :Px].abs().amax(1) if Px else c.new_zeros(c.shape), loc, Ga))
        return bad, grad_max

    def propose(self, units: Tensor, lam: Tensor) -> GroupTrial:
        p, Px, Py = self.problem, self.problem.Px, self.problem.Py
        idx, loc = self._frames(units)
        Ga = units.numel()
        U, W, gx, x = self.U[idx], self.W[idx], self.gx[idx], self.x[idx]
        V, gy, y = self.V[units], self.gy[units], self.y[units]
        dU, dV = self.solver.diagonal(BlockArrow(U, W, V, loc))
        # the mean and the largest diagonal entry of each group's whole system
        mean = (sum_into(dU.sum(1), loc, Ga) + dV.sum(1)) / (
            p.counts[units].to(dU.dtype) * Px + Py)
        largest = torch.maximum(dV.amax(1), scatter_max(
            dU.amax(1) if Px else dU.new_zeros(idx.numel()), loc, Ga))
        Dx = self.damping(dU, mean[loc], largest[loc])
        Dy = self.damping(dV, mean, largest)
        (dx, dy), info, curvature = self.solver.solve(
            BlockArrow(U, W, V, loc), (gx, gy), (lam[loc, None] * Dx, lam[:, None] * Dy))
        solved = info == 0
        dx, dy = dx.to(self.dtype), dy.to(self.dtype)
        # predicted decrease: -(2 g.s + s^T H s) over the group's whole system; a failed
        # factorisation: rejected, the damping grows and it tries again
        predicted = -(sum_into(2.0 * (gx * dx).sum(1), loc, Ga) + 2.0 * (gy * dy).sum(1)
                      + curvature)
        predicted = torch.where(solved, predicted, torch.full_like(predicted, float('inf')))
        step_max = torch.maximum(dy.abs().amax(1), scatter_max(
            dx.abs().amax(1) if Px else dx.new_zeros(idx.numel()), loc, Ga))
        size_max = torch.maximum(y.abs().amax(1), scatter_max(
            x.abs().amax(1) if Px else x.new_zeros(idx.numel()), loc, Ga))
        return GroupTrial(units, idx, loc, x + dx, y + dy, solved, predicted, step_max,
                          size_max)

    def evaluate(self, trial: GroupTrial, linearize: bool) -> Tensor:
        trial.frame_cost, trial.prior_cost = self.problem.cost(trial.x, trial.y, trial.frames,
                                                               trial.units, trial.loc)
        trial.cost = sum_into(trial.frame_cost, trial.loc, trial.units.numel()) \
            + trial.prior_cost
        return trial.cost

    def take(self, trial: GroupTrial, accept: Tensor) -> None:
        units, idx, loc = trial.units, trial.frames, trial.loc
        take = accept[loc]
        self.x[idx] = torch.where(take[:, None], trial.x, self.x[idx])
        self.y[units] = torch.where(accept[:, None], trial.y, self.y[units])
        self.frame_cost[idx] = torch.where(take, trial.frame_cost, self.frame_cost[idx])
        self.prior_cost[units] = torch.where(accept, trial.prior_cost, self.prior_cost[units])
        self.cost[units] = torch.where(accept, trial.cost, self.cost[units])
        return None


__all__ = ['GroupSystem', 'GroupTrial']
