"""The handlers' residual blocks of a stage and their Jacobians: point residuals
(differentiated w.r.t. their points) and parameter residuals (differentiated w.r.t. the
fitted parameters they read), weighted by the handlers' weights.

The point handlers' residual Jacobians w.r.t. their points come in closed form where
the handler gives one (:meth:`~smilfit.handlers.base.BaseHandler.point_residuals_and_jacobian`,
e.g. 2D keypoints through the camera model), else from three forward-mode directional
derivatives (each residual depends on one point), so any projection is differentiated
exactly without hand-written derivatives; parameter handlers are differentiated by
reverse mode over their own parameters, once per stage for affine residuals (linear
priors, :class:`~.normal_equations.ConstantJacobian`).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Sequence, Tuple

import torch
from torch import nn

from .normal_equations import ConstantJacobian, DiagonalJacobian

Tensor = torch.Tensor

#: Residual rows of a constant Jacobian differentiated per backward pass (the sample is
#: copied once per row).
JACOBIAN_ROWS_PER_PASS = 256


def point_terms(handler: nn.Module, pts: Tensor, obs: Mapping[str, Tensor],
                params: Mapping[str, Tensor]) -> Tuple[Tensor, Tensor]:
    """Weighted residuals (n, G, M, D) of a point handler at its points ``pts`` (n, M, 3)
    and their (n, G, M, D, 3) point derivatives."""
    scale = math.sqrt(handler.weight)
    closed_form = handler.point_residuals_and_jacobian(pts, obs, params)
    if closed_form is not None:
        r, A = closed_form
        return r * scale, A * scale

    def f(p):
        return handler.point_residuals(p, obs, params)
    basis = torch.eye(3, dtype=pts.dtype, device=pts.device)[:, None, None, :].expand(
        3, pts.shape[0], pts.shape[1], 3)
    r, tangents = _jvp3(f, pts, basis)
    return r * scale, tangents * scale


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


class ParamResidualJacobians:
    """Parameter residuals of handlers and their Jacobians on a stage's fitted parameters.

    Args:
        fitted: the fitted parameters' names.
        offsets: name -> its first column in the flattened parameter vector.
    """

    def __init__(self, fitted: Sequence[str], offsets: Mapping[str, int]) -> None:
        self.fitted = list(fitted)
        self.offsets = dict(offsets)
        # Jacobians of affine parameter residuals (linear priors), computed once:
        # (handler, parameters, weight) -> ConstantJacobian.
        self._constant: Dict[tuple, ConstantJacobian] = {}

    def terms(self, handler: nn.Module, params: Mapping[str, Tensor],
              obs: Mapping[str, Tensor], n: int):
        """Weighted residuals (n, R), their Jacobian on the handler's fitted parameters
        and those parameters' columns (P_h,) (``None`` and ``None`` when it has none).

        The Jacobian is (n, R, P_h), or a :class:`ConstantJacobian` where the residuals are
        affine with the same coefficients for every sample (computed once per stage), or a
        :class:`DiagonalJacobian` where the handler gives its diagonal
        (``param_residual_diagonal``: residual i reads component i only)."""
        scale = math.sqrt(handler.weight)
        names = [name for name in handler.residual_params if name in self.fitted]
        r = handler.param_residuals(params, obs) * scale
        if not names:
            return r, None, None
        affine = bool(handler.affine_param_residuals)
        key = (handler.name, tuple(names), float(handler.weight))
        cached = self._constant.get(key) if affine else None
        if cached is not None:
            return r, cached, cached.cols
        if affine:
            constant = self.constant_jacobian(handler, params, obs, names, scale, n)
            self._constant[key] = constant
            return r, constant, constant.cols
        diagonal = getattr(handler, 'param_residual_diagonal', None)
        if diagonal is not None and len(names) == 1:
            # residual i reads component i of the handler's one parameter only
            value = params[names[0]]
            start = self.offsets[names[0]]
            cols = torch.arange(start, start + math.prod(value.shape[1:]), device=value.device)
            return r, DiagonalJacobian(diagonal(params, obs) * scale, cols), cols
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

    def constant_jacobian(self, handler, params, obs, names: Sequence[str], scale: float,
                           n: int) -> ConstantJacobian:
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
            for start in range(0, R, JACOBIAN_ROWS_PER_PASS):
                k = min(JACOBIAN_ROWS_PER_PASS, R - start)
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




__all__ = ['point_terms', 'ParamResidualJacobians', 'JACOBIAN_ROWS_PER_PASS']
