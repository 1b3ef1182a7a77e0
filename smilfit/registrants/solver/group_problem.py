"""A stage's least-squares problem over per-frame and per-group (shared) parameters.

A stage fitting parameters shared by an animal's frames (``shared=`` in the registrant:
``bone_trans``, ``keypoint_offsets``, ...) couples those frames: frame ``i`` of group
``g`` has its own parameters ``x_i`` (pose, translation, global scale; possibly none)
and reads the group's ``y_g``. The Gauss-Newton normal equations of group ``g`` have
the block-arrow structure (:class:`~.linear_solver.BlockArrow`)

    [ U_1           W_1 ] [dx_1]     [gx_1]
    [      ...      ... ] [ .. ] = - [ .. ]
    [           U_n W_n ] [dx_n]     [gx_n]
    [ W_1^T ... W_n^T V ] [dy  ]     [gy  ]

with ``U_i = Jx_i^T Jx_i``, ``W_i = Jx_i^T Jy_i``, ``V = sum_i Jy_i^T Jy_i`` (+ the priors
on ``y`` counted once per group), solved by the Schur complement over the frames
(:class:`~.linear_solver.SchurComplement`). A stage fitting only shared parameters has
no ``U``: ``S = V``, the sum of its frames' ``J^T J``.

The per-frame terms come from :class:`~.problem.LeastSquaresProblem` (closed-form point
Jacobians, handlers' residual forms, robust kernels and noise units as in the per-sample
problem); priors on shared parameters only are evaluated once per group.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, Sequence, Tuple

import torch
from torch import nn

from .normal_equations import add_param_block
from .problem import LeastSquaresProblem

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
            self.frame_names + self.shared_names, cost_fn, linear_dtype=linear_dtype,
            plan_solver=False)
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

    @staticmethod
    def _z(x: Tensor, y: Tensor, loc: Tensor) -> Tensor:
        """(n, Px + Py) every frame's full parameter vector: its own ``x`` (n, Px) and its
        group's row ``loc`` (n,) of ``y`` (Ga, Py)."""
        return torch.cat([x, y.index_select(0, loc)], dim=1)

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

    def cost(self, x: Tensor, y: Tensor, idx: Tensor, gidx: Tensor, loc: Tensor
             ) -> Tuple[Tensor, Tensor]:
        """Frame costs (n,) of the frames ``idx`` and prior costs (Ga,) of the groups
        ``gidx`` (each group's priors once); ``loc`` (n,) is each frame's row in ``gidx``."""
        if self.has_sample_handlers:
            frame = self.per_frame.cost(self._z(x, y, loc), idx)
        else:
            frame = x.new_zeros(idx.numel())
        group = y.new_zeros(gidx.numel())
        if self.group_handlers:
            params, obs = self._group_inputs(y, gidx)
            for h in self.group_handlers:
                r = h.param_residuals(params, obs) * math.sqrt(h.weight)
                group = group + (r * r).sum(1)
        return frame, group

    def linearize(self, x: Tensor, y: Tensor, idx: Tensor, gidx: Tensor, loc: Tensor,
                  summed: bool = False):
        """Frame terms ``(cost (n,), g (n, P), H (n, P, P))`` (P = Px + Py, per-frame
        columns first) and group prior terms ``(cost (Ga,), g (Ga, Py), H (Ga, Py, Py))``.

        ``loc`` (n,): each frame's row in ``gidx``. ``summed``: the frames' ``H`` summed
        per group instead, (Ga, P, P) (enough when no per-frame parameter is fitted)."""
        reduce = (loc, int(gidx.numel())) if summed else None
        c, g, H = self.per_frame.linearize(self._z(x, y, loc), idx, reduce)
        Ga, Py = gidx.numel(), self.Py
        gc = y.new_zeros(Ga)
        gg = y.new_zeros(Ga, Py)
        gH = torch.zeros(Ga, Py, Py, dtype=H.dtype, device=H.device)
        if self.group_handlers:
            params, obs = self._group_inputs(y, gidx)
            for h in self.group_handlers:
                r, Jp, cols = self.per_frame.param_jacobians.terms(h, params, obs, Ga)
                gc = gc + (r * r).sum(1)
                add_param_block(gH, gg, r, Jp, None if cols is None else cols - self.Px)
        return (c, g, H), (gc, gg, gH)


def frame_costs(frame_cost: Tensor, prior_cost: Tensor, groups: Tensor, counts: Tensor
                ) -> Tensor:
    """(B,) each frame's cost with its group's priors spread evenly over the group's
    frames (the registrant's per-sample losses of a stage fitting shared parameters)."""
    return frame_cost + prior_cost[groups] / counts[groups].clamp_min(1).to(prior_cost)


__all__ = ['GroupLeastSquaresProblem', 'frame_costs']
