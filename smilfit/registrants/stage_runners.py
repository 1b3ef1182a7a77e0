"""Stage runners: one function per optimizer family, chosen by the stage's optimizer type.

:meth:`SMILRegistrant._optimise <smilfit.registrants.SMILRegistrant>` builds a
:class:`StageContext` (what a stage optimises and against what) and calls the runner
that :func:`runner_for` picks from ``smilfit.registry.STAGE_RUNNERS``:

- ``'LevenbergMarquardt'`` / ``'LM'``: :func:`run_lm_stage` (batched per-sample
  Levenberg-Marquardt, :mod:`.solver`; a stage fitting shared parameters runs
  :func:`run_group_lm_stage`, per group with the Schur complement);
- ``'LBFGS'``: :func:`run_lbfgs_stage` (batched per-sample L-BFGS,
  :mod:`.batched_lbfgs`; a coupled or ``per_sample=False`` stage falls back to torch's);
- anything else: :func:`run_torch_optimizer_stage` (a ``torch.optim`` class from
  ``OPTIMIZERS`` on the summed loss).

Every runner returns a :class:`StageOutcome`; none touches the registrant's state: the
context hands it the functions it may call (the loss, the hooks), not the registrant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import AbstractSet, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from smilfit.handlers.motion_prior import unwrap_rotations
from smilfit.ops.psd_inverse import psd_inverse
from smilfit.registry import OPTIMIZERS, STAGE_RUNNERS
from .batched_lbfgs import BatchedLBFGS
from .solver import (LM_NAMES, GroupLeastSquaresProblem, GroupSystem, LeastSquaresProblem,
                     LMOptions, SampleSystem, levenberg_marquardt)
from .solver.chain_system import ChainSystem, MotionTerms
from .solver.group_chain_system import GroupChainSystem
from .solver.leverage import point_leverage
from .stages import Stage, optimizer_kwargs

Tensor = torch.Tensor


@dataclass
class StageContext:
    """Everything a stage runner needs, explicitly.

    Attributes:
        body_model: the registrant's body model.
        shared: names of the parameters shared by a group's samples ((G, ...) in
            ``params``).
        per_sample_losses: ``(params, observations, handlers, need_vertices,
            per_group=None, return_output=False)`` -> handler name -> (B,) weighted loss
            (:meth:`SMILRegistrant.per_sample_losses
            <smilfit.registrants.SMILRegistrant.per_sample_losses>`; ``params`` per
            sample).
        counted_per_group: ``handler -> bool``, whether the handler is a prior on shared
            parameters only (counted once per group).
        after_step: ``step -> None``, calls every fitting hook.
        stage: the stage being run.
        params: name -> starting values, (B, ...) per sample or (G, ...) when shared
            (detached).
        observations: the stage's observations (with derived noise scales).
        groups: (B,) long, each sample's group (animal) id.
        handlers: the active handlers (weights of the stage in effect).
        need_vertices: whether any active handler reads vertices.
        coupled: whether samples are coupled (a shared parameter is fitted or a
            handler couples samples).
        per_group: (B,) ``1 / n_group`` applied to priors counted once per group, or
            ``None``.
        skip: (B,) bool, samples the stage leaves where they are (a coarse stage's
            samples that start near the answer), or ``None``; a runner that cannot leave
            them out runs them, and the registrant restores them.
        wants_variance: whether a handler (of this stage or a later one) reads the
            samples' posterior variances (``uses_posterior_variance``).
    """

    body_model: nn.Module
    shared: AbstractSet[str]
    per_sample_losses: Callable[..., Any]
    counted_per_group: Callable[[nn.Module], bool]
    after_step: Callable[[int], None]
    stage: Stage
    params: Dict[str, Tensor]
    observations: Mapping[str, Tensor]
    groups: Tensor
    handlers: List[nn.Module]
    need_vertices: bool
    coupled: bool
    per_group: Optional[Tensor] = None
    skip: Optional[Tensor] = None
    wants_variance: bool = False

    def expand(self, params: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """``params`` with the shared ones (G, ...) expanded to their samples (B, ...)."""
        return {k: (v[self.groups] if k in self.shared else v) for k, v in params.items()}

    def losses(self, params: Mapping[str, Tensor]) -> Tensor:
        """(B,) the stage's summed weighted loss at ``params`` (shared ones (G, ...))."""
        return torch.stack(list(self.per_sample_losses(
            self.expand(params), self.observations, self.handlers, self.need_vertices,
            self.per_group).values())).sum(0)


