"""A stage's per-sample least-squares problem ``min_x sum_h w_h |r_h(x)|^2`` over its
fitted parameters (a few hundred per frame), and its linearisation.

With the closed-form point Jacobians (:mod:`.point_jacobian`) and the handlers' residual
forms (:mod:`.residual_blocks`), :meth:`LeastSquaresProblem.linearize` builds the
Gauss-Newton normal equations of every sample at once (:mod:`.normal_equations`), in the
layout of the linear solver the problem picks from its structure in its first
linearisation (:mod:`.linear_solver`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .linear_solver import DenseCholesky, LinearSolver, plan_linear_solver
from .normal_equations import ConstantJacobian, DiagonalJacobian, add_param_block
from .point_jacobian import PointJacobian, UnsupportedJacobian, check_supported
from .residual_blocks import ParamResidualJacobians, point_terms

Tensor = torch.Tensor


class LeastSquaresProblem:
    """The stage's per-sample least-squares problem on the fitted parameters.

    Args:
        body_model: the registrant's :class:`~smilfit.body_models.SMILModel`.
        handlers: active handlers (each with ``residual_kind`` 'points' or 'params').
        observations: (B, ...) tensors (others pass through untouched).
        fixed: every model/handler parameter, (B, ...) per sample (shared ones already
            expanded); the fitted ones give the starting point.
        fitted: names of the fitted parameters.
        cost_fn: ``cost_fn(params, observations) -> (n,)``, the stage's summed weighted
            handler losses (the true loss; ``sum r^2`` equals it).
        linear_dtype: precision of the normal equations (default: the parameters').
        cost_returns_output: ``cost_fn(params, observations, return_output=True)``
            also returns the body model's output: the forward pass of a trial point is
            then kept, and the linearisation at an accepted trial point reuses it.
        plan_solver: pick the linear solver (and with it the layout of ``H``) from the
            structure in the first linearisation (:attr:`solver`); ``False``: ``H`` stays
            (n, P, P) matrices (the group problem solves its own block-arrow systems).
    """

    def __init__(self, body_model: nn.Module, handlers: Sequence[nn.Module],
                 observations: Mapping[str, Tensor], fixed: Mapping[str, Tensor],
                 fitted: Sequence[str],
                 cost_fn: Callable[[Dict[str, Tensor], Dict[str, Tensor]], Tensor],
                 linear_dtype: torch.dtype = None, cost_returns_output: bool = False,
                 plan_solver: bool = True) -> None:
        missing = [f'{h.name!r} ({type(h).__name__})' for h in handlers
                   if h.residual_kind not in ('points', 'params')]
        if missing:
            raise ValueError(f'Levenberg-Marquardt needs handlers in least-squares form; '
                             f'none for {", ".join(missing)}: use LBFGS/Adam for this '
                             'stage or set their weight to 0 in it (loss_weights)')
        self.model = body_model
        self.handlers = list(handlers)
        self.fitted = list(fitted)
        check_supported(body_model, self.fitted, fixed)
        if 'keypoint_offsets' in self.fitted:
            _check_offset_handlers(self.handlers)
        self.B = int(fixed[self.fitted[0]].shape[0])
        self.obs = dict(observations)
        self.fixed = dict(fixed)
        self.shapes = {n: tuple(fixed[n].shape[1:]) for n in self.fitted}
        self.sizes = [math.prod(self.shapes[n]) for n in self.fitted]
        self.offsets = {n: sum(self.sizes[:i]) for i, n in enumerate(self.fitted)}
        self.cost_fn = cost_fn
        self.linear_dtype = linear_dtype
        self.jacobian = PointJacobian(body_model)
        self.pool_index = {h.name: h.pool_index(body_model) for h in self.handlers
                           if h.residual_kind == 'points'}
        self.param_jacobians = ParamResidualJacobians(self.fitted, self.offsets)
        self.cost_returns_output = bool(cost_returns_output)
        # The last cost evaluation's samples (n,), points (n, P) and model output.
        self._last_forward = None
        # (P, P) bool: the columns that can meet in J^T J (set by the first
        # linearisation; see column_coupling).
        self._coupling: Optional[Tensor] = None
        self.plan_solver = bool(plan_solver)
        #: The linear solver of the damped systems (its ``layout`` is ``H``'s), picked
        #: in the first linearisation; a dense factorisation without ``plan_solver``.
        self.solver: Optional[LinearSolver] = None
        # (handlers read directly, handlers with offsets, device), the pool points
        # computed (None: all) and the direct handlers' rows: see _attached_points.
        self._layout = None

    # ------------------------------------------------------------ helpers
    def initial_x(self) -> Tensor:
        """(B, P) the fitted parameters, flattened."""
        return torch.cat([self.fixed[n].reshape(self.B, -1) for n in self.fitted], dim=1)

    def unflatten(self, x: Tensor) -> Dict[str, Tensor]:
        parts = torch.split(x, self.sizes, dim=1)
        return {n: p.reshape((x.shape[0],) + self.shapes[n]) for n, p in zip(self.fitted, parts)}

    def subset(self, idx: Tensor, x: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """Parameters (fitted from ``x``) and observations of the samples ``idx``
        (sorted and unique, as ``nonzero`` gives them)."""
        if idx.numel() == self.B:  # all of them: no copies
            params = dict(self.fixed)
            params.update(self.unflatten(x))
            return params, dict(self.obs)
        params = {k: v.index_select(0, idx) for k, v in self.fixed.items()}
        params.update(self.unflatten(x))
        obs = {k: (v.index_select(0, idx) if isinstance(v, Tensor) and v.dim()
                   and v.shape[0] == self.B else v) for k, v in self.obs.items()}
        return params, obs

    def cost(self, x: Tensor, idx: Tensor) -> Tensor:
        """(n,) cost of the samples ``idx`` (n,) at ``x`` (n, P); the model's forward pass
        is kept for :meth:`linearize` (see ``cost_returns_output``)."""
        params, obs = self.subset(idx, x)
        if not self.cost_returns_output:
            return self.cost_fn(params, obs)
        cost, output = self.cost_fn(params, obs, return_output=True)
        self._last_forward = (idx, x, output)
        return cost

    def _kept_forward(self, x: Tensor, idx: Tensor):
        """The kinematics at ``x`` (n, P) of samples ``idx`` from the last :meth:`cost`
        call when it evaluated all of them at exactly these points, else ``None``:
        ``joints_kin`` (n, J, 3), ``joint_transforms`` (n, J, 4, 4), ``rot_mats``
        (n, J, 3, 3)."""
        last = self._last_forward
        self._last_forward = None
        if last is None:
            return None
        lidx, lx, out = last
        if idx.numel() > lidx.numel() or not idx.numel():
            return None
        pos = torch.searchsorted(lidx, idx).clamp_max(lidx.numel() - 1)
        if not bool((lidx[pos] == idx).all()):
            return None
        same = idx.numel() == lidx.numel()   # then pos is 0..n-1
        if not torch.equal(lx if same else lx.index_select(0, pos), x):
            return None
        fields = ('joints_kin', 'joint_transforms', 'rot_mats')
        return _Kinematics(*(getattr(out, f) if same else getattr(out, f).index_select(0, pos)
                             for f in fields))

    # ---------------------------------------------------------- linearize
    def linearize(self, x: Tensor, idx: Tensor, reduce: Optional[Tuple[Tensor, int]] = None,
                  upper_only: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
        """Cost (n,), ``g = J^T r`` (n, P) and ``H = J^T J`` at ``x`` (n, P), in the layout
        of :attr:`solver` (n, P, P) or packed (n, width).

        ``reduce = (group (n,) long, G)``: ``H`` summed over each group's samples
        instead, (G, P, P) (a stage fitting only shared parameters needs no more).
        ``upper_only``: ``H``'s upper triangle (and diagonal) is exact, the rest may not
        be (for a reader of the upper triangle only, such as the linear solvers).
        The first call picks :attr:`solver` from :meth:`column_coupling`, once the
        structure is known, before ``H`` is built."""
        params, obs = self.subset(idx, x)
        n, P = x.shape
        dtype, device = x.dtype, x.device
        ldt = self.linear_dtype or dtype
        cost = torch.zeros(n, dtype=dtype, device=device)
        g = torch.zeros(n, P, dtype=dtype, device=device)
        point_handlers = [h for h in self.handlers if h.residual_kind == 'points']
        jac = None
        if point_handlers:
            rows, keep, attach, offsets, offset_rows = self._attached_points(
                point_handlers, params, device)
            jac = self.jacobian.sparse(params, self.fitted, attach, offsets, offset_rows,
                                       output=self._kept_forward(x, idx), keep=keep)
            points = jac.points
            # Per point: sum over views and residual rows of A^T A and A^T r, built
            # coordinate-major and sample-last ((3, 3, N, n), (3, N, n)), the layout the
            # normal equations read: the sums over the rows run over whole rows of
            # samples, where an einsum would run (n * M) tiny matrix products.
            N = points.shape[1]
            info = torch.zeros(3, 3, N, n, dtype=dtype, device=device)
            grad_pts = torch.zeros(3, N, n, dtype=dtype, device=device)
            for h in point_handlers:
                index = rows[h.name]
                r, A = point_terms(h, points.index_select(1, index), obs, params)
                cost = cost + (r * r).sum((1, 2, 3))
                G, M, D = A.shape[1:4]
                Ac = A.permute(4, 1, 3, 2, 0).reshape(3, G * D, M, n)
                rc = r.permute(1, 3, 2, 0).reshape(G * D, M, n)
                info.index_add_(2, index, (Ac[:, None] * Ac[None]).sum(2))
                grad_pts.index_add_(1, index, (Ac * rc).sum(1))
            info, grad_pts = info.permute(3, 2, 0, 1), grad_pts.permute(2, 1, 0)  # (n, N, ..)
        param_terms = []
        for h in self.handlers:
            if h.residual_kind == 'params':
                r, Jp, cols = self.param_jacobians.terms(h, params, obs, n)
                cost = cost + (r * r).sum(1)
                param_terms.append((r, Jp, cols))
        if self._coupling is None:
            # Which columns can meet in J^T J: fixed by the structure (the point blocks
            # of the kinematic tree, the priors' columns), not by the values, which may
            # be zero by accident at one point (a rotation axis along a bone).
            coupling = torch.zeros(P, P, dtype=torch.bool)
            if jac is not None:
                coupling |= _point_coupling(jac, P)
            for _, Jp, cols in param_terms:
                if cols is not None and cols.numel():
                    c = cols.cpu()
                    if isinstance(Jp, DiagonalJacobian):
                        coupling[c, c] = True
                    else:
                        coupling[c[:, None], c[None, :]] |= (Jp.gram != 0).cpu() \
                            if isinstance(Jp, ConstantJacobian) else True
            self._coupling = coupling
        if self.solver is None:
            self.solver = (plan_linear_solver(self._coupling, device) if self.plan_solver
                           else DenseCholesky())
        layout = self.solver.layout
        H = None
        if jac is not None:
            # H = D^T blockdiag(info) D, block-sparse: 3 rows per point, and only the
            # (point, joint) pairs of the kinematic tree.
            H, g_pts = jac.normal_equations(info, grad_pts, ldt, reduce, upper_only, layout)
            g = g + g_pts
        if H is None:
            rows = n if reduce is None else int(reduce[1])
            H = (torch.zeros(rows, P, P, dtype=ldt, device=device) if layout is None else
                 torch.zeros(rows, layout.width, dtype=ldt, device=device))
        for r, Jp, cols in param_terms:
            add_param_block(H, g, r, Jp, cols, reduce, None if layout is None else layout.slots)
        return cost, g, H

    def point_terms_at(self, x: Tensor, idx: Tensor, handlers: Sequence[nn.Module]
                       ) -> Dict[str, Tuple[Tensor, Tensor]]:
        """Each point handler of ``handlers``' point derivatives at ``x`` (n, P) of samples
        ``idx``: name -> ``(A, D)``, ``A`` (n, G, M, R, 3) its weighted residuals'
        derivatives by its points (:func:`point_terms`), ``D`` (n, M, 3, P) the points'
        by the parameters. Empty where no handler has points."""
        out, dense = {}, None
        for h, index, jac, A in self._point_terms(x, idx, handlers):
            dense = jac.to_dense() if dense is None else dense
            out[h.name] = (A, dense.index_select(1, index))
        return out

    def data_rows(self, x: Tensor, idx: Tensor) -> Tensor:
        """(n,) long: the point (data) residual rows of the samples ``idx`` (n,) at ``x``
        (n, P) that some fitted parameter moves (a keypoint not seen, weighted 0, has
        none). A sample's cost over them is about one label residual's squared error
        where the fit has converged (priors' rows are left out: a weak prior's residuals
        are not in the labels' units)."""
        rows = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        for _, _, _, A in self._point_terms(x, idx, self.handlers):
            rows += (A != 0).any(-1).flatten(1).sum(1)
        return rows

    def _point_terms(self, x: Tensor, idx: Tensor, handlers: Sequence[nn.Module]):
        """For each point handler among ``handlers``: ``(handler, its rows in the
        Jacobian's points (M,), the sparse point Jacobian at x (n, P) of samples idx,
        A (n, G, M, R, 3))`` (:func:`point_terms`); the Jacobian is built once, and only
        where some handler has points."""
        point_handlers = [h for h in self.handlers if h.residual_kind == 'points']
        wanted = [h for h in handlers if h in point_handlers]
        if not wanted:
            return
        params, obs = self.subset(idx, x)
        rows, keep, attach, offsets, offset_rows = self._attached_points(
            point_handlers, params, x.device)
        jac = self.jacobian.sparse(params, self.fitted, attach, offsets, offset_rows,
                                   keep=keep)
        for h in wanted:
            index = rows[h.name]
            _, A = point_terms(h, jac.points.index_select(1, index), obs, params)
            yield h, index, jac, A

    def column_coupling(self) -> Optional[Tensor]:
        """(P, P) bool on the CPU: the columns that can meet in ``J^T J`` (some point
        residual reads both, or a prior couples them), known after the first
        :meth:`linearize`; ``None`` before. It decides how the damped system is solved
        (:mod:`.linear_solver`)."""
        return self._coupling

    def separable_columns(self) -> Optional[Tensor]:
        """(P,) bool: the columns whose only entry in ``J^T J`` is their diagonal (no
        point residual reads them; at most priors separable per column, such as an L2
        pose prior on a joint no keypoint lies below); ``None`` before the first
        :meth:`linearize`. Their Levenberg-Marquardt steps are divisions."""
        if self._coupling is None:
            return None
        off = self._coupling.clone()
        off.fill_diagonal_(False)
        return ~off.any(1)

    def _attached_points(self, handlers, params, device):
        """Each handler's rows in the Jacobian's points: the pool points some handler
        reads directly (only those are computed), then its own copies of its points
        for a handler with joint-frame offsets.

        A handler with joint-frame offsets (:meth:`local_offsets`) reads its own copies
        of its points, attached after the pool points with those offsets, so the
        Jacobian sees the offsets turn with their joints; the others read pool points.

        Returns:
            ``{name: (M,) rows}``, the pool points computed (K,) (sorted; ``None``:
            all of them), the
            attached pool points (X,) or ``None``, their offsets (n or 1, X, 3) or
            ``None`` and the rows of ``keypoint_offsets`` they are (X,) (-1 for another
            handler's offsets) or ``None``.
        """
        direct, attach, offsets, offset_rows, local = {}, [], [], [], {}
        for h in handlers:
            base = self.pool_index[h.name].to(device)
            offs = h.local_offsets(params)
            if offs is None:
                direct[h.name] = base
                continue
            local[h.name] = sum(a.numel() for a in attach) + torch.arange(base.numel(),
                                                                          device=device)
            attach.append(base)
            offsets.append(offs)
            offset_rows.append(h.model_index.to(device)
                               if h.offsets_key == 'keypoint_offsets'
                               else torch.full_like(base, -1))
        layout_key = (tuple(direct), tuple(local), str(device))
        if self._layout is None or self._layout[0] != layout_key:  # fixed for a stage
            keep = torch.unique(torch.cat(list(direct.values()))) if direct else \
                torch.zeros(0, dtype=torch.long, device=device)
            direct_rows = {name: torch.searchsorted(keep, base) for name, base in direct.items()}
            if keep.numel() == self.jacobian.num_points:  # every pool point: no subset
                keep = None
            self._layout = (layout_key, keep, direct_rows)
        _, keep, direct_rows = self._layout
        first = self.jacobian.num_points if keep is None else keep.numel()
        rows = dict(direct_rows)
        rows.update({name: first + r for name, r in local.items()})
        if not attach:
            return rows, keep, None, None, None
        n = max(o.shape[0] for o in offsets)
        return (rows, keep, torch.cat(attach),
                torch.cat([o.expand(n, -1, -1) for o in offsets], 1), torch.cat(offset_rows))


@dataclass
class _Kinematics:
    """The parts of a body model's output the point Jacobians read."""

    joints_kin: Tensor
    joint_transforms: Tensor
    rot_mats: Tensor


def _check_offset_handlers(handlers: Sequence[nn.Module]) -> None:
    """Fitted ``keypoint_offsets`` need joint-frame offsets in every handler reading them
    (world-frame ones are added inside the residuals, out of the Jacobian's sight)."""
    world = [h.name for h in handlers if h.residual_kind == 'points'
             and h.offsets_key == 'keypoint_offsets' and h.offsets_frame != 'joint']
    if world:
        raise UnsupportedJacobian(f'fitting keypoint_offsets with Levenberg-Marquardt needs '
                                  f"offsets_frame='joint' in handlers {world}; use LBFGS")



def _point_coupling(jac, P: int) -> Tensor:
    """(P, P) bool on the CPU: the columns some point of the sparse Jacobian ``jac``
    depends on together (its rotation blocks' columns and the dense columns)."""
    points = jac.points.shape[1]
    touches = torch.zeros(points, P, dtype=torch.float32)
    cols = (jac.rot_col[:, None] + torch.arange(3, device=jac.rot_col.device)).cpu()
    touches[jac.rot_point.cpu()[:, None].expand_as(cols), cols] = 1.0
    touches[:, jac.dense_col.cpu()] = 1.0
    return (touches.T @ touches) > 0



__all__ = ['LeastSquaresProblem']
