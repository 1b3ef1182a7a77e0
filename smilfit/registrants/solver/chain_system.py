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
the frames by less than their estimates' standard errors. Before that, a frame whose
cost :data:`FREEZE_AFTER` accepted steps in a row lowered by less is held still: not
linearised, not solved, its moving neighbours solved against it as fixed, so that the
chain's later steps cost what its few moving frames cost (a handful of frames whose
rotations no label pins down, where a curved valley keeps the step's model poor, held a
chain of 128 frames for 10-15 more steps). A held frame next to a moving one moves again
where a step of its own would lower its cost by more.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from smilfit.handlers.motion_prior import chain_order
from smilfit.ops.psd_inverse import psd_inverse
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
    # (m, T) bool: the frames stepped (not held still)
    moving: Optional[Tensor] = None
    # (m, T) bool: the moving frames whose cost it lowers by less than that (None: no test)
    quiet: Optional[Tensor] = None
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

    def segments(self, table: Tensor, moving: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The runs of consecutive ``moving`` (m, T) frames of the chains ``table`` (m, T):
        ``(runs (S, L) their frames (-1 past a run's end), row (S,) the chain (row of
        table) of each run, lengths (S,), at (m, T) long: each moving frame's place
        ``run * L + position``)``. A frame held still breaks its chain: its moving
        neighbours see it as fixed."""
        m, T = table.shape
        before = F.pad(moving[:, :-1], (1, 0), value=False)
        start = moving & ~before
        run = (torch.cumsum(start.flatten().long(), 0) - 1).reshape(m, T)
        S = int(start.sum())
        if S == 0:                                  # nothing moves
            empty = torch.zeros(0, dtype=torch.long, device=table.device)
            return (empty.reshape(0, 0), empty, empty, torch.full_like(table, -1))
        t = torch.arange(T, device=table.device).expand(m, T)
        first = torch.zeros(S, dtype=torch.long, device=table.device)
        first[run[start]] = t[start]
        row = torch.zeros(S, dtype=torch.long, device=table.device)
        row[run[start]] = torch.nonzero(start)[:, 0]
        position = t - first[run.clamp_min(0)]
        lengths = torch.zeros(S, dtype=torch.long, device=table.device).index_add_(
            0, run[moving], torch.ones_like(run[moving]))
        L = int(lengths.max())
        runs = torch.full((S, L), -1, dtype=torch.long, device=table.device)
        runs[run[moving], position[moving]] = table[moving]
        at = torch.where(moving, run * L + position, torch.full_like(run, -1))
        return runs, row, lengths, at

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


#: Accepted steps in a row within the labels' errors after which a frame is held still
#: (one such step can be a damped step's: after a rejected one every frame's is small).
FREEZE_AFTER = 2


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
        #: (B,) frames held where they are (``noise_tol``: their steps were within the
        #: labels' errors :data:`FREEZE_AFTER` accepted steps in a row), and that count
        self.frozen = torch.zeros(B, dtype=torch.bool, device=self.device)
        self.quiet_steps = torch.zeros(B, dtype=torch.long, device=self.device)

    def finished(self) -> Tensor:
        m = self.motion
        return self.skip[m.table[:, 0]] & (m.lengths == 1)

    def costs(self) -> Tensor:
        return self.cost

    def report(self) -> Tensor:
        return self.frame_cost + self.motion_cost

    def linearize(self, units: Tensor) -> Tuple[Tensor, Tensor]:
        table, frames = self.motion.frames(units)
        # (a frozen frame has not moved since its last linearisation)
        frames = frames[~self.frozen[frames]]
        c, g, H = self._linearize_frames(self.x[frames], frames)
        return self._absorb(units, table, frames, c, g, H)

    def _linearize_frames(self, x: Tensor, frames: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The frames' (sorted) cost, g and H at ``x`` (none for no frames)."""
        if frames.numel() == 0:
            P = self.x.shape[1]
            return (self.x.new_zeros(0), self.x.new_zeros(0, P),
                    self.H.new_zeros(0, P, P))
        return self.problem.linearize(x, frames, upper_only=False)

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
        valid = table >= 0
        moving = valid & ~self.frozen[table.clamp_min(0)]
        if self.rows is not None and not bool(moving[valid].all()):
            moving = self._thaw(table, moving)
        diag = (m.gather(self.H.diagonal(dim1=-2, dim2=-1), table).to(self.dtype)
                + diag_m) * valid[..., None]
        C, T, P = diag.shape
        mean = diag.sum((1, 2)) / (m.lengths[units].to(self.dtype) * P)
        D = self.damping(diag.reshape(C, -1), mean, diag.amax((1, 2))).reshape(C, T, P)
        D = lam[:, None, None] * D * valid[..., None]
        # each run of moving frames is solved with its frozen neighbours held fixed (their
        # motion terms stay on its diagonal and gradient, uncoupled); an acceleration
        # couples frames two apart, so a single frozen frame between moving ones stays in
        # its run as a row held at 0 (no gradient, no coupling). The frames' J^T J are read
        # in place by the elimination, the damping and the motion terms' diagonal added
        # row by row.
        included = moving
        if m.bandwidth > 1:
            included = moving | (valid & F.pad(moving[:, :-1], (1, 0), value=False)
                                 & F.pad(moving[:, 1:], (0, 1), value=False))
        runs, row, lengths, at = m.segments(table, included)
        S, L = runs.shape
        ldt = self.H.dtype
        both = torch.stack([moving & F.pad(moving[:, :T - d], (d, 0), value=False)
                            for d in range(1, below_m.shape[2] + 1)], 2)
        below = below_m * both[..., None]

        def to_runs(values: Tensor) -> Tensor:
            out = values.new_zeros((S * L,) + values.shape[2:])
            out[at[included]] = values[included]
            return out.reshape((S, L) + values.shape[2:])
        blocks = FrameBlocks(self.H, runs, to_runs((diag_m + D).to(ldt)))
        if S:
            run_step, info = banded_solve(blocks, to_runs(below.to(ldt)),
                                          to_runs((g * moving[..., None]).to(ldt)), lengths)
        else:                                       # every frame held
            run_step, info = X.new_zeros(0, 0, P), lengths.new_zeros(0)
        run_step = run_step.to(self.dtype)
        failed = (info != 0) | ~torch.isfinite(run_step).all(2).all(1)
        solved = torch.zeros(C, dtype=torch.long, device=self.device).index_add_(
            0, row, failed.long()) == 0
        step = torch.zeros_like(X)
        step[moving] = -run_step.reshape(S * L, P)[at[moving]]
        step = torch.where(solved[:, None, None], step, torch.zeros_like(step))
        # s^T H s of the undamped system (data and motion) from (H + D) s = -g
        curvature = -(g * step).sum((1, 2)) - (D * step * step).sum((1, 2))
        predicted = torch.where(solved, -(2.0 * (g * step).sum((1, 2)) + curvature),
                                torch.full_like(lam, float('inf')))
        return ChainTrial(units, table, X + step, solved, predicted, step.abs().amax((1, 2)),
                          X.abs().amax((1, 2)), moving=moving)

    def evaluate(self, trial: ChainTrial, linearize: bool) -> Tensor:
        m = self.motion
        table = trial.table
        moving = trial.moving
        frames = table[moving]
        order = torch.argsort(frames)
        ordered = frames[order]
        x = trial.x[moving][order]
        if linearize:
            trial.linearized = self._linearize_frames(x, ordered)
            cost = trial.linearized[0]
        else:
            cost = self.problem.cost(x, ordered) if ordered.numel() else x.new_zeros(0)
        trial.frames = ordered
        cost = cost + m.constant[ordered]
        frame_cost = m.gather(self.frame_cost, table)          # a frozen frame's is as it was
        frame_cost[moving] = torch.empty_like(cost).index_copy_(0, order, cost)
        trial.motion_cost = m.terms(trial.x, table, jacobian=False)[0]
        trial.frame_cost = frame_cost
        trial.cost = frame_cost.sum(1) + trial.motion_cost.sum(1)
        if self.rows is not None:
            trial.settled, trial.quiet = self._settled(trial)
        return trial.cost

    def _settled(self, trial: ChainTrial) -> Tuple[Tensor, Tensor]:
        """(m,) bool: the trial lowers no frame's cost by ``noise_tol`` times its chain's
        cost per label residual row at the current point; (m, T) bool: the moving frames
        whose cost it lowers by less."""
        m = self.motion
        table = trial.table
        noise = self._noise(table)
        now = m.gather(self.frame_cost + self.motion_cost, table)
        gain = (now - trial.frame_cost - trial.motion_cost) * (table >= 0)
        small = gain < self.noise_tol * noise[:, None]
        known = torch.isfinite(noise)
        return known & small.all(1), known[:, None] & small & trial.moving

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
        if trial.quiet is not None:
            self._freeze(trial, accept)
        if trial.linearized is None or not bool(accept.any()):
            return None
        units = trial.units[accept]
        table, _ = self.motion.frames(units)
        moved, _ = torch.sort(trial.table[accept][trial.moving[accept]])
        at = torch.searchsorted(trial.frames, moved)
        c, g, H = (t[at] for t in trial.linearized)
        return (units,) + self._absorb(units, table, moved, c, g, H)

    def _noise(self, table: Tensor) -> Tensor:
        """(m,) each chain's cost per label residual row where it stands."""
        m = self.motion
        own = self.frame_cost - m.constant                 # the frames' data and priors
        return m.gather(own, table).sum(1) / m.gather(self.rows.to(self.dtype), table).sum(1)

    def _own_gain(self, frames: Tensor) -> Tensor:
        """(n,) what a Gauss-Newton step of each of ``frames`` alone, its neighbours held,
        would lower its cost by where it stands (along what the labels leave free as
        large as its system's precision allows; inf where its system is not positive
        semi-definite)."""
        grad, diag_m, _ = self.motion_normal
        g = self.g[frames] + grad[frames]
        A = self.H[frames].to(self.dtype) + torch.diag_embed(diag_m[frames].to(self.dtype))
        _, solution, ridge = psd_inverse(A, g)
        gain = (g * solution).sum(1)
        return torch.where(torch.isnan(ridge), torch.full_like(gain, float('inf')), gain)

    def _wake(self, frames: Tensor, limit: Tensor) -> Tensor:
        """(n,) bool: which of the held ``frames`` a step of their own would lower by
        ``limit`` (n,) or more; those are set moving again."""
        wake = ~(self._own_gain(frames) < limit)
        self.frozen[frames[wake]] = False
        self.quiet_steps[frames[wake]] = 0
        return wake

    def _thaw(self, table: Tensor, moving: Tensor) -> Tensor:
        """``moving`` (m, T) with the frozen frames next to a moving one set moving again
        where a step of their own, their neighbours held, would lower their cost by
        ``noise_tol`` times the chain's cost per label residual row: their neighbours
        have moved since they were frozen."""
        valid = table >= 0
        beside = (F.pad(moving[:, :-1], (1, 0), value=False)
                  | F.pad(moving[:, 1:], (0, 1), value=False))
        edge = valid & ~moving & beside
        if not bool(edge.any()):
            return moving
        row = torch.nonzero(edge)[:, 0]
        out = moving.clone()
        out[edge] = self._wake(table[edge], self.noise_tol * self._noise(table)[row])
        return out

    def _freeze(self, trial: ChainTrial, accept: Tensor) -> None:
        """Count the accepted steps in a row that moved each frame within the labels'
        errors (``trial.quiet``); hold still the frames with :data:`FREEZE_AFTER` of
        them. A chain waits for its slowest frame: the frames that have settled are not
        stepped, linearised or solved again, and the chain's steps cost what its moving
        frames cost."""
        stepped = accept[:, None] & trial.moving
        frames = trial.table[stepped]
        quiet = trial.quiet[stepped]
        count = torch.where(quiet, self.quiet_steps[frames] + 1,
                            torch.zeros_like(self.quiet_steps[frames]))
        self.quiet_steps[frames] = count
        self.frozen[frames] |= count >= FREEZE_AFTER


def _shift_back(values: Tensor, k: int) -> Tensor:
    """(m, T, ...) ``values`` moved ``k`` rows earlier along the chains: row ``t - k`` gets
    what row ``t`` had (all rows 0 where the chains are shorter than ``k``)."""
    if k == 0:
        return values
    T = values.shape[1]
    return F.pad(values[:, k:], (0, 0) * (values.dim() - 2) + (0, min(k, T)))


__all__ = ['ChainSystem', 'ChainTrial', 'ChainMotion', 'MotionTerms', 'FREEZE_AFTER']