@dataclass
class StageOutcome:
    """What a runner returns.

    Attributes:
        params: name -> fitted values (detached; same layout as the context's params).
        diverged: (B,) bool, samples whose loss or gradient became non-finite.
        steps: iterations (optimizer steps) run: for a batch of independent units, the
            slowest unit's.
        trace: (B,) losses after every iteration (L-BFGS: every evaluation).
        per_sample: whether every sample was optimised independently.
        start_loss, end_loss: (B,) the stage's loss at the start and at the end, where
            the runner has them anyway (else the registrant evaluates them).
        unit_steps: Levenberg-Marquardt's iterations summed over its units (every sample
            of a per-sample stage, every group of a group stage), each counted while it
            ran: the work done, where ``steps`` is the slowest unit's; None for other
            optimizers.
        variance: name -> (B, *shape) each sample's posterior variance of every fitted
            parameter, the diagonal of the inverse of its ``J^T J`` (the Gauss-Newton
            information of the stage's loss ``sum r^2``, residuals in noise units) at its
            last linearisation; NaN for samples the stage left out or whose ``J^T J`` is
            singular. Only where a handler asks for it (``uses_posterior_variance``) and
            the runner has it (per-sample Levenberg-Marquardt stages; stages over chains
            of frames give each frame's from its own labels alone, without the motion
            terms); else None.
        per_frame_fit: name -> ``(B, *shape)``, beside ``variance``: where each sample's own
            terms put every fitted parameter, one Gauss-Newton step from where the stage
            left it (its optimum for a sample fitted alone, its labels' answer without the
            motion terms for a frame of a chain); NaN where ``variance`` is.
        carried: observations handed to the later stages by their keys, the points'
            leverages of the handlers whose noise scales are studentized
            (:mod:`.solver.leverage`), from the same runners as ``variance``; else None.
    """

    params: Dict[str, Tensor]
    diverged: Tensor
    steps: int
    trace: List[Tensor] = field(default_factory=list)
    per_sample: bool = False
    start_loss: Optional[Tensor] = None
    end_loss: Optional[Tensor] = None
    unit_steps: Optional[int] = None
    variance: Optional[Dict[str, Tensor]] = None
    per_frame_fit: Optional[Dict[str, Tensor]] = None
    carried: Optional[Dict[str, Tensor]] = None


def _free(ctx: StageContext) -> Dict[str, Tensor]:
    """Copies of the parameters; the fitted ones require grad."""
    return {k: v.detach().clone().requires_grad_(k in ctx.stage.fit)
            for k, v in ctx.params.items()}


