"""The trust-region side of Levenberg-Marquardt: damping, Nielsen's update, acceptance and
the stopping tests, for a batch of independent *units* (samples, or groups of samples
sharing parameters).

Every unit has its own damping ``lambda`` and growth factor ``nu``; a step is accepted
where it lowers the unit's cost, and ``lambda`` follows the ratio ``rho`` of the actual
to the predicted decrease (Nielsen 1999: shrunk by ``max(1/3, 1 - (2 rho - 1)^3)`` on
acceptance, multiplied by ``nu`` (doubling each time) on rejection).

To add a damping strategy, add a function to :data:`DAMPING`: it maps the diagonal of a
unit's ``J^T J`` (and, for a unit of several rows, the unit's mean and largest diagonal
entry) to the diagonal ``D`` that ``lambda D`` is added to.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch

Tensor = torch.Tensor


def levenberg_damping(diag: Tensor, mean: Optional[Tensor] = None,
                      largest: Optional[Tensor] = None) -> Tensor:
    """``mean(diag) I``: directions the data leave free (a bone's twist with one child)
    get minimum-norm steps instead of huge ones.

    Args:
        diag: (n, P) diagonal entries of ``J^T J`` (each row belongs to one unit).
        mean: (n,) the mean diagonal entry of the row's unit (its whole system; default:
            the row's own mean).
        largest: (n,) the largest diagonal entry of the row's unit (unused).
    """
    return (diag.mean(1) if mean is None else mean)[:, None].expand_as(diag)


def marquardt_damping(diag: Tensor, mean: Optional[Tensor] = None,
                      largest: Optional[Tensor] = None) -> Tensor:
    """``diag(J^T J)`` (scale-invariant), floored at ``1e-9`` of the unit's largest entry
    (default: the row's own) so that parameters nothing constrains stay solvable
    (arguments as :func:`levenberg_damping`)."""
    largest = diag.amax(1) if largest is None else largest
    return torch.maximum(diag, 1e-9 * largest.clamp_min(1e-30)[:, None])


#: Damping strategies by the name a stage's ``optimizer.damping`` gives.
DAMPING: Dict[str, Callable[..., Tensor]] = {
    'levenberg': levenberg_damping,
    'marquardt': marquardt_damping,
}


class TrustRegion:
    """Damping state and step judgement of ``n`` independent units.

    Args:
        n: number of units.
        options: the stage's :class:`~.options.LMOptions`.
        ftol: relative decrease below which a unit has converged; raised to 16
            rounding errors of ``dtype`` (2e-6 in float32), so float32 stages stop when
            converged too.
        dtype, device: of the costs.
        progress_tol: a unit also stops when an accepted step lowers its cost by less
            than this share of all it has lowered it since its first step (0: off; the
            systems of frames coupled in time use ``options.progress_tol``).
    """

    def __init__(self, n: int, options, ftol: float, dtype: torch.dtype, device,
                 progress_tol: float = 0.0) -> None:
        self.options = options
        self.lam = torch.full((n,), options.lambda_init, dtype=dtype, device=device)
        self.nu = torch.full((n,), 2.0, dtype=dtype, device=device)
        # Relative decreases below a few rounding errors of the cost are noise.
        self.rel_tol = max(float(ftol), 16.0 * torch.finfo(dtype).eps)
        self.damping = DAMPING[options.damping]
        self.progress_tol = float(progress_tol)
        #: (n,) each unit's cost before its first step (NaN until it is stepped)
        self.first_cost = torch.full((n,), float('nan'), dtype=dtype, device=device)

    def judge(self, units: Tensor, old_cost: Tensor, new_cost: Tensor, predicted: Tensor,
              solved: Tensor, step_max: Tensor, size_max: Tensor,
              settled: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Accept or reject the trial steps of ``units`` (m,), update their damping, and
        say which have stopped.

        Args:
            units: (m,) the units stepped.
            old_cost, new_cost: (m,) costs before and at the trial point.
            predicted: (m,) the decrease the linear model predicts, ``inf`` where the
                damped system could not be solved (then the damping grows and the unit
                tries again).
            solved: (m,) bool, the damped system was solved.
            step_max, size_max: (m,) the step's and the parameters' largest magnitude.
            settled: (m,) bool or None: the step changes nothing the data can tell
                (its system's own test, e.g. :class:`~.chain_system.ChainSystem`'s
                ``noise_tol``); a unit stops after such a step where it is accepted.

        Returns:
            ``accept (m,)`` and ``stop (m,)`` bool.
        """
        opts = self.options
        first = self.first_cost[units]
        first = torch.where(torch.isnan(first), old_cost, first)
        self.first_cost[units] = first
        actual = old_cost - new_cost
        accept = solved & torch.isfinite(new_cost) & (actual > 0)
        rho = actual / predicted.clamp_min(1e-300)
        shrink = torch.clamp(1.0 - (2.0 * rho - 1.0) ** 3, min=1.0 / 3.0)
        lam, nu = self.lam[units], self.nu[units]
        self.lam[units] = torch.where(accept, lam * shrink, lam * nu)
        self.nu[units] = torch.where(accept, torch.full_like(nu, 2.0), nu * 2.0)
        small_step = step_max <= opts.xtol * (size_max + opts.xtol)
        small_gain = accept & (actual <= self.rel_tol * old_cost)
        # A decrease the model itself predicts below the precision cannot be resolved:
        # in float32 the cost's rounding noise (~1e-7 relative) would otherwise keep a
        # converged unit accepting and rejecting noise until max_iter.
        unresolvable = ~accept & (predicted <= self.rel_tol * old_cost)
        stuck = ~accept & (self.lam[units] > opts.lambda_max)
        stop = small_gain | (accept & small_step) | stuck | unresolvable | (new_cost == 0)
        if self.progress_tol > 0:
            stop = stop | (accept & (actual <= self.progress_tol * (first - new_cost)))
        if settled is not None:
            stop = stop | (accept & settled)
        return accept, stop


__all__ = ['TrustRegion', 'DAMPING', 'levenberg_damping', 'marquardt_damping']
