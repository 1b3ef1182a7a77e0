"""The damped Gauss-Newton step ``(H + diag(d)) s = -g`` of a batch, using the columns'
fixed coupling structure.

Two columns meet in a body's ``J^T J`` only when some point depends on both: a joint's
rotation meets its ancestors and descendants, not its cousins. :func:`plan_solve`
decides once per stage from the structural coupling ((P, P) bool,
:meth:`~.levenberg_marquardt.LeastSquaresProblem.column_coupling`):

- a sparse factorisation over the kinematic tree
  (:class:`~smilfit.ops.sparse_cholesky.SparseCholeskyPlan`, limbs eliminated onto the
  trunk level by level, each level one batched step) where it saves enough work;
- else, where enough columns meet no other (the rotations of joints no keypoint lies
  below, held only by a prior separable per column, such as the L2 pose prior on the
  mouse's unlabelled paws and tail tip), their steps are divisions and the rest is
  factorised densely without them;
- else one dense factorisation.

Also tried: eliminating the limbs one joint block at a time (1152 factorisations of
18 x 18 for the stick insect's (64, 173, 173)) was slower than one batched dense
factorisation; the level-batched elimination is not.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

from smilfit.ops.cholesky import cholesky
from smilfit.ops.sparse_cholesky import SparseCholeskyPlan

Tensor = torch.Tensor


@dataclass
class SolvePlan:
    """How to solve the damped normal equations of one stage (fixed by the structure).

    Attributes:
        separable: (S,) columns coupled to no other: stepped by division.
        coupled: (Pc,) the others, factorised together.
        coupled_flat: (Pc * Pc,) their block's places in the flattened (P * P) system.
    """

    separable: Tensor
    coupled: Tensor
    coupled_flat: Tensor

    def to(self, device) -> 'SolvePlan':
        """The plan with its index tensors on ``device``."""
        return SolvePlan(self.separable.to(device), self.coupled.to(device),
                         self.coupled_flat.to(device))


#: A plan splits the separable columns off only when they are at least this fraction of
#: all: gathering the coupled block costs about what factorising that many more saves
#: (measured: 6 of 173 stick-insect columns made the fit slower, 30 of 97 mouse
#: columns made it faster).
SEPARABLE_MIN_FRACTION = 0.1


#: The sparse factorisation (:mod:`smilfit.ops.sparse_cholesky`) is used where it needs
#: at most this fraction of the dense one's flops and the system has at least
#: :data:`SPARSE_MIN_SIZE` columns: each of its elimination steps is a handful of tensor
#: operations, so it wins on work, not on tiny systems (measured on the 2-core CPU
#: machine: the stick insect's (64, 173, 173), 1/19 of the flops, factorised and solved in
#: about 0.6x the time of the dense in-place LAPACK factorisation).
SPARSE_MAX_FLOP_FRACTION = 0.25
SPARSE_MIN_SIZE = 32


def plan_solve(coupling: Tensor) -> Optional[Union[SolvePlan, SparseCholeskyPlan]]:
    """How to solve the stage's damped systems, from its structural coupling (P, P)
    bool (True where two columns can meet in ``J^T J``; the diagonal is ignored): a
    :class:`~smilfit.ops.sparse_cholesky.SparseCholeskyPlan` where the coupling is
    sparse enough (a body's kinematic tree), a :class:`SolvePlan` splitting off the
    separable columns, or ``None`` when one dense factorisation of the whole system is
    as good."""
    coupling = coupling.detach().to('cpu', torch.bool).clone()
    P = coupling.shape[0]
    if P >= SPARSE_MIN_SIZE:
        sparse = _sparse_plan(P, coupling.numpy().tobytes())
        if sparse.flops <= SPARSE_MAX_FLOP_FRACTION * sparse.dense_flops:
            return sparse
    coupling.fill_diagonal_(False)
    separable = ~coupling.any(1)
    if int(separable.sum()) < SEPARABLE_MIN_FRACTION * P:
        return None
    coupled = torch.nonzero(~separable).flatten()
    return SolvePlan(torch.nonzero(separable).flatten(), coupled,
                     (coupled[:, None] * P + coupled[None, :]).flatten())


@functools.lru_cache(maxsize=16)
def _sparse_plan(P: int, pattern: bytes) -> SparseCholeskyPlan:
    """The sparse plan of a (P, P) bool pattern given as its bytes: a pure function of
    the structure, kept for the next fit of the same stage (its symbolic analysis costs a
    few milliseconds; the plans are never modified)."""
    return SparseCholeskyPlan.build(torch.frombuffer(bytearray(pattern), dtype=torch.bool)
                                    .reshape(P, P))


def damped_step(H: Tensor, g: Tensor, damping: Tensor,
                plan: Optional[Union[SolvePlan, SparseCholeskyPlan]]
                ) -> Tuple[Tensor, Tensor, Tensor]:
    """The step ``-(H + diag(damping))^-1 g`` (n, P), the factorisation's ``info`` (n,)
    (0: succeeded) and the curvature ``step^T H step`` (n,) of the undamped system, in
    ``H``'s dtype.

    Args:
        H: (n, P, P) normal equations, left as they are (a damped copy is factorised,
            :func:`smilfit.ops.cholesky.cholesky`).
        g: (n, P) gradients.
        damping: (n, P) the diagonal added.
        plan: :func:`plan_solve`'s plan, or ``None``: one dense factorisation. A
            sparse plan reads ``H`` only inside its pattern.
    """
    n, P = g.shape
    if isinstance(plan, SparseCholeskyPlan):
        factor = plan.factorize(H, damping, rhs=g.to(H.dtype))
        step = -factor.solve()
        return step, factor.info, _curvature(g, damping, step)
    if plan is None:
        # The damped copy is factorised in place (the LAPACK path makes no other copy).
        damped = H.clone()
        damped.diagonal(dim1=-2, dim2=-1).add_(damping)
        factor = cholesky(damped, overwrite=True)
        step = -factor.solve(g)
        return step, factor.info, _curvature(g, damping, step)
    Pc = plan.coupled.numel()
    Hc = H.reshape(n, -1).index_select(1, plan.coupled_flat).view(n, Pc, Pc)
    Hc.diagonal(dim1=-2, dim2=-1).add_(damping.index_select(1, plan.coupled))
    factor = cholesky(Hc, overwrite=True)
    step_c = -factor.solve(g.index_select(1, plan.coupled))
    denom = (H.diagonal(dim1=-2, dim2=-1).index_select(1, plan.separable)
             + damping.index_select(1, plan.separable))
    g_s = g.index_select(1, plan.separable).to(H.dtype)
    # A column nothing constrains and nothing damps (denominator 0) has gradient 0.
    step_s = torch.where(denom > 0, -g_s / denom.clamp_min(torch.finfo(H.dtype).tiny),
                         torch.zeros_like(g_s))
    step = H.new_empty(n, P)
    step.index_copy_(1, plan.coupled, step_c.to(H.dtype))
    step.index_copy_(1, plan.separable, step_s)
    return step, factor.info, _curvature(g, damping, step)


def _curvature(g: Tensor, damping: Tensor, step: Tensor) -> Tensor:
    """``step^T H step`` (n,) without touching ``H``: ``(H + diag(d)) step = -g`` gives
    ``step^T H step = -g^T step - sum d step^2`` (a sum of two non-negative terms, so no
    cancellation), in ``step``'s dtype."""
    g = g.to(step.dtype)
    return -(g * step).sum(1) - (damping.to(step.dtype) * step * step).sum(1)


__all__ = ['SolvePlan', 'plan_solve', 'damped_step', 'SEPARABLE_MIN_FRACTION',
           'SPARSE_MAX_FLOP_FRACTION', 'SPARSE_MIN_SIZE']
