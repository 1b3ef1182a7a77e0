"""The Levenberg-Marquardt loop, one for every kind of problem.

A *system* (:class:`LMSystem`) holds a batch of independent *units* (a sample each in
:class:`~.sample_system.SampleSystem`, a group of samples sharing parameters in
:class:`~.group_system.GroupSystem`): their parameters, costs and normal equations. The
loop asks it to linearise the units that moved, to propose every running unit's damped
step and to evaluate it; :class:`~.trust_region.TrustRegion` accepts or rejects each
step, updates the damping and says which units have stopped.

Independence: every unit has its own damping, acceptance and stopping; the units still
running are gathered into a compact batch each iteration, so a unit's trajectory does
not depend on the others (fitting frames one by one gives the same result).
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, Tuple

import torch

from .options import LMOptions
from .trust_region import TrustRegion

Tensor = torch.Tensor

#: The share of accepted steps above which the next trial points are linearised
#: directly (where the system can): a linearisation costs about 2-3 cost evaluations,
#: so linearising trials pays once most of them are taken.
LINEARIZE_TRIALS_MIN_ACCEPTANCE = 0.7


class Trial(Protocol):
    """A proposed step of some units, as a system returns it from :meth:`LMSystem.propose`.

    Attributes:
        units: (m,) the units stepped.
        solved: (m,) bool, the damped system was solved (elsewhere the step is 0).
        predicted: (m,) the decrease the linear model predicts (``inf`` where not
            solved).
        step_max, size_max: (m,) the step's and the current parameters' largest
            magnitude.
        settled: (m,) bool, optional (systems that have a test of their own): the step
            changes nothing the data can tell, so an accepted one is the unit's last.
    """

    units: Tensor
    solved: Tensor
    predicted: Tensor
    step_max: Tensor
    size_max: Tensor


class LMSystem(Protocol):
    """What :func:`levenberg_marquardt` needs of a batch of independent problems."""

    #: Number of units; their dtype and device (of the costs).
    num_units: int
    dtype: torch.dtype
    device: torch.device
    #: Whether :meth:`evaluate` can linearise at the trial point in the same pass.
    linearizes_trials: bool
    #: Whether ``options.progress_tol`` stops a unit too (:class:`~.trust_region.
    #: TrustRegion`): chains of frames coupled in time with nothing shared, whose last
    #: steps creep along directions the labels hardly see (a bone's twist).
    stops_on_progress: bool

    def finished(self) -> Tensor:
        """(U,) bool: units with nothing to fit from the start."""

    def linearize(self, units: Tensor) -> Tuple[Tensor, Tensor]:
        """Linearise ``units`` (m,) at their current parameters and keep the result;
        ``(non-finite (m,) bool, largest gradient entry (m,))``."""

    def costs(self) -> Tensor:
        """(U,) the units' current costs."""

    def propose(self, units: Tensor, lam: Tensor) -> Trial:
        """The damped steps of ``units`` (m,) for damping ``lam`` (m,)."""

    def evaluate(self, trial: Trial, linearize: bool) -> Tensor:
        """(m,) the costs at the trial points (linearising there too if asked)."""

    def take(self, trial: Trial, accept: Tensor) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
        """Move the accepted units (m,) bool to their trial points; where the trial was
        linearised, ``(units, non-finite, largest gradient entry)`` of those taken."""

    def report(self) -> Tensor:
        """(B,) per-sample costs for progress hooks."""


def levenberg_marquardt(system: LMSystem, max_iter: int, options: LMOptions,
                        ftol: float = 1e-9, gtol: float = 1e-7,
                        on_iteration: Callable[[int, Tensor], None] = None,
                        on_start: Callable[[Tensor], None] = None
                        ) -> Tuple[Tensor, int, Tensor]:
    """Minimise every unit's least-squares problem independently; the result stays in
    ``system``.

    Args:
        system: the :class:`LMSystem`.
        max_iter: iterations (each: at most one linearisation and one trial step per
            running unit).
        options: :class:`~.options.LMOptions`.
        ftol: a unit stops when an accepted step lowers its cost by less than ``ftol``
            times the cost, or a rejected step's predicted decrease is below that
            (raised to 16 rounding errors of the dtype, :class:`~.trust_region.TrustRegion`).
        gtol: a unit stops when the largest entry of its gradient ``J^T r`` is below this.
        on_iteration: called with the iteration number and :meth:`LMSystem.report`
            after it (progress hooks, loss history).
        on_start: called once with the (U,) costs at the start, from the first
            linearisation (when ``max_iter`` > 0).

    Returns:
        ``(diverged (U,) bool, iterations run, steps (U,) long)``: ``steps`` counts the
        iterations in which each unit was stepped (its own LM iterations: a unit that
        stops early is not stepped again), so ``iterations`` is the largest of them.
    """
    U = system.num_units
    region = TrustRegion(U, options, ftol, system.dtype, system.device,
                         progress_tol=options.progress_tol if system.stops_on_progress else 0.0)
    done = system.finished().clone()
    diverged = torch.zeros(U, dtype=torch.bool, device=system.device)
    stale = torch.ones(U, dtype=torch.bool, device=system.device)   # needs a linearisation
    steps = torch.zeros(U, dtype=torch.long, device=system.device)

    def absorb(units: Tensor, bad: Tensor, grad_max: Tensor) -> None:
        diverged[units[bad]] = True
        done[units[bad | (grad_max <= gtol)]] = True
        stale[units] = False

    # Linearise at the trial point itself (one pass gives its cost, g and H) while most
    # steps are accepted: an accepted step then needs no second pass over the model
    # and the keypoints; a rejected one wastes that linearisation.
    linearize_trials = False
    iterations = 0
    for it in range(max_iter):
        relin = stale & ~done
        if bool(relin.any()):
            units = torch.nonzero(relin).flatten()
            absorb(units, *system.linearize(units))
        if it == 0 and on_start is not None:   # (every unit was linearised at the start)
            on_start(system.costs().clone())
        active = torch.nonzero(~done).flatten()
        if active.numel() == 0:
            break
        iterations = it + 1
        steps[active] += 1
        trial = system.propose(active, region.lam[active])
        # (the last iteration's trials need their cost only)
        linearize_trials = linearize_trials and it + 1 < max_iter
        new_cost = system.evaluate(trial, linearize_trials)
        accept, stop = region.judge(active, system.costs()[active], new_cost,
                                    trial.predicted, trial.solved, trial.step_max,
                                    trial.size_max, getattr(trial, 'settled', None))
        taken = system.take(trial, accept)
        if taken is not None:
            absorb(*taken)
        else:
            stale[active] = accept
        linearize_trials = system.linearizes_trials and bool(
            accept.float().mean() >= LINEARIZE_TRIALS_MIN_ACCEPTANCE)
        done[active[stop]] = True
        if on_iteration is not None:
            on_iteration(iterations, system.report())
    return diverged, iterations, steps


__all__ = ['LMSystem', 'Trial', 'levenberg_marquardt', 'LINEARIZE_TRIALS_MIN_ACCEPTANCE']
