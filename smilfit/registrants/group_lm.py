"""Levenberg-Marquardt over per-frame and per-group (shared) parameters at once.

A stage fitting parameters shared by an animal's frames (``shared=`` in the registrant:
``bone_trans``, ``keypoint_offsets``, ...) couples those frames: frame ``i`` of group
``g`` has its own parameters ``x_i`` (pose, translation, global scale; possibly none)
and reads the group's ``y_g``. The Gauss-Newton normal equations of group ``g`` have
the block-arrow structure

    [ U_1           W_1 ] [dx_1]     [gx_1]
    [      ...      ... ] [ .. ] = - [ .. ]
    [           U_n W_n ] [dx_n]     [gx_n]
    [ W_1^T ... W_n^T V ] [dy  ]     [gy  ]

with ``U_i = Jx_i^T Jx_i``, ``W_i = Jx_i^T Jy_i``, ``V = sum_i Jy_i^T Jy_i`` (+ the priors
on ``y`` counted once per group). Eliminating the frames (the Schur complement)

    S = V - sum_i W_i^T U_i^-1 W_i,    S dy = -gy + sum_i W_i^T U_i^-1 gx_i,
    dx_i = -U_i^-1 (gx_i + W_i dy)

costs one small dense solve per group plus one per frame, all batched (frames'
terms summed into their group with ``index_add``). A stage fitting only shared
parameters has no ``U``: ``S = V``, the sum of its frames' ``J^T J``.

Every group has its own damping, acceptance and stopping (the shared parameters
couple its frames, so they accept or reject a step together); the groups still
running are gathered into a compact batch each iteration, so a group's result does
not depend on the others. The per-frame terms come from
:class:`~.levenberg_marquardt.LeastSquaresProblem` (closed-form point Jacobians,
handlers' residual forms, robust kernels and noise units as in the per-sample
solver); priors on shared parameters only are evaluated once per group.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from smilfit.ops.cholesky import cholesky
from .levenberg_marquardt import LeastSquaresProblem, LMOptions, add_param_block

Tensor = torch.Tensor


class GroupLeastSquaresProblem:
    """The stage's least-squares problem over per-frame and per-group parameters.

    Args:
        body_model: the registrant's body model.
        sample_handlers: handlers scored per frame (residual form 'points' or 'params').
        group_handlers: priors whose residual parameters are all shared ('params'
            form): scored once per group.
        observations: (B, ...) tensors.
        fixed: every parameter per sample (shared ones expanded); the per-frame fitted
            ones give the starting point.
        frame_names: fitted per-frame parameters (may be empty).
        shared: fitted shared parameter name -> (G, ...) starting values.
        groups: (B,) long group id per frame.
        cost_fn: ``cost_fn(params, observations) -> (n,)``, the sample handlers'
            summed weighted losses.
        linear_dtype: precision of the normal equations (default: the parameters').
    """

    def __init__(self, body_model: nn.Module, sample_handlers: Sequence[nn.Module],
                 group_handlers: Sequence[nn.Module], observations: Mapping[str, Tensor],
                 fixed: Mapping[str, Tensor], frame_names: Sequence[str],
                 shared: Mapping[str, Tensor], groups: Tensor,
                 cost_fn: Callable[[Dict[str, Tensor], Dict[str, Tensor]], Tensor],
                 linear_dtype: torch.dtype = None) -> None:
        not_params = [h.name for h in group_handlers if h.residual_kind != 'params']
        if not_params:
            raise ValueError(f'handlers {not_params} on shared parameters need a '
                             "'params' residual form for Levenberg-Marquardt")
        self.frame_names = list(frame_names)
        self.shared_names = list(shared)
        self.per_frame = LeastSquaresProblem(
            body_model, list(sample_handlers) + list(group_handlers), observations, fixed,
            self.frame_names + self.shared_names, cost_fn, linear_dtype=linear_dtype)
        # The group handlers only lend their residual forms (evaluated once per group).
        self.per_frame.handlers = list(sample_handlers)
        self.group_handlers = list(group_handlers)
        self.has_sample_handlers = bool(sample_handlers)
        self.groups = groups
        self.G = int(next(iter(shared.values())).shape[0])
        sizes = self.per_frame.sizes
        self.Px = sum(sizes[:len(self.frame_names)])
        self.Py = sum(sizes[len(self.frame_names):])
        self.shared_shapes = {n: tuple(v.shape[1:]) for n, v in shared.items()}
        self.y0 = torch.cat([v.reshape(self.G, -1) for v in shared.values()], dim=1)
        self.counts = torch.bincount(groups, minlength=self.G)
        # One frame of each group (its first) carries the group's priors' inputs.
        first = torch.full((self.G,), groups.numel(), dtype=torch.long, device=groups.device)
        first.scatter_reduce_(0, groups, torch.arange(groups.numel(), device=groups.device),
                              'amin')
        self.representative = first.clamp_max(max(groups.numel() - 1, 0))

    @property
    def B(self) -> int:
        return self.per_frame.B

    def initial(self) -> Tuple[Tensor, Tensor]:
        """``x`` (B, Px) and ``y`` (G, Py), the starting point."""
        x = self.per_frame.initial_x()[:, :self.Px]
        return x, self.y0.to(x)

    def unflatten(self, x: Tensor, y: Tensor) -> Dict[str, Tensor]:
        """Per-frame parameters (B, ...) from ``x`` and shared ones (G, ...) from ``y``."""
        out = {}
        if self.Px:
            parts = torch.split(x, self.per_frame.sizes[:len(self.frame_names)], dim=1)
            out.update({n: p.reshape((x.shape[0],) + self.per_frame.shapes[n])
                        for n, p in zip(self.frame_names, parts)})
        parts = torch.split(y, self.per_frame.sizes[len(self.frame_names):], dim=1)
        out.update({n: p.reshape((y.shape[0],) + self.shared_shapes[n])
                    for n, p in zip(self.shared_names, parts)})
        return out

    def _z(self, x: Tensor, y: Tensor, idx: Tensor, gidx: Tensor) -> Tensor:
        """(n, Px + Py) every frame's full parameter vector; ``y`` holds the groups
        ``gidx`` (rows in that order), ``x`` the frames ``idx``."""
        local = torch.full((self.G,), -1, dtype=torch.long, device=idx.device)
        local[gidx] = torch.arange(gidx.numel(), device=idx.device)
        return torch.cat([x, y.index_select(0, local[self.groups[idx]])], dim=1)

    def _group_inputs(self, y: Tensor, gidx: Tensor):
        """Parameters and observations the group handlers read, one row per group."""
        rep = self.representative[gidx]
        params = {k: v.index_select(0, rep) for k, v in self.per_frame.fixed.items()}
        parts = torch.split(y, self.per_frame.sizes[len(self.frame_names):], dim=1)
        params.update({n: p.reshape((y.shape[0],) + self.shared_shapes[n])
                       for n, p in zip(self.shared_names, parts)})
        obs = {k: (v.index_select(0, rep) if isinstance(v, Tensor) and v.dim()
                   and v.shape[0] == self.B else v) for k, v in self.per_frame.obs.items()}
        return params, obs

    def cost(self, x: Tensor, y: Tensor, idx: Tensor, gidx: Tensor) -> Tuple[Tensor, Tensor]:
        """Frame costs (n,) of the frames ``idx`` and prior costs (Ga,) of the groups
        ``gidx`` (each group's priors once)."""
        if self.has_sample_handlers:
            frame = self.per_frame.cost(self._z(x, y, idx, gidx), idx)
        else:
            frame = x.new_zeros(idx.numel())
        group = y.new_zeros(gidx.numel())
        if self.group_handlers:
            params, obs = self._group_inputs(y, gidx)
            for h in self.group_handlers:
                r = h.param_residuals(params, obs) * math.sqrt(h.weight)
                group = group + (r * r).sum(1)
        return frame, group

    def linearize(self, x: Tensor, y: Tensor, idx: Tensor, gidx: Tensor,
                  loc: Optional[Tensor] = None):
        """Frame terms ``(cost (n,), g (n, P), H (n, P, P))`` (P = Px + Py, per-frame
        columns first) and group prior terms ``(cost (Ga,), g (Ga, Py), H (Ga, Py, Py))``.

        ``loc`` (n,): each frame's row in ``gidx``; given, the frames' ``H`` is summed
        per group, (Ga, P, P) (enough when no per-frame parameter is fitted)."""
        reduce = None if loc is None else (loc, int(gidx.numel()))
        c, g, H = self.per_frame.linearize(self._z(x, y, idx, gidx), idx, reduce)
        Ga, Py = gidx.numel(), self.Py
        gc = y.new_zeros(Ga)
        gg = y.new_zeros(Ga, Py)
        gH = torch.zeros(Ga, Py, Py, dtype=H.dtype, device=H.device)
        if self.group_handlers:
            params, obs = self._group_inputs(y, gidx)
            for h in self.group_handlers:
                r, Jp, cols = self.per_frame._param_terms(h, params, obs, Ga)
                gc = gc + (r * r).sum(1)
                add_param_block(gH, gg, r, Jp, None if cols is None else cols - self.Px)
        return (c, g, H), (gc, gg, gH)


def _scatter_max(values: Tensor, index: Tensor, size: int) -> Tensor:
    """(size,) the largest of ``values`` (n,) >= 0 per ``index`` (0 where none)."""
    return values.new_zeros(size).scatter_reduce_(0, index, values, 'amax')


def _sum_into(values: Tensor, index: Tensor, size: int) -> Tensor:
    """(size, ...) ``values`` (n, ...) summed per ``index``."""
    return values.new_zeros((size,) + values.shape[1:]).index_add_(0, index, values)


def _local_index(groups: Tensor, gidx: Tensor, G: int) -> Tensor:
    """Each frame's position in ``gidx`` (its group's row in a compact batch)."""
    local = torch.full((G,), -1, dtype=torch.long, device=groups.device)
    local[gidx] = torch.arange(gidx.numel(), device=groups.device)
    return local[groups]


def solve_block_arrow(A: Tensor, W: Tensor, V: Tensor, gx: Tensor, gy: Tensor,
                      loc: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Solve every group's block-arrow system ``[[A_i, W_i], [W_i^T, V_g]] [dx; dy] =
    -[gx; gy]`` by the Schur complement over its frames.

    Args:
        A: (n, Px, Px) the frames' (damped) blocks; W: (n, Px, Py) their coupling to
            their group's shared parameters; V: (Ga, Py, Py) the groups' (damped)
            shared blocks, summed over their frames.
        gx: (n, Px), gy: (Ga, Py) gradients (``gy`` summed over the group's frames).
        loc: (n,) each frame's group row in ``V``/``gy``.

    Returns:
        ``dx (n, Px)``, ``dy (Ga, Py)`` (in ``A``'s dtype) and ``ok (Ga,)``: the
        factorisations succeeded (elsewhere the steps are 0).
    """
    Ga, Py = V.shape[0], V.shape[1]
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
        S = S - _sum_into(Y.transpose(1, 2) @ Y, loc, Ga)
        rhs = rhs + _sum_into((W.transpose(1, 2) @ Ainvg[..., None])[..., 0], loc, Ga)
        failed = _sum_into((factor.info.to(V.device) != 0).to(ldt), loc, Ga) > 0
    schur = cholesky(S, overwrite=bool(Px))   # (S is then this function's own)
    dy = schur.solve(rhs)
    ok = (schur.info.to(V.device) == 0) & ~failed & torch.isfinite(dy).all(1)
    dy = torch.where(ok[:, None], dy, torch.zeros_like(dy))
    if not Px:
        return A.new_zeros(A.shape[:2]), dy, ok
    # dx = -A^-1 (gx + W dy)
    dx = -factor.solve(gx.to(ldt) + (W @ dy[loc][..., None])[..., 0])
    return torch.where(ok[loc, None], dx, torch.zeros_like(dx)), dy, ok


def group_levenberg_marquardt(problem: GroupLeastSquaresProblem, max_iter: int,
                              options: LMOptions, ftol: float = 1e-9, gtol: float = 1e-7,
                              on_iteration: Callable[[int, Tensor], None] = None
                              ) -> Tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Minimise every group's least-squares problem (its frames' and its priors' costs).

    Damping, acceptance and the stopping rules are those of
    :func:`~.levenberg_marquardt.levenberg_marquardt`, per group: ``'levenberg'``
    damping adds ``lambda_g`` times the mean diagonal of the group's whole system
    (frames and shared block), ``'marquardt'`` ``lambda_g`` times each diagonal entry.

    Args:
        problem: the :class:`GroupLeastSquaresProblem`.
        max_iter: iterations (at most one linearisation and one trial step per group).
        options: :class:`~.levenberg_marquardt.LMOptions`.
        ftol, gtol: as in the per-sample solver, per group (``gtol`` on the largest
            entry of the group's gradient, frames' and shared).
        on_iteration: called with the iteration and the (B,) frame costs after it (a
            group's priors spread evenly over its frames).

    Returns:
        ``(x (B, Px), y (G, Py), cost (B,), diverged (B,) bool, iterations run)``.
    """
    x, y = problem.initial()
    B, G, Px, Py = problem.B, problem.G, problem.Px, problem.Py
    groups, counts = problem.groups, problem.counts
    dtype, device = y.dtype, y.device
    ldt = problem.per_frame.linear_dtype or dtype
    rel_tol = max(float(ftol), 16.0 * torch.finfo(dtype).eps)
    frame_cost = torch.zeros(B, dtype=dtype, device=device)
    U = torch.zeros(B, Px, Px, dtype=ldt, device=device)
    W = torch.zeros(B, Px, Py, dtype=ldt, device=device)
    gx = torch.zeros(B, Px, dtype=dtype, device=device)
    V = torch.zeros(G, Py, Py, dtype=ldt, device=device)
    gy = torch.zeros(G, Py, dtype=dtype, device=device)
    cost = torch.zeros(G, dtype=dtype, device=device)
    prior_cost = torch.zeros(G, dtype=dtype, device=device)
    lam = torch.full((G,), options.lambda_init, dtype=dtype, device=device)
    nu = torch.full((G,), 2.0, dtype=dtype, device=device)
    done = counts == 0                    # a group without frames has nothing to fit
    diverged = torch.zeros(G, dtype=torch.bool, device=device)
    stale = torch.ones(G, dtype=torch.bool, device=device)
    iterations = 0
    for it in range(max_iter):
        relin = stale & ~done
        if bool(relin.any()):
            gidx = torch.nonzero(relin).flatten()
            idx = torch.nonzero(relin[groups]).flatten()
            loc = _local_index(groups[idx], gidx, G)
            Ga = gidx.numel()
            # Without per-frame parameters only the group sums of J^T J are needed:
            # built summed, never as (n, P, P) per-frame matrices.
            (c, g, H), (pc, pg, pH) = problem.linearize(x[idx], y[gidx], idx, gidx,
                                                        loc if Px == 0 else None)
            V_new = (H if Px == 0 else _sum_into(H[:, Px:, Px:], loc, Ga)) + pH
            gy_new = _sum_into(g[:, Px:], loc, Ga) + pg
            cost_new = _sum_into(c, loc, Ga) + pc
            finite = torch.isfinite(c) & torch.isfinite(g.sum(1))
            if Px:
                finite &= torch.isfinite(H.sum((1, 2)))
                U[idx], W[idx] = H[:, :Px, :Px], H[:, :Px, Px:]
            bad = (_sum_into((~finite).to(dtype), loc, Ga) > 0) | ~torch.isfinite(cost_new) \
                | ~torch.isfinite(gy_new.sum(1)) | ~torch.isfinite(V_new.sum((1, 2)))
            gx[idx] = g[:, :Px]
            frame_cost[idx] = c
            V[gidx], gy[gidx], cost[gidx], prior_cost[gidx] = V_new.to(ldt), gy_new, cost_new, pc
            grad_max = torch.maximum(gy_new.abs().amax(1), _scatter_max(
                g[:, :Px].abs().amax(1) if Px else c.new_zeros(c.shape), loc, Ga))
            diverged[gidx[bad]] = True
            done[gidx[bad | (grad_max <= gtol)]] = True
            stale[gidx] = False
        gidx = torch.nonzero(~done).flatten()
        if gidx.numel() == 0:
            break
        iterations = it + 1
        idx = torch.nonzero((~done)[groups]).flatten()
        loc = _local_index(groups[idx], gidx, G)
        Ga = gidx.numel()
        Ua, Wa, gxa, xa = U[idx], W[idx], gx[idx], x[idx]
        Va, gya, ya = V[gidx], gy[gidx], y[gidx]
        dU, dV = Ua.diagonal(dim1=-2, dim2=-1), Va.diagonal(dim1=-2, dim2=-1)
        if options.damping == 'levenberg':
            # lambda * (mean diagonal of the group's whole system) * I
            mean = (_sum_into(dU.sum(1), loc, Ga) + dV.sum(1)) / (
                counts[gidx].to(dU.dtype) * Px + Py)
            Dx, Dy = mean[loc, None].expand_as(dU), mean[:, None].expand_as(dV)
        else:
            floor = 1e-9 * torch.maximum(dV.amax(1), _scatter_max(
                dU.amax(1) if Px else dU.new_zeros(idx.numel()), loc, Ga)).clamp_min(1e-30)
            Dx, Dy = torch.maximum(dU, floor[loc, None]), torch.maximum(dV, floor[:, None])
        A = Ua.clone()
        A.diagonal(dim1=-2, dim2=-1).add_((lam[gidx][loc, None] * Dx).to(A.dtype))
        S = Va.clone()
        S.diagonal(dim1=-2, dim2=-1).add_((lam[gidx, None] * Dy).to(S.dtype))
        dx, dy, ok = solve_block_arrow(A, Wa, S, gxa, gya, loc)
        dx, dy = dx.to(dtype), dy.to(dtype)
        x_trial, y_trial = xa + dx, ya + dy
        new_frame, new_prior = problem.cost(x_trial, y_trial, idx, gidx)
        new_cost = _sum_into(new_frame, loc, Ga) + new_prior
        old_cost = cost[gidx]
        # predicted decrease: -(2 g.s + s^T H s) over the group's whole system
        dxl, dyl = dx.to(ldt), dy.to(ldt)
        frame_terms = (2.0 * (gxa * dx).sum(1)
                       + ((dxl[:, None] @ Ua @ dxl[..., None]).flatten()
                          + 2.0 * (dxl[:, None] @ Wa @ dyl[loc][..., None]).flatten()).to(dtype))
        predicted = -(_sum_into(frame_terms, loc, Ga) + 2.0 * (gya * dy).sum(1)
                      + (dyl[:, None] @ Va @ dyl[..., None]).flatten().to(dtype))
        # a failed factorisation: rejected, the damping grows and it tries again
        predicted = torch.where(ok, predicted, torch.full_like(predicted, float('inf')))
        actual = old_cost - new_cost
        accept = ok & torch.isfinite(new_cost) & (actual > 0)
        rho = actual / predicted.clamp_min(1e-300)
        shrink = torch.clamp(1.0 - (2.0 * rho - 1.0) ** 3, min=1.0 / 3.0)
        lam_a, nu_a = lam[gidx], nu[gidx]
        lam[gidx] = torch.where(accept, lam_a * shrink, lam_a * nu_a)
        nu[gidx] = torch.where(accept, torch.full_like(nu_a, 2.0), nu_a * 2.0)
        take = accept[loc]
        x[idx] = torch.where(take[:, None], x_trial, xa)
        y[gidx] = torch.where(accept[:, None], y_trial, ya)
        frame_cost[idx] = torch.where(take, new_frame, frame_cost[idx])
        prior_cost[gidx] = torch.where(accept, new_prior, prior_cost[gidx])
        cost[gidx] = torch.where(accept, new_cost, old_cost)
        stale[gidx] = accept
        step_max = torch.maximum(dy.abs().amax(1), _scatter_max(
            dx.abs().amax(1) if Px else dx.new_zeros(idx.numel()), loc, Ga))
        size_max = torch.maximum(ya.abs().amax(1), _scatter_max(
            xa.abs().amax(1) if Px else xa.new_zeros(idx.numel()), loc, Ga))
        small_step = step_max <= options.xtol * (size_max + options.xtol)
        small_gain = accept & (actual <= rel_tol * old_cost)
        unresolvable = ~accept & (predicted <= rel_tol * old_cost)
        stuck = ~accept & (lam[gidx] > options.lambda_max)
        done[gidx[small_gain | (accept & small_step) | stuck | unresolvable
                  | (new_cost == 0)]] = True
        if on_iteration is not None:
            on_iteration(iterations, frame_costs(frame_cost, prior_cost, groups, counts))
    return x, y, frame_costs(frame_cost, prior_cost, groups, counts), diverged[groups], \
        iterations


def frame_costs(frame_cost: Tensor, prior_cost: Tensor, groups: Tensor, counts: Tensor
                ) -> Tensor:
    """(B,) each frame's cost with its group's priors spread evenly over the group's
    frames (the registrant's per-sample losses of a stage fitting shared parameters)."""
    return frame_cost + prior_cost[groups] / counts[groups].clamp_min(1).to(prior_cost)


__all__ = ['GroupLeastSquaresProblem', 'group_levenberg_marquardt', 'solve_block_arrow',
           'frame_costs']
