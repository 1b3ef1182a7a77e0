"""Levenberg-Marquardt state of frames coupled in time: every chain of an animal's
consecutive frames one unit (an :class:`~.loop.LMSystem` over a
:class:`~.problem.LeastSquaresProblem` and the chains' motion terms).

A motion term (:class:`~smilfit.handlers.motion_prior.MotionPriorHandler`) adds, at frame
``t`` of a chain, the residual ``c_t * sum_k a_k x_{t-k}`` (``a`` its stencil: velocity
``(1, -1)``, acceleration ``(1, -2, 1)``; ``c_t`` (P,) one over the motion's scale per
column, 0 for columns not smoothed). Its Jacobian is constant and diagonal in the
columns, so the chain's normal equations are the frames' own ``J^T J`` on the diagonal
blocks plus diagonal couplings between frames up to ``len(a) - 1`` apart: a block-banded
system, solved by :func:`~.banded.banded_solve` in time linear in the chain's length.
A chain accepts or rejects its step as a whole; ``'levenberg'`` damping adds ``lambda``
times the mean diagonal of the chain's system, ``'marquardt'`` ``lambda`` times each
diagonal entry (floored at the chain's largest). A chain waits for its slowest frame, so
it stops once a step lowers no frame's cost by one label residual's squared error
(``noise_tol``): with noisy labels Gauss-Newton's last steps converge linearly and move
the frames by less than their estimates' standard errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from smilfit.handlers.motion_prior import chain_order
from .banded import FrameBlocks, banded_solve
from .problem import LeastSquaresProblem
from .scatter import sum_into
from .trust_region import DAMPING

Tensor = torch.Tensor


@dataclass
class MotionTerms:
    """The motion residuals of a stage on its fitted columns.

    Attributes:
        prev: (B,) long, each frame's predecessor along its chain (-1 at a start).
        stencil: the finite-difference coefficients for frames ``t, t-1, ...``.
        inverse_scale: (B, P) ``c_t``, per fitted column (0: not smoothed).
        constant: (B,) the squared motion residuals of the parameters the stage does not
            fit (a constant of the stage's loss, kept so its costs are the loss).
    """

    prev: Tensor
    stencil: Sequence[float]
    inverse_scale: Tensor
    constant: Tensor


@dataclass
class ChainTrial:
    """A proposed step of the chains ``units`` (see :class:`~.loop.Trial`)."""

    units: Tensor          # (m,)
    table: Tensor          # (m, T) their frames (-1 past a chain's end)
    x: Tensor              # (m, T, P) the trial parameters
    solved: Tensor
    predicted: Tensor
    step_max: Tensor
    size_max: Tensor
    frame_cost: Optional[Tensor] = None   # (m, T) data and constant costs at the trial
    motion_cost: Optional[Tensor] = None  # (m, T)
    cost: Optional[Tensor] = None         # (m,)
    # (m,) bool: no frame's cost falls by ``noise_tol`` label residuals' squared error
    # (None: no such test)
    settled: Optional[Tensor] = None
    # the frames (n,), sorted, and their cost, g and H where linearised at the trial
    frames: Optional[Tensor] = None
    linearized: Optional[Tuple[Tensor, Tensor, Tensor]] = None


class ChainMotion:
    """The chains of a batch and their motion terms (module docstring).

    Args:
        motion: the stage's :class:`MotionTerms`.
        skip: (B,) bool, frames left out (chains break around them).
        device, dtype: of the parameters.
    """

    def __init__(self, motion: MotionTerms, skip: Tensor, device, dtype) -> None:
        prev = motion.prev.to(device).clone()
        # a skipped frame stands alone: it neither moves nor pulls its neighbours
        prev[skip] = -1
        prev[(prev >= 0) & skip[prev.clamp_min(0)]] = -1
        self.device, self.dtype = device, dtype
        self.table, self.lengths = chain_order(prev)
        B = prev.numel()
        self.chain = torch.zeros(B, dtype=torch.long, device=device)
        valid = self.table >= 0
        self.chain[self.table[valid]] = torch.nonzero(valid)[:, 0]
        self.stencil = tuple(float(a) for a in motion.stencil)
        self.inverse_scale = motion.inverse_scale.to(device, dtype)
        self.constant = motion.constant.to(device, dtype)

    @property
    def bandwidth(self) -> int:
        return max(len(self.stencil) - 1, 1)

    def frames(self, chains: Tensor) -> Tuple[Tensor, Tensor]:
        """The chains' table (m, T) (cut to the longest of them) and their frames (n,),
        sorted."""
        table = self.table.index_select(0, chains)
        T = int(self.lengths[chains].max()) if chains.numel() else 0
        table = table[:, :T]
        frames, _ = torch.sort(table[table >= 0])
        return table, frames

    def gather(self, values: Tensor, table: Tensor) -> Tensor:
        """(m, T, ...) ``values`` (B, ...) along the chains (0 past their ends)."""
        out = values.index_select(0, table.clamp_min(0).flatten()).reshape(
            table.shape + values.shape[1:])
        return out * (table >= 0).reshape(table.shape + (1,) * (values.dim() - 1)).to(out)

    def residuals(self, X: Tensor, table: Tensor) -> Tuple[Tensor, Tensor]:
        """Residuals ``r`` (m, T, P) (zero where a chain does not reach back) and their
        coefficients ``c`` (m, T, P) at chain parameters ``X`` (m, T, P)."""
        order = len(self.stencil) - 1
        c = self.gather(self.inverse_scale, table)
        reach = (table >= 0) & (torch.arange(table.shape[1], device=self.device) >= order)
        c = c * reach[..., None].to(c)
        r = torch.zeros_like(X)
        for k, a in enumerate(self.stencil):
            r = r + a * F.pad(X, (0, 0, k, 0))[:, :X.shape[1]]   # X[:, t - k]
        return r * c, c

    def normal(self, r: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The motion terms' gradient (m, T, P), diagonal (m, T, P) and couplings below
        the diagonal (m, T, b, P) (at ``[:, t, d - 1]`` the block between frames t and
        t - d, diagonal in the columns)."""
        m, T, P = r.shape
        b = len(self.stencil) - 1
        grad = torch.zeros_like(r)
        diag = torch.zeros_like(r)
        below = r.new_zeros(m, T, self.bandwidth, P)
        c2 = c * c
        for j, aj in enumerate(self.stencil):
            # a residual at t reads frame t - j: its terms go to row t - j
            grad = grad + _shift_back(aj * c * r, j)
            diag = diag + _shift_back(aj * aj * c2, j)
            for k in range(j + 1, b + 1):
                below[:, :, k - j - 1] += _shift_back(aj * self.stencil[k] * c2, j)
        return grad, diag, below

    def terms(self, X: Tensor, table: Tensor, jacobian: bool = True):
        """The motion cost (m, T) at chain parameters ``X`` (m, T, P) and, with
        ``jacobian``, its gradient (m, T, P), diagonal (m, T, P) and couplings (m, T, b,
        P) (:meth:`normal`)."""
        r, c = self.residuals(X, table)
        cost = (r * r).sum(2)
        return (cost, self.normal(r, c)) if jacobian else (cost, None)


class ChainSystem:
    """Every frame's parameters ``x`` (B, P) and normal equations, solved chain by chain.

    Args:
        problem: the stage's per-frame :class:`~.problem.LeastSquaresProblem` (dense
            ``H``: ``plan_solver=False``), without the motion terms.
        motion: the stage's :class:`MotionTerms`.
        x0: (B, P) starting parameters.
        damping: a name of :data:`~.trust_region.DAMPING`.
        skip: (B,) bool, frames that keep ``x0`` (chains break around them), or None.
        noise_tol: an accepted step that lowers no frame's cost (its data, priors and
            motion terms) by ``noise_tol`` times the chain's cost per label residual row
            (about one label residual's squared error once converged,
            :meth:`~.problem.LeastSquaresProblem.data_rows`) is the chain's last (0: no
            such test).
    """

    linearizes_trials = True
    stops_on_progress = True

    def __init__(self, problem: LeastSquaresProblem, motion: MotionTerms, x0: Tensor,
                 damping: str, skip: Optional[Tensor] = None, noise_tol: float = 0.0) -> None:
        self.problem = problem
        self.x = x0.clone()
        B, P = x0.shape
        self.dtype, self.device = x0.dtype, x0.device
        self.ldt = problem.linear_dtype or self.dtype
        self.skip = (torch.zeros(B, dtype=torch.bool, device=self.device) if skip is None
                     else skip.to(device=self.device, dtype=torch.bool))
        self.motion = ChainMotion(motion, self.skip, self.device, self.dtype)
        self.num_units = int(self.motion.lengths.numel())
        # the motion terms' gradient, diagonal and couplings at each frame's x
        self.motion_normal: Optional[Tuple[Tensor, Tensor, Tensor]] = None
        self.chain = self.motion.chain
        self.frame_cost = torch.zeros(B, dtype=self.dtype, device=self.device)
        self.motion_cost = torch.zeros(B, dtype=self.dtype, device=self.device)
        self.cost = torch.zeros(self.num_units, dtype=self.dtype, device=self.device)
        self.g = torch.zeros(B, P, dtype=self.dtype, device=self.device)
        self.H = torch.zeros(B, P, P, dtype=self.ldt, device=self.device)
        #: (B, P) where every frame was last linearised (its g and H are there)
        self.x_linearized = self.x.clone()
        self.damping = DAMPING[damping]
        self.noise_tol = float(noise_tol)
        #: (B,) each frame's label residual rows (for ``noise_tol``)
        self.rows = (problem.data_rows(x0, torch.arange(B, device=self.device))
                     if self.noise_tol > 0 else None)

    def finished(self) -> Tensor:
        m = self.motion
        return self.skip[m.table[:, 0]] & (m.lengths == 1)

    def costs(self) -> Tensor:
        return self.cost

    def report(self) -> Tensor:
        return self.frame_cost + self.motion_cost

    def linearize(self, units: Tensor) -> Tuple[Tensor, Tensor]:
        table, frames = self.motion.frames(units)
        c, g, H = self.problem.linearize(self.x[frames], frames, upper_only=False)
        return self._absorb(units, table, frames, c, g, H)

    def _absorb(self, units: Tensor, table: Tensor, frames: Tensor, c: Tensor, g: Tensor,
                H: Tensor) -> Tuple[Tensor, Tensor]:
        """Keep the frames' (sorted) linearisation at ``self.x``; the chains' costs,
        non-finite flags and largest gradient entries."""
        m = self.motion
        c = c + m.constant[frames]
        self.frame_cost[frames], self.g[frames], self.H[frames] = c, g, H.to(self.ldt)
        self.x_linearized[frames] = self.x[frames]
        bad_frame = ~(torch.isfinite(c) & torch.isfinite(g.sum(1))
                      & torch.isfinite(H.sum((1, 2))))
        motion, normal = m.terms(m.gather(self.x, table), table)
        valid = table >= 0
        self.motion_cost[table[valid]] = motion[valid]
        if self.motion_normal is None:
            self.motion_normal = tuple(t.new_zeros((self.x.shape[0],) + t.shape[2:])
                                       for t in normal)
        for kept, new in zip(self.motion_normal, normal):
            kept[table[valid]] = new[valid].to(kept)
        cost = m.gather(self.frame_cost, table).sum(1) + motion.sum(1)
        self.cost[units] = cost
        grad = m.gather(self.g, table) + normal[0]
        bad = (sum_into(bad_frame.to(self.dtype), self.chain[frames], self.num_units)[units]
               > 0) | ~torch.isfinite(cost)
        return bad, grad.abs().amax((1, 2))

    def propose(self, units: Tensor, lam: Tensor) -> ChainTrial:
        m = self.motion
        table, _ = m.frames(units)
        X = m.gather(self.x, table)
        grad_m, diag_m, below_m = (m.gather(t, table) for t in self.motion_normal)
        g = m.gather(self.g, table) + grad_m                               # (m, T, P)
        valid = (table >= 0)[..., None]
        diag = (m.gather(self.H.diagonal(dim1=-2, dim2=-1), table).to(self.dtype)
                + diag_m) * valid
        C, T, P = diag.shape
        mean = diag.sum((1, 2)) / (m.lengths[units].to(self.dtype) * P)
        D = self.damping(diag.reshape(C, -1), mean, diag.amax((1, 2))).reshape(C, T, P) * valid
        D = lam[:, None, None] * D
        # the frames' J^T J read in place by the elimination, the damping and the motion
        # terms' diagonal added row by row
        ldt = self.H.dtype
        blocks = FrameBlocks(self.H, table, (diag_m + D).to(ldt))
        step, info = banded_solve(blocks, below_m.to(ldt), g.to(ldt), m.lengths[units])
        step = -step.to(self.dtype) * valid
        solved = (info == 0) & torch.isfinite(step).all(2).all(1)
        step = torch.where(solved[:, None, None], step, torch.zeros_like(step))
        # s^T H s of the undamped system (data and motion) from (H + D) s = -g
        curvature = -(g * step).sum((1, 2)) - (D * step * step).sum((1, 2))
        predicted = torch.where(solved, -(2.0 * (g * step).sum((1, 2)) + curvature),
                                torch.full_like(lam, float('inf')))
        return ChainTrial(units, table, X + step, solved, predicted, step.abs().amax((1, 2)),
                          X.abs().amax((1, 2)))

    def evaluate(self, trial: ChainTrial, linearize: bool) -> Tensor:
        m = self.motion
        table = trial.table
        valid = table >= 0
        frames = table[valid]
        order = torch.argsort(frames)
        ordered = frames[order]
        if linearize:
            trial.linearized = self.problem.linearize(trial.x[valid][order], ordered,
                                                      upper_only=False)
            cost = trial.linearized[0]
        else:
            cost = self.problem.cost(trial.x[valid][order], ordered)
        trial.frames = ordered
        cost = cost + m.constant[ordered]
        frame_cost = torch.zeros(table.shape, dtype=self.dtype, device=self.device)
        frame_cost[valid] = torch.empty_like(cost).index_copy_(0, order, cost)
        trial.motion_cost = m.terms(trial.x, table, jacobian=False)[0]
        trial.frame_cost = frame_cost
        trial.cost = frame_cost.sum(1) + trial.motion_cost.sum(1)
        if self.rows is not None:
            trial.settled = self._settled(trial)
        return trial.cost

    def _settled(self, trial: ChainTrial) -> Tensor:
        """(m,) bool: the trial lowers no frame's cost by ``noise_tol`` times its chain's
        cost per label residual row at the current point."""
        m = self.motion
        table = trial.table
        own = self.frame_cost - m.constant                 # the frames' data and priors
        noise = m.gather(own, table).sum(1) / m.gather(self.rows.to(self.dtype), table).sum(1)
        now = m.gather(self.frame_cost + self.motion_cost, table)
        gain = (now - trial.frame_cost - trial.motion_cost) * (table >= 0)
        return torch.isfinite(noise) & (gain.amax(1) < self.noise_tol * noise)

    def take(self, trial: ChainTrial, accept: Tensor
             ) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
        valid = trial.table >= 0
        take = accept[:, None].expand_as(valid)[valid]
        frames = trial.table[valid]
        self.x[frames] = torch.where(take[:, None], trial.x[valid], self.x[frames])
        self.frame_cost[frames] = torch.where(take, trial.frame_cost[valid],
                                              self.frame_cost[frames])
        self.motion_cost[frames] = torch.where(take, trial.motion_cost[valid],
                                               self.motion_cost[frames])
        self.cost[trial.units] = torch.where(accept, trial.cost, self.cost[trial.units])
        if trial.linearized is None or not bool(accept.any()):
            return None
        units = trial.units[accept]
        table, frames = self.motion.frames(units)
        at = torch.searchsorted(trial.frames, frames)
        c, g, H = (t[at] for t in trial.linearized)
        return (units,) + self._absorb(units, table, frames, c, g, H)


def _shift_back(values: Tensor, k: int) -> Tensor:
    """(m, T, ...) ``values`` moved ``k`` rows earlier along the chains: row ``t - k`` gets
    what row ``t`` had (all rows 0 where the chains are shorter than ``k``)."""
    if k == 0:
        return values
    T = values.shape[1]
    return F.pad(values[:, k:], (0, 0) * (values.dim() - 2) + (0, min(k, T)))


__all__ = ['ChainSystem', 'ChainTrial', 'ChainMotion', 'MotionTerms']