def run_lm_stage(ctx: StageContext) -> StageOutcome:
    """Levenberg-Marquardt: per sample (every sample alone) when the stage fits no
    shared parameter, else per group (:func:`run_group_lm_stage`)."""
    stage = ctx.stage
    coupling = [h.name for h in ctx.handlers
                if h.couples_samples and h.residual_kind != 'temporal']
    if not stage.per_sample or coupling:
        raise ValueError(
            f'stage {stage.name!r}: Levenberg-Marquardt fits every sample (or every group '
            f'of samples sharing parameters, or chains of frames) alone; it cannot use '
            f'handlers coupling samples otherwise ({coupling}) or per_sample=False: use '
            'LBFGS for this stage')
    motion = [h for h in ctx.handlers if h.residual_kind == 'temporal']
    if motion:
        # (a motion term on parameters the stage does not fit is a constant of it)
        frame_ctx = replace(ctx, handlers=[h for h in ctx.handlers if h not in motion])
        if _links_fitted(ctx, motion):
            if len(motion) > 1:
                raise ValueError(f'stage {stage.name!r}: one motion term per stage, got '
                                 f'{[h.name for h in motion]}')
            if any(name in ctx.shared for name in stage.fit):
                return run_group_lm_stage(frame_ctx, motion[0])
            return run_chain_lm_stage(frame_ctx, motion[0])
        ctx = frame_ctx
    if any(name in ctx.shared for name in stage.fit):
        return run_group_lm_stage(ctx)
    options = LMOptions.from_config(optimizer_kwargs(stage), f'stage {stage.name!r}')
    fixed = ctx.expand({k: v.detach() for k, v in ctx.params.items()})
    problem = _frame_problem(ctx, options, fixed)
    trace: List[Tensor] = []

    def progress(i: int, cost: Tensor) -> None:
        trace.append(cost.detach().clone())
        ctx.after_step(i)
    with torch.no_grad():
        x0 = problem.initial_x()
        # The stage's starting loss (for its history record) is the cost the first
        # linearisation computes at x0 (sum r^2 is the loss): no pass of its own
        # (stages have n_iter >= 1, so there is a first linearisation).
        starts: List[Tensor] = []
        system = SampleSystem(problem, x0, options.damping, skip=ctx.skip)
        diverged, n_steps, unit_steps = levenberg_marquardt(
            system, stage.n_iter, options, ftol=stage.ftol,
            gtol=stage.gtol, on_iteration=progress, on_start=starts.append)
        # (skipped samples have no cost of their own: the registrant evaluates both)
        start, end = (starts[0], system.cost) if ctx.skip is None else (None, None)
        variance, own, carried = _frame_statistics(ctx, problem, system)
    params = {k: v.detach().clone() for k, v in ctx.params.items()}
    params.update(problem.unflatten(system.x))
    return StageOutcome(params, diverged, n_steps, trace, per_sample=True,
                        start_loss=start, end_loss=end, unit_steps=int(unit_steps.sum()),
                        variance=variance, per_frame_fit=own, carried=carried)


def _links_fitted(ctx: StageContext, motion: List[nn.Module]) -> bool:
    """Whether a motion term links frames in a parameter the stage fits."""
    per_frame = [n for n in ctx.stage.fit if n not in ctx.shared]
    for h in motion:
        prev = h.chains(ctx.observations)
        if prev is None or not bool((prev >= 0).any()):
            continue
        if any(p in per_frame and h.inverse_scales(ctx.observations, p) is not None
                 for p in h.params):
            return True
    return False


def _motion_terms(handler: nn.Module, observations: Mapping[str, Tensor],
                  fixed: Dict[str, Tensor], fitted: List[str], offsets: Mapping[str, int],
                  columns: int) -> MotionTerms:
    """A motion handler's terms on the columns of the per-frame parameters ``fitted``
    (``offsets`` their first columns, ``columns`` in all; rotations in ``fixed`` already
    unwrapped along the chains)."""
    B = next(iter(fixed.values())).shape[0]
    like = fixed[fitted[0]]
    scale = like.new_zeros(B, columns)
    for name in fitted:
        inverse = handler.inverse_scales(observations, name)
        if inverse is not None:
            at = offsets[name]
            scale[:, at:at + inverse[0].numel()] = inverse.reshape(B, -1) \
                * math.sqrt(handler.weight)
    constant = handler.weight * sum(
        ((r * r).sum(1) for name, r in handler.residuals(fixed, observations).items()
         if name not in fitted), like.new_zeros(B))
    return MotionTerms(handler.chains(observations), handler.stencil, scale, constant)


