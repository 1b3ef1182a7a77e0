"""Batched per-sample Levenberg-Marquardt for fitting stages in least-squares form.

Each sample is its own nonlinear least-squares problem ``min_x sum_h w_h |r_h(x)|^2``
over the stage's fitted parameters (a few hundred per frame). With the closed-form
point Jacobians (:mod:`.jacobians`) and the handlers' residual forms
(:meth:`~smilfit.handlers.base.BaseHandler.point_residuals` /
:meth:`~smilfit.handlers.base.BaseHandler.param_residuals`), every iteration builds
the Gauss-Newton system ``(J^T J + lambda D) dx = -J^T r`` for all samples at once and
solves it with one batched Cholesky. Converging quadratically, it needs tens of
iterations where first-order methods need thousands.

Independence: every sample has its own damping, acceptance and stopping; the samples
still running are gathered into a compact batch each iteration, so a sample's
trajectory does not depend on the others (the per-frame loop gives the same result).

The point handlers' residual Jacobians w.r.t. their points come from three
forward-mode directional derivatives (each residual depends on one point), so any
projection (distortion included) is differentiated exactly without hand-written
derivatives; parameter handlers are differentiated by forward mode over their own
parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from smilfit.ops.sparse_cholesky import SparseCholeskyPlan

from .damped_solve import damped_step, plan_solve
from .jacobians import PointJacobian, UnsupportedJacobian, check_supported

Tensor = torch.Tensor

#: Optimizer ``type`` names that select this solver in a stage config.
LM_NAMES = ('LevenbergMarquardt', 'LM')


@dataclass
class LMOptions:
    """Settings of :func:`levenberg_marquardt` (the stage's ``optimizer`` dict).

    Attributes:
        lambda_init: initial damping (relative to the diagonal of ``J^T J``).
        lambda_max: a sample whose damping exceeds this cannot improve and stops.
        xtol: stop when the step's largest entry is below ``xtol * (|x|_inf + xtol)``.
        damping: ``'levenberg'`` (``J^T J + lambda mean(diag) I``, the default: robust
            when some directions are unconstrained) or ``'marquardt'``
            (``J^T J + lambda diag(J^T J)``, scale-invariant).
        linear_dtype: precision of ``J^T J`` and its solve: ``'auto'`` (the
            parameters' dtype), ``'float32'`` or ``'float64'``. float32 halves the
            dominant cost; residuals, gradients and the acceptance test keep the
            parameters' precision, so a less exact step only costs an iteration.
    """

    lambda_init: float = 1e-3
    lambda_max: float = 1e10
    xtol: float = 1e-10
    damping: str = 'levenberg'
    linear_dtype: str = 'auto'

    @classmethod
    def from_config(cls, cfg: Mapping, where: str) -> 'LMOptions':
        allowed = ('lambda_init', 'lambda_max', 'xtol', 'damping', 'linear_dtype')
        unknown = sorted(set(cfg) - set(allowed))
        if unknown:
            raise ValueError(f'{where}: unknown Levenberg-Marquardt option(s) {unknown}; '
                             f'allowed: {list(allowed)} (iterations come from n_iter, '
                             'tolerances from ftol/gtol)')
        damping = cfg.get('damping', 'levenberg')
        if damping not in ('levenberg', 'marquardt'):
            raise ValueError(f"{where}: damping must be 'levenberg' or 'marquardt', "
                             f'got {damping!r}')
        linear = cfg.get('linear_dtype', 'auto')
        if linear not in ('auto', 'float32', 'float64'):
            raise ValueError(f"{where}: linear_dtype must be 'auto', 'float32' or 'float64', "
                             f'got {linear!r}')
        opts = cls(damping=damping, linear_dtype=linear,
                   **{k: float(v) for k, v in cfg.items() if k not in ('damping', 'linear_dtype')})
        if not (opts.lambda_init > 0 and opts.lambda_max > opts.lambda_init and opts.xtol >= 0):
            raise ValueError(f'{where}: need 0 < lambda_init < lambda_max and xtol >= 0, '
                             f'got {opts}')
        return opts


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
        cost_returns_output: ``cost_fn(params, observations, return_output=True)``
            also returns the body model's output: the forward pass of a trial point is
            then kept, and the linearisation at an accepted trial point reuses it.
    """

    def __init__(self, body_model: nn.Module, handlers: Sequence[nn.Module],
                 observations: Mapping[str, Tensor], fixed: Mapping[str, Tensor],
                 fitted: Sequence[str],
                 cost_fn: Callable[[Dict[str, Tensor], Dict[str, Tensor]], Tensor],
                 linear_dtype: torch.dtype = None, cost_returns_output: bool = False
                 ) -> None:
        missing = [f'{h.name!r} ({type(h).__name__})' for h in handlers
                   if getattr(h, 'residual_kind', None) not in ('points', 'params')]
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
        # Jacobians of affine parameter residuals (linear priors), computed once:
        # (handler, parameters, weight) -> ConstantJacobian.
        self._constant_jacobians: Dict[tuple, 'ConstantJacobian'] = {}
        self.cost_returns_output = bool(cost_returns_output)
        # The last cost evaluation's samples (n,), points (n, P) and model output.
        self._last_forward = None
        # (P, P) bool: the columns that can meet in J^T J (set by the first
        # linearisation; see column_coupling).
        self._coupling: Optional[Tensor] = None
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
                  upper_only: bool = False, packed: Union[None, Tuple[Tensor, int], Callable[
                      [Tensor], Optional[Tuple[Tensor, int]]]] = None
                  ) -> Tuple[Tensor, Tensor, Tensor]:
        """Cost (n,), ``g = J^T r`` (n, P) and ``H = J^T J`` (n, P, P) at ``x`` (n, P).

        ``reduce = (group (n,) long, G)``: ``H`` summed over each group's samples
        instead, (G, P, P) (a stage fitting only shared parameters needs no more).
        ``upper_only``: ``H``'s upper triangle (and diagonal) is exact, the rest may not
        be (for a reader of the upper triangle only, such as :func:`.damped_step`).
        ``packed = (slot map (P * P,), width)``: ``H`` (n, width) is the upper triangle
        packed through the map (a sparse factorisation's layout,
        :meth:`smilfit.ops.sparse_cholesky.SparseCholeskyPlan.slot_map`); or a callable
        that picks that layout (or ``None``: dense) from :meth:`column_coupling`, called
        once the structure is known, before ``H`` is built."""
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
                r, A = self._point_terms(h, points.index_select(1, index), obs, params)
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
                r, Jp, cols = self._param_terms(h, params, obs, n)
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
                    coupling[c[:, None], c[None, :]] |= (Jp.gram != 0).cpu() \
                        if isinstance(Jp, ConstantJacobian) else True
            self._coupling = coupling
        if callable(packed):
            packed = packed(self.column_coupling())
        H = None
        if jac is not None:
            # H = D^T blockdiag(info) D, block-sparse: 3 rows per point, and only the
            # (point, joint) pairs of the kinematic tree.
            H, g_pts = jac.normal_equations(info, grad_pts, ldt, reduce, upper_only, packed)
            g = g + g_pts
        if H is None:
            rows = n if reduce is None else int(reduce[1])
            H = (torch.zeros(rows, P, P, dtype=ldt, device=device) if packed is None else
                 torch.zeros(rows, packed[1], dtype=ldt, device=device))
        for r, Jp, cols in param_terms:
            add_param_block(H, g, r, Jp, cols, reduce, None if packed is None else packed[0])
        return cost, g, H

    def column_coupling(self) -> Optional[Tensor]:
        """(P, P) bool on the CPU: the columns that can meet in ``J^T J`` (some point
        residual reads both, or a prior couples them), known after the first
        :meth:`linearize`; ``None`` before. It decides how the damped system is solved
        (:mod:`.damped_solve`)."""
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
            offs = h.local_offsets(params) if hasattr(h, 'local_offsets') else None
            if offs is None:
                direct[h.name] = base
                continue
            local[h.name] = sum(a.numel() for a in attach) + torch.arange(base.numel(),
                                                                          device=device)
            attach.append(base)
            offsets.append(offs)
            offset_rows.append(h.model_index.to(device)
                               if getattr(h, 'offsets_key', None) == 'keypoint_offsets'
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

    def _point_terms(self, handler, pts: Tensor, obs, params) -> Tuple[Tensor, Tensor]:
        """Weighted residuals (n, G, M, D) and their (n, G, M, D, 3) point derivatives."""
        scale = math.sqrt(handler.weight)
        closed_form = getattr(handler, 'point_residuals_and_jacobian', None)
        if closed_form is not None:  # e.g. 2D keypoints: projection differentiated by hand
            r, A = closed_form(pts, obs, params)
            return r * scale, A * scale

        def f(p):
            return handler.point_residuals(p, obs, params)
        basis = torch.eye(3, dtype=pts.dtype, device=pts.device)[:, None, None, :].expand(
            3, pts.shape[0], pts.shape[1], 3)
        r, tangents = self._jvp3(f, pts, basis)
        return r * scale, tangents * scale

    @staticmethod
    def _jvp3(f, pts: Tensor, basis: Tensor) -> Tuple[Tensor, Tensor]:
        """f(pts) and its derivatives along the 3 coordinate directions (all points at
        once: each residual depends on one point), stacked last: (..., 3)."""
        try:
            r, tangents = torch.func.vmap(lambda t: torch.func.jvp(f, (pts,), (t,)),
                                          out_dims=(None, 0))(basis)
        except Exception:  # a plugin handler vmap cannot trace: three plain passes
            out = [torch.func.jvp(f, (pts,), (basis[d],)) for d in range(3)]
            r, tangents = out[0][0], torch.stack([t for _, t in out])
        return r, tangents.movedim(0, -1)

    def _param_terms(self, handler, params, obs, n: int):
        """Weighted residuals (n, R), their Jacobian on the handler's fitted parameters
        and those parameters' columns (P_h,) (``None`` and ``None`` when it has none).

        The Jacobian is (n, R, P_h), or a :class:`ConstantJacobian` where the residuals are
        affine with the same coefficients for every sample (computed once per stage)."""
        scale = math.sqrt(handler.weight)
        names = [name for name in handler.residual_params if name in self.fitted]
        r = handler.param_residuals(params, obs) * scale
        if not names:
            return r, None, None
        affine = bool(getattr(handler, 'affine_param_residuals', False))
        key = (handler.name, tuple(names), float(handler.weight))
        cached = self._constant_jacobians.get(key) if affine else None
        if cached is not None:
            return r, cached, cached.cols
        if affine:
            constant = self._constant_jacobian(handler, params, obs, names, scale, n)
            self._constant_jacobians[key] = constant
            return r, constant, constant.cols
        blocks, cols = [], []
        for name in names:
            value = params[name]
            size = math.prod(value.shape[1:])
            start = self.offsets[name]
            cols.append(torch.arange(start, start + size, device=value.device))

            def f(v, name=name):
                p = dict(params)
                p[name] = v
                return handler.param_residuals(p, obs) * scale
            # Sample i's residuals depend on sample i's parameters only, so the Jacobian of
            # the batch sum holds every sample's own block: (R, n, *shape). Reverse mode:
            # forward-mode AD makes torch load jvp decompositions through the deprecated
            # torch.jit.script (a FutureWarning on every fit).
            jac = torch.func.jacrev(lambda v: f(v).sum(0))(value)
            blocks.append(jac.reshape(r.shape[1], n, size).permute(1, 0, 2))
        return r, torch.cat(blocks, dim=2), torch.cat(cols)

    def _constant_jacobian(self, handler, params, obs, names: Sequence[str], scale: float,
                           n: int) -> 'ConstantJacobian':
        """The Jacobian of affine residuals with the same coefficients for every sample,
        from the first sample alone, by plain reverse-mode autograd (``torch.func``'s
        first use in a process costs about a second, its set-up, more than the whole
        stage of a small fit): the sample copied once per residual row, and one backward
        pass of the sum of copy k's residual k gives every row."""
        def copies(x, rows: int):
            if isinstance(x, Tensor) and x.dim() and x.shape[0] == n:
                return x[:1].expand((rows,) + x.shape[1:])
            return x
        values = tuple(params[name][:1] for name in names)
        with torch.no_grad():
            p = {k: copies(v, 1) for k, v in params.items()}
            R = int((handler.param_residuals(p, {k: copies(v, 1) for k, v in obs.items()})
                     * scale)[0].numel())
        sizes = [v[0].numel() for v in values]
        if R and sum(sizes):
            rows = []
            for start in range(0, R, _JACOBIAN_ROWS_PER_PASS):
                k = min(_JACOBIAN_ROWS_PER_PASS, R - start)
                leaves = [v.detach().expand((k,) + v.shape[1:]).clone().requires_grad_()
                          for v in values]
                p = {key: copies(v, k) for key, v in params.items()}
                p.update(zip(names, leaves))
                with torch.enable_grad():   # (stages run without autograd)
                    res = handler.param_residuals(
                        p, {key: copies(v, k) for key, v in obs.items()}) * scale
                    rows_k = torch.arange(k, device=res.device)
                    picked = res.reshape(k, R)[rows_k, start + rows_k]
                    grads = torch.autograd.grad(picked.sum(), leaves, allow_unused=True)
                rows.append(torch.cat([torch.zeros(k, size, dtype=v.dtype, device=v.device)
                                       if grad is None else grad.reshape(k, size)
                                       for grad, v, size in zip(grads, values, sizes)], 1))
            matrix = torch.cat(rows)
        else:  # nothing to differentiate (e.g. a shape prior on K = 0 coefficients)
            matrix = values[0].new_zeros(R, sum(sizes))
        cols = torch.cat([torch.arange(self.offsets[name], self.offsets[name] + v[0].numel(),
                                       device=v.device) for name, v in zip(names, values)])
        return ConstantJacobian(matrix.detach().clone(), cols)


@dataclass
class ConstantJacobian:
    """The Jacobian (R, P_h) of residuals affine in the parameters with the same
    coefficients for every sample (a linear prior), its Gram matrix computed once, and
    the columns (P_h,) it fills."""

    matrix: Tensor
    cols: Tensor

    def __post_init__(self) -> None:
        self.gram = self.matrix.T @ self.matrix


def _column_run(cols: Tensor):
    """``slice(a, b)`` where ``cols`` (P_h,) is ``a, a+1, ..., b-1``, else ``cols``."""
    first = int(cols[0])
    if int(cols[-1]) - first + 1 == cols.numel() and bool(
            (cols == torch.arange(first, first + cols.numel(), device=cols.device)).all()):
        return slice(first, first + cols.numel())
    return cols


def add_param_block(H: Tensor, g: Tensor, r: Tensor, jac, cols: Optional[Tensor],
                    reduce: Optional[Tuple[Tensor, int]] = None,
                    slots: Optional[Tensor] = None) -> None:
    """``H[:, cols, cols] += J^T J`` and ``g[:, cols] += J^T r`` in place, for one
    handler's parameter residuals ``r`` (n, R) with Jacobian ``jac`` (n, R, P_h) or a
    :class:`ConstantJacobian`; nothing where ``cols`` is ``None`` or empty (no fitted
    parameters, or only empty ones such as K = 0 shape coefficients). Contiguous
    columns (one parameter) are updated through slices rather than advanced indexing,
    which copies the block. ``reduce = (group (n,), G)``: ``H`` (G, P, P) holds each
    group's sum (``g`` stays per sample). ``slots`` (P * P,): ``H`` is packed through this
    slot map (see :meth:`SparsePointJacobian.normal_equations`)."""
    if cols is None or not cols.numel():
        return
    run = _column_run(cols)
    if isinstance(jac, ConstantJacobian):
        gram, grad = jac.gram.to(H.dtype)[None], (r @ jac.matrix).to(g.dtype)
        if reduce is not None:  # the same block once per sample of the group
            counts = torch.bincount(reduce[0], minlength=int(reduce[1])).to(H.dtype)
            gram = counts[:, None, None] * gram
    else:
        gram, grad = (jac.transpose(1, 2) @ jac).to(H.dtype), torch.einsum('nrp,nr->np', jac, r)
        if reduce is not None:
            gram = gram.new_zeros((int(reduce[1]),) + gram.shape[1:]).index_add_(
                0, reduce[0], gram)
    if slots is not None:
        P = g.shape[1]
        at = slots[(cols[:, None] * P + cols[None, :]).flatten()]
        if gram.shape[0] == 1:   # one block for every row: scattered once, added to all
            H += H.new_zeros(H.shape[1]).index_add_(0, at, gram.reshape(-1))
        else:
            H.index_add_(1, at, gram.reshape(gram.shape[0], -1))
        g[:, run] += grad
        return
    rows, columns = (run, run) if isinstance(run, slice) else (run[:, None], run[None, :])
    H[:, rows, columns] += gram
    g[:, run] += grad


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
             and getattr(h, 'offsets_key', None) == 'keypoint_offsets'
             and getattr(h, 'offsets_frame', 'world') != 'joint']
    if world:
        raise UnsupportedJacobian(f'fitting keypoint_offsets with Levenberg-Marquardt needs '
                                  f"offsets_frame='joint' in handlers {world}; use LBFGS")


#: Residual rows of a constant Jacobian differentiated per backward pass (the sample is
#: copied once per row).
_JACOBIAN_ROWS_PER_PASS = 256

#: The share of accepted steps above which the next trial points are linearised
#: directly (see :func:`levenberg_marquardt`): a linearisation costs about 2-3 cost
#: evaluations, so linearising trials pays once most of them are taken.
LINEARIZE_TRIALS_MIN_ACCEPTANCE = 0.7


def levenberg_marquardt(problem: LeastSquaresProblem, x0: Tensor, max_iter: int,
                        options: LMOptions, ftol: float = 1e-9, gtol: float = 1e-7,
                        on_iteration: Callable[[int, Tensor], None] = None,
                        on_start: Callable[[Tensor], None] = None
                        ) -> Tuple[Tensor, Tensor, Tensor, int]:
    """Minimise every sample's least-squares problem independently.

    Args:
        problem: the :class:`LeastSquaresProblem`.
        x0: (B, P) starting parameters.
        max_iter: iterations (each: at most one linearisation and one trial step per
            running sample).
        options: :class:`LMOptions`.
        ftol: a sample stops when an accepted step lowers its cost by less than
            ``ftol`` times the cost, or a rejected step's predicted decrease is below
            that; ``ftol`` is raised to 16 rounding errors of the parameters' dtype
            (2e-6 in float32), so float32 stages stop when converged too.
        gtol: a sample stops when ``max |J^T r|`` is below this.
        on_iteration: called with the iteration number and the (B,) costs after it
            (progress hooks, loss history).
        on_start: called once with the (B,) costs at ``x0``, from the first
            linearisation (when ``max_iter`` > 0).

    Returns:
        ``(x (B, P), cost (B,), diverged (B,) bool, iterations run)``.
    """
    B, P = x0.shape
    dtype, device = x0.dtype, x0.device
    # Relative decreases below a few rounding errors of the cost are noise.
    rel_tol = max(float(ftol), 16.0 * torch.finfo(dtype).eps)
    x = x0.clone()
    cost = torch.zeros(B, dtype=dtype, device=device)
    g = torch.zeros(B, P, dtype=dtype, device=device)
    H = None   # (B, P, P), or (B, width) packed for a sparse factorisation
    ldt = problem.linear_dtype or dtype
    lam = torch.full((B,), options.lambda_init, dtype=dtype, device=device)
    nu = torch.full((B,), 2.0, dtype=dtype, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    diverged = torch.zeros(B, dtype=torch.bool, device=device)
    stale = torch.ones(B, dtype=torch.bool, device=device)   # needs a linearisation
    plan = None    # how to solve the damped system: decided in the first linearisation
    packed = None  # (slot map, width) where the plan factorises H packed

    def choose_layout(coupling: Optional[Tensor]) -> Optional[Tuple[Tensor, int]]:
        # the structure is known in the first linearisation: from then on H is packed
        # where the plan factorises it so, from the first H on
        nonlocal plan, packed
        plan = None if coupling is None else plan_solve(coupling)
        if plan is not None:
            plan = plan.to(device)
        if isinstance(plan, SparseCholeskyPlan):
            packed = (plan.slot_map(), plan.packed_size)
        return packed

    def absorb(idx: Tensor, c: Tensor, gg: Tensor, hh: Tensor) -> None:
        # take a linearisation of the samples idx: their cost, g and H, and whether it
        # diverged or converged there
        nonlocal cost, g, H
        # A sum is non-finite when any entry is (and is cheaper than checking each
        # of H's P*P entries).
        bad = ~(torch.isfinite(c) & torch.isfinite(gg.sum(1))
                & torch.isfinite(hh.sum(tuple(range(1, hh.dim())))))
        if idx.numel() == B:  # every sample (the first iteration, often later ones)
            cost, g, H = c.clone(), gg.clone(), hh.to(ldt)
        else:
            cost[idx], g[idx], H[idx] = c, gg, hh
        diverged[idx[bad]] = True
        converged = gg.abs().amax(1) <= gtol
        done[idx[bad | converged]] = True
        stale[idx] = False

    # Linearise at the trial point itself (one pass gives its cost, g and H) while most
    # steps are accepted: an accepted step then needs no second pass over the model
    # and the keypoints; a rejected one wastes that linearisation.
    linearize_trials = False
    iterations = 0
    for it in range(max_iter):
        relin = stale & ~done
        if bool(relin.any()):
            idx = torch.nonzero(relin).flatten()
            # damped_step reads H's upper triangle only
            absorb(idx, *problem.linearize(x[idx], idx, upper_only=True,
                                           packed=choose_layout if it == 0 else packed))
        if it == 0 and on_start is not None:   # (every sample was linearised at x0)
            on_start(cost.clone())
        active = torch.nonzero(~done).flatten()
        if active.numel() == 0:
            break
        iterations = it + 1
        everyone = active.numel() == B
        Ha, ga, xa = (H, g, x) if everyone else (H[active], g[active], x[active])
        diag = Ha.index_select(1, plan.diagonal) if packed is not None else Ha.diagonal(
            dim1=-2, dim2=-1)
        # Marquardt scaling; the floor keeps parameters nothing constrains solvable.
        if options.damping == 'levenberg':
            # lambda * mean(diag) * I: directions the data leave free (a bone's twist
            # with one child) get minimum-norm steps instead of huge ones.
            D = diag.mean(1, keepdim=True).expand_as(diag)
        else:
            D = torch.maximum(diag, 1e-9 * diag.amax(1, keepdim=True).clamp_min(1e-30))
        step, info, curvature = damped_step(Ha, ga, (lam[active, None] * D).to(Ha.dtype),
                                            plan)
        factorised = info == 0
        step = torch.where(factorised[:, None], step.to(dtype), torch.zeros_like(ga))
        trial = xa + step
        # (the last iteration's trials need their cost only)
        linearize_trials = linearize_trials and it + 1 < max_iter
        if linearize_trials:
            new_cost, g_trial, H_trial = problem.linearize(trial, active, upper_only=True,
                                                           packed=packed)
        else:
            new_cost = problem.cost(trial, active)
        old_cost = cost[active]
        # A failed factorisation (not positive definite at this damping, e.g. in float32)
        # is a rejected step that predicted a gain: the damping grows and it tries again.
        predicted = torch.where(factorised, -(2.0 * (ga * step).sum(1) + curvature.to(dtype)),
                                torch.full_like(old_cost, float('inf')))
        actual = old_cost - new_cost
        accept = (info == 0) & torch.isfinite(new_cost) & (actual > 0)
        rho = actual / predicted.clamp_min(1e-300)
        # Nielsen's damping update.
        shrink = torch.clamp(1.0 - (2.0 * rho - 1.0) ** 3, min=1.0 / 3.0)
        lam_a, nu_a = lam[active], nu[active]
        lam[active] = torch.where(accept, lam_a * shrink, lam_a * nu_a)
        nu[active] = torch.where(accept, torch.full_like(nu_a, 2.0), nu_a * 2.0)
        x[active] = torch.where(accept[:, None], trial, xa)  # (xa may be x: computed first)
        cost[active] = torch.where(accept, new_cost, old_cost)
        if linearize_trials:
            if bool(accept.any()):
                taken = torch.nonzero(accept).flatten()
                absorb(active[taken], new_cost[taken], g_trial[taken], H_trial[taken])
        else:
            stale[active] = accept
        linearize_trials = bool(accept.float().mean() >= LINEARIZE_TRIALS_MIN_ACCEPTANCE)
        small_step = step.abs().amax(1) <= options.xtol * (xa.abs().amax(1) + options.xtol)
        small_gain = accept & (actual <= rel_tol * old_cost)
        # A decrease the model itself predicts below the precision cannot be resolved:
        # in float32 the cost's rounding noise (~1e-7 relative) would otherwise keep a
        # converged sample accepting and rejecting noise until max_iter.
        unresolvable = ~accept & (predicted <= rel_tol * old_cost)
        stuck = ~accept & (lam[active] > options.lambda_max)
        done[active[small_gain | (accept & small_step) | stuck | unresolvable
                    | (new_cost == 0)]] = True
        if on_iteration is not None:
            on_iteration(iterations, cost)
    return x, cost, diverged, iterations


def _point_coupling(jac, P: int) -> Tensor:
    """(P, P) bool on the CPU: the columns some point of the sparse Jacobian ``jac``
    depends on together (its rotation blocks' columns and the dense columns)."""
    points = jac.points.shape[1]
    touches = torch.zeros(points, P, dtype=torch.float32)
    cols = (jac.rot_col[:, None] + torch.arange(3, device=jac.rot_col.device)).cpu()
    touches[jac.rot_point.cpu()[:, None].expand_as(cols), cols] = 1.0
    touches[:, jac.dense_col.cpu()] = 1.0
    return (touches.T @ touches) > 0


__all__ = ['LM_NAMES', 'LMOptions', 'LeastSquaresProblem', 'levenberg_marquardt',
           'ConstantJacobian', 'add_param_block']
