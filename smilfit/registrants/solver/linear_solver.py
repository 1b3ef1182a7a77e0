"""Linear solvers of the damped Gauss-Newton system ``(H + diag(d)) s = -g``, batched,
behind one interface (:class:`LinearSolver`).

Two columns meet in a body's ``J^T J`` only when some point depends on both: a joint's
rotation meets its ancestors and descendants, not its cousins. :func:`plan_linear_solver`
picks once per stage, from the structural coupling ((P, P) bool,
:meth:`~.problem.LeastSquaresProblem.column_coupling`):

- :class:`SparseCholesky`: a sparse factorisation over the kinematic tree
  (:class:`~smilfit.ops.sparse_cholesky.SparseCholeskyPlan`, limbs eliminated onto the
  trunk level by level, each level one batched step) where it saves enough work; it
  wants ``H`` packed (its :attr:`~LinearSolver.layout`), and factorises a batch of a few
  systems (a stage's last samples still stepping) densely;
- :class:`SeparableSplit`: where enough columns meet no other (the rotations of joints no
  keypoint lies below, held only by a prior separable per column, such as the L2 pose
  prior on the mouse's unlabelled paws and tail tip), their steps are divisions and the
  rest is factorised densely without them;
- :class:`DenseCholesky`: one dense factorisation.

:class:`SchurComplement` solves the block-arrow systems of groups of samples sharing
parameters (:mod:`.group_problem`).

To add a linear solver, subclass :class:`LinearSolver` (``solve``, and ``layout`` if it
wants ``H`` stored other than as (n, P, P) matrices) and return it from
:func:`plan_linear_solver` where it applies.

Also tried: eliminating the limbs one joint block at a time (1152 factorisations of
18 x 18 for the stick insect's (64, 173, 173)) was slower than one batched dense
factorisation; the level-batched elimination is not.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Tuple

import torch

from smilfit.ops.cholesky import cholesky
from smilfit.ops.sparse_cholesky import SparseCholeskyPlan
from .normal_equations import PackedLayout
from .scatter import sum_into

Tensor = torch.Tensor


class LinearStep(NamedTuple):
    """A solver's answer: the step (n, P) in ``H``'s dtype (a tuple of blocks for
    :class:`SchurComplement`), ``info`` (n,) (0: solved) and the curvature
    ``step^T H step`` (n,) of the undamped system."""

    step: object
    info: Tensor
    curvature: Tensor


class LinearSolver:
    """Solves a batch of damped normal equations ``(H + diag(damping)) s = -g``.

    Attributes:
        layout: how ``H`` must be stored: ``None`` for (n, P, P) matrices (of which
            the solvers read the upper triangle), or a
            :class:`~.normal_equations.PackedLayout`.
    """

    layout: Optional[PackedLayout] = None

    def to(self, device) -> 'LinearSolver':
        """The solver with its index tensors on ``device``."""
        return self

    def diagonal(self, H: Tensor) -> Tensor:
        """(n, P) the diagonal of ``H`` (stored in :attr:`layout`)."""
        return H.diagonal(dim1=-2, dim2=-1)

    def dense(self, H: Tensor) -> Tensor:
        """(n, P, P) matrices holding at least ``H``'s upper triangle (stored in
        :attr:`layout`)."""
        return H

    def solve(self, H: Tensor, g: Tensor, damping: Tensor) -> LinearStep:
        """The step ``-(H + diag(damping))^-1 g``.

        Args:
            H: normal equations in :attr:`layout`, left as they are.
            g: (n, P) gradients.
            damping: (n, P) the diagonal added.
        """
        raise NotImplementedError


class DenseCholesky(LinearSolver):
    """One dense factorisation of every damped system."""

    def solve(self, H: Tensor, g: Tensor, damping: Tensor) -> LinearStep:
        # The damped copy is factorised in place (the LAPACK path makes no other copy).
        damped = H.clone()
        damped.diagonal(dim1=-2, dim2=-1).add_(damping)
        factor = cholesky(damped, overwrite=True)
        step = -factor.solve(g)
        return LinearStep(step, factor.info, _curvature(g, damping, step))


class SeparableSplit(LinearSolver):
    """Columns coupled to no other stepped by division, the others factorised together.

    Args:
        separable: (S,) columns coupled to no other.
        coupled: (Pc,) the others.
        size: P, the number of columns.
    """

    def __init__(self, separable: Tensor, coupled: Tensor, size: int) -> None:
        self.separable, self.coupled, self.size = separable, coupled, size
        # (Pc * Pc,) the coupled block's places in the flattened (P * P) system
        self.coupled_flat = (coupled[:, None] * size + coupled[None, :]).flatten()

    def to(self, device) -> 'SeparableSplit':
        return SeparableSplit(self.separable.to(device), self.coupled.to(device), self.size)

    def solve(self, H: Tensor, g: Tensor, damping: Tensor) -> LinearStep:
        n, P = g.shape
        Pc = self.coupled.numel()
        Hc = H.reshape(n, -1).index_select(1, self.coupled_flat).view(n, Pc, Pc)
        Hc.diagonal(dim1=-2, dim2=-1).add_(damping.index_select(1, self.coupled))
        factor = cholesky(Hc, overwrite=True)
        step_c = -factor.solve(g.index_select(1, self.coupled))
        denom = (H.diagonal(dim1=-2, dim2=-1).index_select(1, self.separable)
                 + damping.index_select(1, self.separable))
        g_s = g.index_select(1, self.separable).to(H.dtype)
        # A column nothing constrains and nothing damps (denominator 0) has gradient 0.
        step_s = torch.where(denom > 0, -g_s / denom.clamp_min(torch.finfo(H.dtype).tiny),
                             torch.zeros_like(g_s))
        step = H.new_empty(n, P)
        step.index_copy_(1, self.coupled, step_c.to(H.dtype))
        step.index_copy_(1, self.separable, step_s)
        return LinearStep(step, factor.info, _curvature(g, damping, step))


class SparseCholesky(LinearSolver):
    """The sparse factorisation of a fixed pattern; ``H`` packed (only the pattern's
    upper triangle is stored and read).

    A batch of fewer than ``dense_below`` systems (the last samples of a stage still
    stepping) is unpacked and factorised densely: the sparse factorisation's cost is
    mostly a fixed number of tensor operations per elimination level, which a few
    systems do not repay (:data:`SPARSE_MIN_SYSTEMS`).
    """

    def __init__(self, plan: SparseCholeskyPlan, dense_below: Optional[int] = None
                 ) -> None:
        self.plan = plan
        self.layout = PackedLayout(plan.slot_map(), plan.packed_size)
        self.dense_below = SPARSE_MIN_SYSTEMS if dense_below is None else dense_below

    def to(self, device) -> 'SparseCholesky':
        return SparseCholesky(self.plan.to(device), self.dense_below)

    def diagonal(self, H: Tensor) -> Tensor:
        return H.index_select(1, self.plan.diagonal)

    def dense(self, H: Tensor) -> Tensor:
        return self.plan.unpack(H)

    def solve(self, H: Tensor, g: Tensor, damping: Tensor) -> LinearStep:
        if H.shape[0] < self.dense_below:
            return DenseCholesky().solve(self.plan.unpack(H), g, damping)
        factor = self.plan.factorize(H, damping, rhs=g.to(H.dtype))
        step = -factor.solve()
        return LinearStep(step, factor.info, _curvature(g, damping, step))


class BlockArrow(NamedTuple):
    """The normal equations of groups of samples sharing parameters:

        [ U_1           W_1 ]
        [      ...      ... ]
        [           U_n W_n ]
        [ W_1^T ... W_n^T V ]

    ``U`` (n, Px, Px) the samples' own blocks, ``W`` (n, Px, Py) their coupling to
    their group's shared parameters, ``V`` (Ga, Py, Py) the groups' shared blocks (summed
    over their samples) and ``loc`` (n,) each sample's group row in ``V``."""

    U: Tensor
    W: Tensor
    V: Tensor
    loc: Tensor