def _unwrapped(handler: nn.Module, fixed: Dict[str, Tensor], fitted: List[str],
               observations: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """``fixed`` with the fitted rotations unwrapped along the chains (a turn past half a
    revolution makes no jump of 2 pi between two frames)."""
    prev = handler.chains(observations)
    out = dict(fixed)
    for name in fitted:
        if handler.is_rotation(name, fixed[name]):
            out[name] = unwrap_rotations(fixed[name], prev.to(fixed[name].device))
    return out


def run_chain_lm_stage(ctx: StageContext, handler: nn.Module) -> StageOutcome:
    """Levenberg-Marquardt over chains of consecutive frames coupled by the motion term
    ``handler`` (:mod:`.solver.chain_system`); ``ctx.handlers`` are the per-frame ones."""
    stage = ctx.stage
    options = LMOptions.from_config(optimizer_kwargs(stage), f'stage {stage.name!r}')
    fixed = _unwrapped(handler, ctx.expand({k: v.detach() for k, v in ctx.params.items()}),
                       list(stage.fit), ctx.observations)
    problem = _frame_problem(ctx, options, fixed, plan_solver=False)
    x0 = problem.initial_x()
    terms = _motion_terms(handler, ctx.observations, fixed, list(stage.fit), problem.offsets,
                          x0.shape[1])
    trace: List[Tensor] = []

    def progress(i: int, cost: Tensor) -> None:
        trace.append(cost.detach().clone())
        ctx.after_step(i)
    with torch.no_grad():
        system = ChainSystem(problem, terms, x0, options.damping, skip=ctx.skip,
                             noise_tol=options.noise_tol)
        diverged, n_steps, unit_steps = levenberg_marquardt(
            system, stage.n_iter, options, ftol=stage.ftol, gtol=stage.gtol,
            on_iteration=progress)
        # each frame from its labels alone: what the motion scale is measured on
        variance, own, carried = _frame_statistics(ctx, problem, system)
    params = {k: v.detach().clone() for k, v in ctx.params.items()}
    params.update(problem.unflatten(system.x))
    return StageOutcome(params, diverged[system.chain], n_steps, trace, per_sample=False,
                        unit_steps=int(unit_steps.sum()), variance=variance,
                        per_frame_fit=own, carried=carried)


def _frame_problem(ctx: StageContext, options: LMOptions, fixed: Dict[str, Tensor],
                   plan_solver: bool = True) -> LeastSquaresProblem:
    """The stage's per-frame least-squares problem over ``ctx.handlers`` from ``fixed``
    (``plan_solver=False``: dense ``H``, as a chain's system wants)."""
    def cost_fn(params: Dict[str, Tensor], observations: Dict[str, Tensor],
                return_output: bool = False):
        losses, output = ctx.per_sample_losses(params, observations, ctx.handlers,
                                               ctx.need_vertices, return_output=True)
        cost = torch.stack(list(losses.values())).sum(0)
        return (cost, output) if return_output else cost
    linear = None if options.linear_dtype == 'auto' else getattr(torch, options.linear_dtype)
    return LeastSquaresProblem(ctx.body_model, ctx.handlers, ctx.observations, fixed,
                               ctx.stage.fit, cost_fn, linear_dtype=linear,
                               cost_returns_output=True, plan_solver=plan_solver)


#: Samples whose covariance is computed at once (a (n, P, P) dense copy each).
COVARIANCE_CHUNK = 1024


def _posterior_variance(problem: LeastSquaresProblem, system, skip: Optional[Tensor],
                        studentizing: Sequence[nn.Module] = ()
                        ) -> Tuple[Optional[Dict[str, Tensor]], Optional[Dict[str, Tensor]],
                                   Dict[str, Tensor]]:
    """Every sample's posterior variance per fitted parameter and where its own terms put
    it (see :class:`StageOutcome`), from ``system.H`` and ``system.g``, its own normal
    equations at ``system.x_linearized`` (of a :class:`~.solver.SampleSystem`, or a
    :class:`~.solver.chain_system.ChainSystem`'s frames from their labels alone, without
    the motion terms); ``(None, None, {})`` before any linearisation. Third, the handlers
    ``studentizing``'s points' leverages (:mod:`.solver.leverage`) by their
    ``leverage_key``: 0 where the samples were left out or ``H`` is not positive
    semi-definite. ``H`` singular along what the labels leave free is inverted with the
    ridge its precision allows (:func:`~smilfit.ops.psd_inverse.psd_inverse`); a parameter
    with no effect and no prior has no variance (NaN), as a sample whose ``H`` is not
    positive semi-definite."""
    if system.H is None or problem.solver is None:
        return None, None, {}
    variances, fits, leverages = [], [], []
    for start in range(0, system.H.shape[0], COVARIANCE_CHUNK):
        rows = slice(start, start + COVARIANCE_CHUNK)
        # the solvers keep H's upper triangle only: the symmetric matrix from it
        upper = problem.solver.dense(system.H[rows]).to(system.dtype).triu()
        H = upper + upper.triu(1).mT
        # (singular along what the labels leave free: there the variance is as large as
        # H's precision allows, not undefined, whatever its rounding)
        covariance, step, ridge = psd_inverse(H, system.g[rows].to(H.dtype))
        failed = torch.isnan(ridge)         # not positive semi-definite: nothing known
        unknown = failed[:, None] | (H.diagonal(dim1=-2, dim2=-1) == 0)
        variance = covariance.diagonal(dim1=-2, dim2=-1)
        fit = system.x_linearized[rows] - step
        variances.append(variance.to(system.dtype).masked_fill(unknown, float('nan')))
        fits.append(fit.to(system.dtype).masked_fill(unknown, float('nan')))
        covariance = covariance.nan_to_num(0.0)
        if studentizing:
            idx = torch.arange(start, start + covariance.shape[0], device=covariance.device)
            lev = point_leverage(problem, system.x_linearized[rows], idx, covariance,
                                 studentizing)
            leverages.append({k: v.masked_fill(failed[:, None, None], 0.0)
                              for k, v in lev.items()})
    variance, fit = torch.cat(variances), torch.cat(fits)
    leverage = {h.leverage_key: torch.cat([chunk[h.name] for chunk in leverages])
                for h in studentizing if leverages and h.name in leverages[0]}
    if skip is not None:
        left_out = skip.to(variance.device)[:, None]
        variance = variance.masked_fill(left_out, float('nan'))
        fit = fit.masked_fill(left_out, float('nan'))
        leverage = {k: v.masked_fill(left_out[:, :, None], 0.0) for k, v in leverage.items()}
    return problem.unflatten(variance), problem.unflatten(fit), leverage


def _frame_statistics(ctx: StageContext, problem: LeastSquaresProblem, system
                      ) -> Tuple[Optional[Dict[str, Tensor]], Optional[Dict[str, Tensor]],
                                 Optional[Dict[str, Tensor]]]:
    """What a stage of frames hands on: the posterior variances and per-frame fits where a
    handler uses them (``ctx.wants_variance``), and the leverages of the points of the
    handlers whose noise scales are studentized (``leverage_key``), with the scales they
    were fitted with (``previous_scale_key``)."""
    studentizing = [h for h in ctx.handlers if getattr(h, 'leverage_key', None)]
    if not (ctx.wants_variance or studentizing):
        return None, None, None
    variance, own, leverage = _posterior_variance(problem, system, ctx.skip, studentizing)
    if not ctx.wants_variance:
        variance, own = None, None
    # the noise scales the leverages go with: which views weighed alike in this stage
    leverage.update({h.previous_scale_key: ctx.observations[h.scale_key]
                     for h in studentizing if h.leverage_key in leverage
                     and h.scale_key in ctx.observations})
    return variance, own, leverage or None


def run_group_lm_stage(ctx: StageContext, motion: Optional[nn.Module] = None
                       ) -> StageOutcome:
    """Levenberg-Marquardt over every group's frames and shared parameters at once
    (:mod:`.solver.group_system`: Schur complement over the frames; with a motion term
    ``motion`` coupling its frames in time, over their chains:
    :mod:`.solver.group_chain_system`); priors on shared parameters only
    (:meth:`~.registrant.SMILRegistrant.counted_per_group`) count once per group, as in
    the stage's loss."""
    stage, shared = ctx.stage, ctx.shared
    options = LMOptions.from_config(optimizer_kwargs(stage), f'stage {stage.name!r}')
    params = {k: v.detach() for k, v in ctx.params.items()}
    fixed = ctx.expand(params)
    frame_names = [n for n in stage.fit if n not in shared]
    if motion is not None:
        fixed = _unwrapped(motion, fixed, frame_names, ctx.observations)
    group_handlers = [h for h in ctx.handlers if ctx.counted_per_group(h)]
    sample_handlers = [h for h in ctx.handlers if not ctx.counted_per_group(h)]

    def cost_fn(p: Dict[str, Tensor], observations: Dict[str, Tensor]) -> Tensor:
        return torch.stack(list(ctx.per_sample_losses(
            p, observations, sample_handlers, ctx.need_vertices).values())).sum(0)
    linear = None if options.linear_dtype == 'auto' else getattr(torch, options.linear_dtype)
    problem = GroupLeastSquaresProblem(
        ctx.body_model, sample_handlers, group_handlers, ctx.observations, fixed,
        frame_names, {n: params[n] for n in stage.fit if n in shared}, ctx.groups, cost_fn,
        linear_dtype=linear)
    trace: List[Tensor] = []

    def progress(i: int, cost: Tensor) -> None:
        trace.append(cost.detach().clone())
        ctx.after_step(i)
    with torch.no_grad():
        system = (GroupSystem(problem, options.damping) if motion is None else
                  GroupChainSystem(problem, _motion_terms(
                      motion, ctx.observations, fixed, frame_names,
                      problem.per_frame.offsets, problem.Px),
                      options.damping))
        diverged, n_steps, unit_steps = levenberg_marquardt(
            system, stage.n_iter, options, ftol=stage.ftol, gtol=stage.gtol,
            on_iteration=progress)
    out = {k: v.clone() for k, v in params.items()}
    out.update(problem.unflatten(system.x, system.y))
    return StageOutcome(out, diverged[ctx.groups], n_steps, trace, per_sample=False,
                        unit_steps=int(unit_steps.sum()))


def run_lbfgs_stage(ctx: StageContext) -> StageOutcome:
    """Batched per-sample L-BFGS; torch's L-BFGS on the summed loss when the samples are
    coupled or the stage says ``per_sample=False``."""
    stage = ctx.stage
    if not stage.per_sample or ctx.coupled:
        return run_torch_optimizer_stage(ctx)
    kwargs = optimizer_kwargs(stage)
    kwargs.setdefault('line_search_fn', 'strong_wolfe')
    # A non-finite trial point counts as a failed step and the line search
    # shrinks it, instead of freezing the sample (e.g. exp of a large log-scale).
    kwargs.setdefault('non_finite', 'backtrack')
    # One step with the whole budget: every step() restarts all samples (as
    # torch's LBFGS does), so several steps would keep moving samples that had
    # converged while others had not, and a sample's result would depend on its
    # batch. In one step each sample stops for good when it converges.
    max_iter = int(kwargs.pop('max_iter', 20))
    max_eval = kwargs.pop('max_eval', None)
    max_eval = max_iter * 5 // 4 if max_eval is None else int(max_eval)
    free = _free(ctx)
    variables = [free[k] for k in stage.fit]
    optimizer = BatchedLBFGS(variables, tolerance_grad=stage.gtol,
                             tolerance_change=stage.ftol, max_iter=max_iter * stage.n_iter,
                             max_eval=max_eval * stage.n_iter, **kwargs)
    trace: List[Tensor] = []

    def closure() -> Tensor:
        optimizer.zero_grad()
        value = ctx.losses(free)
        value.sum().backward()
        trace.append(value.detach())
        return value.detach()
    optimizer.step(closure)
    ctx.after_step(stage.n_iter)
    return StageOutcome({k: v.detach() for k, v in free.items()},
                        optimizer.diverged.clone(), stage.n_iter, trace, per_sample=True)


def run_torch_optimizer_stage(ctx: StageContext) -> StageOutcome:
    """A ``torch.optim`` optimizer (``OPTIMIZERS``) on the batch's summed loss; the
    stage stops when it changes by less than ``ftol`` relative, and restores the last
    finite point (every sample flagged) when the loss or a gradient becomes
    non-finite."""
    stage = ctx.stage
    kind = stage.optimizer['type']
    free = _free(ctx)
    variables = [free[k] for k in stage.fit]
    optimizer = OPTIMIZERS.build(dict(type=kind, params=variables, **optimizer_kwargs(stage)))
    diverged = torch.zeros(ctx.groups.shape[0], dtype=torch.bool, device=ctx.groups.device)
    trace: List[Tensor] = []
    previous, n_steps = None, 0
    for n_steps in range(1, stage.n_iter + 1):
        def closure() -> Tensor:
            optimizer.zero_grad()
            per_sample = ctx.losses(free)
            trace.append(per_sample.detach())
            value = per_sample.sum()
            value.backward()
            return value
        snapshot = [v.detach().clone() for v in variables]
        value = optimizer.step(closure) if kind == 'LBFGS' else (closure(), optimizer.step())[0]
        ctx.after_step(n_steps)
        if not torch.isfinite(value) or any(
                not torch.isfinite(v.grad).all() for v in variables if v.grad is not None):
            with torch.no_grad():  # restore the last finite point
                for v, old in zip(variables, snapshot):
                    v.copy_(old)
            diverged[:] = True
            break
        current = float(value.detach())
        if previous is not None and abs(previous - current) <= stage.ftol * max(
                abs(previous), abs(current), 1.0):
            break
        previous = current
    return StageOutcome({k: v.detach() for k, v in free.items()}, diverged, n_steps, trace)


# Optimizer ``type`` -> runner (smilfit.registry.STAGE_RUNNERS); types not registered
# run run_torch_optimizer_stage.
for _name in LM_NAMES:
    STAGE_RUNNERS.register_module(name=_name, module=run_lm_stage, force=True)
STAGE_RUNNERS.register_module(name='LBFGS', module=run_lbfgs_stage, force=True)


def runner_for(stage: Stage) -> Callable[[StageContext], StageOutcome]:
    """The runner of ``stage``'s optimizer type (looked up by name only: never an
    import of a dotted name)."""
    return STAGE_RUNNERS.module_dict.get(stage.optimizer['type'], run_torch_optimizer_stage)


def merge_rounds(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One history record for a stage run in several rounds: steps (and unit steps, where
    every round counted them) summed, losses of the first round's start and the last
    round's end, traces concatenated (each round's losses in its own noise units)."""
    if len(records) == 1:
        return records[0]
    merged = dict(records[-1])
    merged.pop('unit_steps', None)
    if all('unit_steps' in r for r in records):
        merged['unit_steps'] = sum(r['unit_steps'] for r in records)
    merged.update(steps=sum(r['steps'] for r in records),
                  mean_loss_start=records[0]['mean_loss_start'], rounds=len(records),
                  loss_trace=[v for r in records for v in r['loss_trace']])
    return merged


def mean_trace(trace: List[Tensor], diverged: Tensor) -> List[float]:
    """Mean loss of the samples that did not diverge after every iteration, as floats
    (one host transfer per stage)."""
    if not trace:
        return []
    stacked = torch.stack([t.reshape(-1) for t in trace])            # (iterations, B)
    if stacked.shape[1] != diverged.shape[0]:                        # shared-loss stages
        return stacked.mean(1).tolist()
    keep = (~diverged).to(stacked.dtype)
    mean = (torch.nan_to_num(stacked) * keep).sum(1) / keep.sum().clamp_min(1)
    return mean.tolist()


__all__ = ['StageContext', 'StageOutcome', 'STAGE_RUNNERS', 'runner_for', 'run_lm_stage',
           'run_group_lm_stage', 'run_chain_lm_stage',
           'run_lbfgs_stage', 'run_torch_optimizer_stage', 'merge_rounds', 'mean_trace']
