"""Levenberg-Marquardt state of per-sample problems: every sample its own unit (an
:class:`~.loop.LMSystem` over a :class:`~.problem.LeastSquaresProblem`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .problem import LeastSquaresProblem
from .trust_region import DAMPING

Tensor = torch.Tensor


@dataclass
class SampleTrial:
    """A proposed step of the samples ``units`` (see :class:`~.loop.Trial`)."""

    units: Tensor
    x: Tensor              # (m, P) the trial points
    before: Tensor         # (m, P) the current points
    solved: Tensor
    predicted: Tensor
    step_max: Tensor
    size_max: Tensor
    cost: Optional[Tensor] = None   # (m,) at the trial points, once evaluated
    # cost, g and H at the trial points where they were linearised
    linearized: Optional[Tuple[Tensor, Tensor, Tensor]] = None


class SampleSystem:
    """Every sample's parameters ``x`` (B, P), cost, gradient and normal equations.

    Args:
        problem: the stage's :class:`~.problem.LeastSquaresProblem`.
        x0: (B, P) starting parameters.
        damping: a name of :data:`~.trust_region.DAMPING`.
        skip: (B,) bool, samples that keep ``x0`` (finished from the start; never
            evaluated), or ``None``.
    """

    linearizes_trials = True
    stops_on_progress = False

    def __init__(self, problem: LeastSquaresProblem, x0: Tensor, damping: str,
                 skip: Optional[Tensor] = None) -> None:
        self.problem = problem
        self.x = x0.clone()
        self.num_units, P = x0.shape
        self.dtype, self.device = x0.dtype, x0.device
        self.cost = torch.zeros(self.num_units, dtype=self.dtype, device=self.device)
        self.g = torch.zeros(self.num_units, P, dtype=self.dtype, device=self.device)
        self.H: Optional[Tensor] = None   # (B, P, P), or (B, width) packed
        #: (B, P) where every sample was last linearised (its g and H are there)
        self.x_linearized = self.x.clone()
        self.ldt = problem.linear_dtype or self.dtype
        self.damping = DAMPING[damping]
        self.skip = (torch.zeros(self.num_units, dtype=torch.bool, device=self.device)
                     if skip is None else skip.to(device=self.device, dtype=torch.bool))

    def finished(self) -> Tensor:
        return self.skip.clone()

    def costs(self) -> Tensor:
        return self.cost

    def report(self) -> Tensor:
        return self.cost

    def linearize(self, units: Tensor) -> Tuple[Tensor, Tensor]:
        # the solvers read H's upper triangle only
        return self._absorb(units, *self.problem.linearize(self.x[units], units,
                                                           upper_only=True))

    def _absorb(self, units: Tensor, c: Tensor, g: Tensor, H: Tensor) -> Tuple[Tensor, Tensor]:
        # A sum is non-finite when any entry is (and is cheaper than checking each
        # of H's P*P entries).
        bad = ~(torch.isfinite(c) & torch.isfinite(g.sum(1))
                & torch.isfinite(H.sum(tuple(range(1, H.dim())))))
        self.x_linearized[units] = self.x[units]
        if units.numel() == self.num_units:  # every sample (the first iteration, often later)
            self.cost, self.g, self.H = c.clone(), g.clone(), H.to(self.ldt)
        else:
            if self.H is None:   # a first linearisation without the skipped samples
                self.H = H.new_zeros((self.num_units,) + tuple(H.shape[1:]), dtype=self.ldt)
            self.cost[units], self.g[units], self.H[units] = c, g, H
        return bad, g.abs().amax(1)

    def propose(self, units: Tensor, lam: Tensor) -> SampleTrial:
        everyone = units.numel() == self.num_units
        H, g, x = (self.H, self.g, self.x) if everyone else (
            self.H[units], self.g[units], self.x[units])
        solver = self.problem.solver
        diag = solver.diagonal(H)
        D = self.damping(diag)     # (each sample its own unit)
        step, info, curvature = solver.solve(H, g, (lam[:, None] * D).to(H.dtype))
        solved = info == 0
        step = torch.where(solved[:, None], step.to(self.dtype), torch.zeros_like(g))
        predicted = torch.where(solved, -(2.0 * (g * step).sum(1) + curvature.to(self.dtype)),
                                torch.full_like(lam, float('inf')))
        return SampleTrial(units, x + step, x, solved, predicted, step.abs().amax(1),
                           x.abs().amax(1))

    def evaluate(self, trial: SampleTrial, linearize: bool) -> Tensor:
        if linearize:
            trial.linearized = self.problem.linearize(trial.x, trial.units, upper_only=True)
            trial.cost = trial.linearized[0]
        else:
            trial.cost = self.problem.cost(trial.x, trial.units)
        return trial.cost

    def take(self, trial: SampleTrial, accept: Tensor
             ) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
        units = trial.units
        # (where before assignment: trial.before may be self.x itself)
        self.x[units] = torch.where(accept[:, None], trial.x, trial.before)
        self.cost[units] = torch.where(accept, trial.cost, self.cost[units])
        if trial.linearized is None:
            return None
        taken = torch.nonzero(accept).flatten()
        c, g, H = (t[taken] for t in trial.linearized)
        return (units[taken],) + self._absorb(units[taken], c, g, H)


__all__ = ['SampleSystem', 'SampleTrial']