class SchurComplement(LinearSolver):
    """Every group's block-arrow system solved by eliminating its samples:

        S = V - sum_i W_i^T U_i^-1 W_i,    S dy = -gy + sum_i W_i^T U_i^-1 gx_i,
        dx_i = -U_i^-1 (gx_i + W_i dy)

    (``U``, ``V`` damped): one small dense solve per group plus one per sample, all
    batched (the samples' terms summed into their group with ``index_add``). Without
    per-sample parameters, ``S = V``."""

    def diagonal(self, H: BlockArrow) -> Tuple[Tensor, Tensor]:
        return H.U.diagonal(dim1=-2, dim2=-1), H.V.diagonal(dim1=-2, dim2=-1)

    def solve(self, H: BlockArrow, g: Tuple[Tensor, Tensor],
              damping: Tuple[Tensor, Tensor]) -> LinearStep:
        """``g = (gx (n, Px), gy (Ga, Py))`` (``gy`` summed over the group's samples),
        ``damping = (dx (n, Px), dy (Ga, Py))``. The step is ``(dx (n, Px), dy (Ga,
        Py))`` in ``H``'s dtype, ``info`` and ``curvature`` are per group (Ga,) (zero
        steps where a factorisation failed); the curvature is in ``g``'s dtype."""
        U, W, V, loc = H
        gx, gy = g
        A = U.clone()
        A.diagonal(dim1=-2, dim2=-1).add_(damping[0].to(A.dtype))
        S = V.clone()
        S.diagonal(dim1=-2, dim2=-1).add_(damping[1].to(S.dtype))
        dx, dy, ok = _solve_block_arrow(A, W, S, gx, gy, loc)
        # step^T H step of the undamped system, summed over each group
        frame = ((dx[:, None] @ U @ dx[..., None]).flatten()
                 + 2.0 * (dx[:, None] @ W @ dy[loc][..., None]).flatten()).to(gx.dtype)
        curvature = (sum_into(frame, loc, V.shape[0])
                     + (dy[:, None] @ V @ dy[..., None]).flatten().to(gy.dtype))
        return LinearStep((dx, dy), (~ok).to(torch.int32), curvature)


def _solve_block_arrow(A: Tensor, W: Tensor, V: Tensor, gx: Tensor, gy: Tensor,
                       loc: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``dx (n, Px)``, ``dy (Ga, Py)`` (in ``A``'s dtype) and ``ok (Ga,)`` of the damped
    block-arrow systems ``[[A_i, W_i], [W_i^T, V_g]] [dx; dy] = -[gx; gy]``."""
    Ga = V.shape[0]
    ldt = V.dtype
    S, rhs = V, -gy.to(ldt)
    failed = torch.zeros(Ga, dtype=torch.bool, device=V.device)
    Px = A.shape[-1]
    if Px:
        factor = cholesky(A)
        # W^T A^-1 W = Y^T Y with Y = L^-1 W (A = L L^T): one triangular solve with
        # Py columns instead of two; then each group's sums.
        Y = factor.whiten(W)
        Ainvg = factor.solve(gx)
        S = S - sum_into(Y.transpose(1, 2) @ Y, loc, Ga)
        rhs = rhs + sum_into((W.transpose(1, 2) @ Ainvg[..., None])[..., 0], loc, Ga)
        failed = sum_into((factor.info.to(V.device) != 0).to(ldt), loc, Ga) > 0
    schur = cholesky(S, overwrite=True)   # (S is this function's own copy)
    dy = schur.solve(rhs)
    ok = (schur.info.to(V.device) == 0) & ~failed & torch.isfinite(dy).all(1)
    dy = torch.where(ok[:, None], dy, torch.zeros_like(dy))
    if not Px:
        return A.new_zeros(A.shape[:2]), dy, ok
    # dx = -A^-1 (gx + W dy)
    dx = -factor.solve(gx.to(ldt) + (W @ dy[loc][..., None])[..., 0])
    return torch.where(ok[loc, None], dx, torch.zeros_like(dx)), dy, ok


def _curvature(g: Tensor, damping: Tensor, step: Tensor) -> Tensor:
    """``step^T H step`` (n,) without touching ``H``: ``(H + diag(d)) step = -g`` gives
    ``step^T H step = -g^T step - sum d step^2`` (a sum of two non-negative terms, so no
    cancellation), in ``step``'s dtype."""
    g = g.to(step.dtype)
    return -(g * step).sum(1) - (damping.to(step.dtype) * step * step).sum(1)


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

#: A :class:`SparseCholesky` batch of fewer systems than this is factorised densely: the
#: sparse factorisation costs about 1-1.2 ms however few the systems (a few tensor
#: operations per elimination level), the dense one about 0.15 ms plus 0.04-0.08 ms a
#: system. ``benchmarks/linear_solvers.py`` on the 2-core CPU machine (one thread,
#: float32 pose systems): at 16 systems dense 1.44 / 1.02 / 0.77 ms against sparse 1.64 /
#: 1.57 / 1.63 ms for the stick insect (169 columns), the mouse (97) and the demo model
#: (85); even at about 20 / 32 / 64 systems, sparse ahead beyond. The last samples of a
#: stage still stepping are such batches (the shared mouse session's fit: 7 % less time).
SPARSE_MIN_SYSTEMS = 16


def plan_linear_solver(coupling: Tensor, device=None) -> LinearSolver:
    """The solver of a stage's damped systems on ``device``, from its structural coupling
    (P, P) bool (True where two columns can meet in ``J^T J``; the diagonal is ignored):
    :class:`SparseCholesky` where the coupling is sparse enough (a body's kinematic
    tree), :class:`SeparableSplit` where enough columns are separable, else
    :class:`DenseCholesky`."""
    coupling = coupling.detach().to('cpu', torch.bool).clone()
    P = coupling.shape[0]
    if P >= SPARSE_MIN_SIZE:
        sparse = _sparse_plan(P, coupling.numpy().tobytes())
        if sparse.flops <= SPARSE_MAX_FLOP_FRACTION * sparse.dense_flops:
            return SparseCholesky(sparse.to(device) if device is not None else sparse)
    coupling.fill_diagonal_(False)
    separable = ~coupling.any(1)
    if int(separable.sum()) < SEPARABLE_MIN_FRACTION * P:
        return DenseCholesky()
    split = SeparableSplit(torch.nonzero(separable).flatten(),
                           torch.nonzero(~separable).flatten(), P)
    return split.to(device) if device is not None else split


@functools.lru_cache(maxsize=16)
def _sparse_plan(P: int, pattern: bytes) -> SparseCholeskyPlan:
    """The sparse plan of a (P, P) bool pattern given as its bytes: a pure function of
    the structure, kept for the next fit of the same stage (its symbolic analysis costs a
    few milliseconds; the plans are never modified)."""
    return SparseCholeskyPlan.build(torch.frombuffer(bytearray(pattern), dtype=torch.bool)
                                    .reshape(P, P))


__all__ = ['LinearStep', 'LinearSolver', 'DenseCholesky', 'SeparableSplit', 'SparseCholesky',
           'BlockArrow', 'SchurComplement', 'plan_linear_solver', 'SEPARABLE_MIN_FRACTION',
           'SPARSE_MAX_FLOP_FRACTION', 'SPARSE_MIN_SIZE', 'SPARSE_MIN_SYSTEMS']
