"""SMILRegistrant: stage-wise optimisation of body-model parameters against observations."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from smilfit.body_models import BodyModelOutput, SMILModel
from smilfit.body_models.parameters import MODEL_INPUTS as _MODEL_INPUTS
from smilfit.body_models.parameters import SHAREABLE_PARAMS
from smilfit.handlers.base import per_frame_key, variance_key
from smilfit.registry import BODY_MODELS, HANDLERS, REGISTRANTS
from smilfit.registry.build import build_module
from .hooks import FittingHook, build_hooks
from .marker_placement import check_marker_stages, place_markers
from .unmapped_placement import place_unmapped
from .setup_checks import warn_if_shape_cannot_move
from .initialization import global_pose_from_points, observed_points, place_on_points
from .multi_start import best_start, check_multi_start
from .stage_runners import StageContext, mean_trace, merge_rounds, runner_for
from .stages import Stage, parse_stages, stage_weights

Tensor = torch.Tensor


class FittingDivergedError(RuntimeError):
    """Every sample of a batch diverged (non-finite loss or gradient)."""


@dataclass
class FitResult:
    """What :meth:`SMILRegistrant.fit` returns (tensors detached, per sample).

    Attributes:
        params: name -> (B, ...) fitted parameters (shared ones expanded per sample).
        output: the body model evaluated at ``params``.
        losses: handler name -> (B,) weighted loss at the end of the last stage.
        total_loss: (B,) sum of ``losses``.
        diverged: (B,) samples whose loss or gradient became non-finite; they keep
            their last finite parameters.
        history: per stage: name, iterations (``steps``: the slowest sample's;
            ``unit_steps``, Levenberg-Marquardt only: summed over the samples or the
            groups), mean loss before and after.
        exchanged: (B, C) bool, the instances fitted with their left and right labels
            exchanged (the keypoint handler's ``exchange_left_right``), or None.
    """

    params: Dict[str, Tensor]
    output: BodyModelOutput
    losses: Dict[str, Tensor]
    total_loss: Tensor
    diverged: Tensor
    history: List[Dict[str, Any]] = field(default_factory=list)
    exchanged: Optional[Tensor] = None


@REGISTRANTS.register_module()
class SMILRegistrant(nn.Module):
    """Fits a body model to a batch of observations in config-defined stages.

    Args:
        body_model: a :class:`SMILModel` or its config (``BODY_MODELS``).
        handlers: handler configs (``HANDLERS``), each with a unique ``name``.
        stages: stage configs, see :mod:`smilfit.registrants.stages`.
        init: how to initialise ``global_orient``/``transl``: ``'triangulation'``
            (align the rest pose to 3D points triangulated from the 2D keypoints, or to
            given 3D keypoints), ``'keypoints_3d'`` (3D keypoints only) or ``'zeros'``.
        shared: parameter name -> shared across the samples of a group (e.g.
            ``dict(betas=True)`` for one shape per animal): such parameters have one
            row per group (``groups`` in :meth:`fit`). Stages that fit a shared
            parameter optimise the summed loss (samples of a group are coupled).
        hooks: :class:`FittingHook` objects or configs (progress bars, loss history).
        return_vertices: evaluate vertices for the result.
        multi_start: fit every sample from several orientations and keep the best, for
            views that cannot be triangulated (one camera: front/back and mirror
            ambiguities). ``dict(num_headings=8, elevation_deg=0.0, body_extent=None,
            stages=1, score=None)``: the rest pose stands upright in front of the first
            view's camera (:func:`~smilfit.body_models.quadruped.camera_facing_orientations`:
            model ``+x`` forward, ``+z`` up) under ``num_headings`` headings, at the depth
            where ``body_extent`` (world units; default: the rest pose's own size) spans
            the keypoints; the first ``stages`` stages run on every hypothesis; the one
            with the lowest ``score`` handler loss (default: the keypoint handler; a
            hypothesis with a 2D keypoint behind the camera never wins) goes on through
            the remaining stages. Not with shared parameters or ``init_params``.
    """

    def __init__(self, body_model: Union[SMILModel, Mapping[str, Any]],
                 handlers: Sequence[Mapping[str, Any]], stages: Sequence[Mapping[str, Any]],
                 init: str = 'triangulation', shared: Optional[Mapping[str, bool]] = None,
                 hooks: Sequence[Union[FittingHook, Mapping[str, Any]]] = (),
                 return_vertices: bool = False,
                 multi_start: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        self.body_model = build_module(BODY_MODELS, body_model, 'body model')
        built = [build_module(HANDLERS, h, 'handler') for h in handlers]
        names = [h.name for h in built]
        if len(set(names)) != len(names):
            raise ValueError(f'handler names must be unique, got {names}')
        self.handlers = nn.ModuleDict({h.name: h for h in built})
        self.base_weights = {h.name: float(h.weight) for h in built}
        self.stages: List[Stage] = parse_stages(stages, names)
        if init not in ('triangulation', 'keypoints_3d', 'zeros'):
            raise ValueError(f"init must be 'triangulation', 'keypoints_3d' or 'zeros', "
                             f'got {init!r}')
        self.init = init
        shared = dict(shared or {})
        unknown = sorted(set(shared) - set(SHAREABLE_PARAMS))
        if unknown:
            raise ValueError(f'shared names parameter(s) {unknown} that cannot be shared; '
                             f'shareable: {list(SHAREABLE_PARAMS)} (pose and translation '
                             'are always per frame)')
        self.shared = {k for k, v in shared.items() if v}
        self.hooks = build_hooks(hooks)
        self.return_vertices = bool(return_vertices)
        self.multi_start = check_multi_start(multi_start, names, len(self.stages),
                                             sorted(self.shared))
        check_marker_stages(self.stages, sorted(self.shared))
        self._markers_placed: set = set()   # stages whose markers are placed (once)
        self._placed = False   # the labels the lookup leaves out are placed (once)
        self._data_info: Optional[Dict[str, Any]] = None

    # ------------------------------------------------------------------ set-up
    def setup(self, data_info: Mapping[str, Any]) -> None:
        """Resolve every handler's keypoints by name; call once per dataset.

        Args:
            data_info: ``keypoint_names`` of the observations, optional
                ``joint_lookup`` (model keypoint -> data keypoint name).
        """
        self._data_info = dict(data_info)
        for handler in self.handlers.values():
            handler.setup(self.body_model, self._data_info)
        warn_if_shape_cannot_move(self)

    @property
    def data_info(self) -> Optional[Dict[str, Any]]:
        """What :meth:`setup` was given (``None`` before it)."""
        return self._data_info

    def param_shapes(self, num_keypoints: Optional[int] = None) -> Dict[str, tuple]:
        """Per-sample shape of every fittable parameter."""
        m = self.body_model
        J = m.num_joints
        return dict(global_orient=(3,), body_pose=(J - 1, 3), betas=(m.num_betas,),
                    transl=(3,), log_scale=(J, 3), bone_trans=(J, 3),
                    keypoint_offsets=(len(m.keypoint_names) if num_keypoints is None
                                      else num_keypoints, 3),
                    vertex_offsets=(m.num_vertices, 3), global_log_scale=(1,))

    # ----------------------------------------------------------- parameters
    def initial_params(self, observations: Mapping[str, Tensor], batch: int, groups: Tensor,
                       init_params: Optional[Mapping[str, Tensor]] = None) -> Dict[str, Tensor]:
        """Zero parameters, then the global pose from 3D points (unless ``init_params``
        gives every parameter it would set: a network's start, or a choice between starts
        made beforehand), then ``init_params``."""
        m = self.body_model
        num_groups = int(groups.max()) + 1 if batch else 0
        params = {}
        # Per-vertex offsets (V x 3 per sample) exist only when a stage fits them or
        # they are given: otherwise they would cost memory and the factored skinning.
        use_offsets = (any('vertex_offsets' in s.fit for s in self.stages)
                       or 'vertex_offsets' in (init_params or {}))
        for name, shape in self.param_shapes().items():
            if name == 'vertex_offsets' and not use_offsets:
                continue
            rows = num_groups if name in self.shared else batch
            params[name] = torch.zeros((rows,) + shape, dtype=m.dtype, device=m.device)
        if self.init != 'zeros' and not set(self._global_pose_params()) <= set(
                init_params or {}):
            self._init_global_pose(params, observations, batch, groups)
        for name, value in (init_params or {}).items():
            if name not in params:
                raise KeyError(f'init_params has unknown parameter {name!r}; '
                               f'allowed: {list(params)}')
            value = torch.as_tensor(value, dtype=m.dtype, device=m.device)
            if value.shape != params[name].shape:
                raise ValueError(f'init_params[{name!r}]: expected shape '
                                 f'{tuple(params[name].shape)}, got {tuple(value.shape)}')
            params[name] = value.clone()
        return params

    def keypoint_handler(self) -> Optional[nn.Module]:
        """The first handler that matches model points to data keypoints by name."""
        for handler in self.handlers.values():
            if getattr(handler, 'data_index', None) is not None:
                return handler
        return None

    def _global_pose_params(self) -> Tuple[str, ...]:
        """The parameters :meth:`_init_global_pose` sets."""
        with_scale = any('global_log_scale' in s.fit for s in self.stages)
        return ('global_orient', 'transl') + (('global_log_scale',) if with_scale else ())

    def _init_global_pose(self, params: Dict[str, Tensor], observations: Mapping[str, Tensor],
                          batch: int, groups: Tensor) -> None:
        handler = self.keypoint_handler()
        if handler is None:
            return
        points = observed_points(observations, triangulate=self.init == 'triangulation')
        if points is None:
            return
        observed = points.index_select(1, handler.data_index.to(points.device))
        with torch.no_grad():
            rest = self.body_model(return_vertices=False)
            pool = rest.keypoints if handler.source == 'keypoints' else rest.joints
            rest_points = pool.index_select(1, handler.model_index).expand(batch, -1, -1)
            root = rest.joints_kin[:, self.body_model.levels.root].expand(batch, -1)
            # A stage fitting the global scale starts from Umeyama's (data in other units).
            with_scale = 'global_log_scale' in self._global_pose_params()
            aligned = global_pose_from_points(rest_points, root, observed,
                                              with_scale=with_scale)
        found = torch.isfinite(observed).all(-1).sum(-1) >= 3
        params['global_orient'][found] = aligned[0][found]
        params['transl'][found] = aligned[1][found]
        if with_scale:
            log_scale = aligned[2]
            if 'global_log_scale' in self.shared:  # one per group: the median of its frames
                for g in range(params['global_log_scale'].shape[0]):
                    rows = found & (groups == g)
                    if bool(rows.any()):
                        params['global_log_scale'][g] = log_scale[rows].median(0).values
            else:
                params['global_log_scale'][found] = log_scale[found]

    def place_on_points(self, params: Mapping[str, Tensor], points: Tensor,
                        groups: Tensor) -> Dict[str, Tensor]:
        """``params`` (shared ones per group) with the global pose that best aligns the
        model, posed by its other parameters (body pose, the animal's skeleton, keypoint
        offsets), to ``points`` (B, K, 3) in the data's keypoint order (NaN where
        missing): :func:`~.initialization.place_on_points` with the keypoint handler,
        fitting the scale where a stage fits ``global_log_scale`` per sample (else it is
        kept). Carries a pose predicted for another skeleton (a network's template) onto
        the animal's. Unchanged where no handler matches keypoints by name."""
        handler = self.keypoint_handler()
        if handler is None:
            return dict(params)
        with_scale = ('global_log_scale' in self._global_pose_params()
                      and 'global_log_scale' not in self.shared)
        placed = place_on_points(self.body_model, handler,
                                 self._expand(params, self.shared, groups), points,
                                 with_scale)
        return dict(params, **placed)

    @staticmethod
    def _expand(params: Mapping[str, Tensor], shared: set, groups: Tensor) -> Dict[str, Tensor]:
        return {k: (v[groups] if k in shared else v) for k, v in params.items()}

    # ---------------------------------------------------------------- losses
    def per_sample_losses(self, params: Mapping[str, Tensor],
                          observations: Mapping[str, Tensor],
                          handlers: Sequence[nn.Module],
                          need_vertices: bool,
                          per_group: Optional[Tensor] = None,
                          return_output: bool = False):
        """Handler name -> (B,) weighted loss at ``params`` (already expanded per sample).

        ``per_group`` (B,), ``1 / (samples in the sample's group)``, spreads the priors
        on shared parameters (:meth:`counted_per_group`) over their group's samples, so
        each counts once per group (animal) in the summed loss. With ``return_output``
        the body model's output is returned too: ``(losses, output)``.
        """
        model_params = {k: params[k] for k in _MODEL_INPUTS if k in params}
        output = self.body_model(**model_params, return_vertices=need_vertices)
        losses = {h.name: h(output, observations, params) for h in handlers}
        if per_group is not None:
            for h in handlers:
                if self.counted_per_group(h):
                    losses[h.name] = losses[h.name] * per_group.to(losses[h.name])
        return (losses, output) if return_output else losses

    def counted_per_group(self, handler: nn.Module) -> bool:
        """Whether ``handler`` is a prior on shared parameters only (its
        ``residual_params`` all in :attr:`shared`): its value is the same for every
        sample of a group and counts once per group, not once per sample, so its weight
        against the data falls as an animal's frames (the evidence) grow."""
        names = tuple(getattr(handler, 'residual_params', ()) or ())
        return bool(names) and all(n in self.shared for n in names)

    @staticmethod
    def _per_group(groups: Tensor, dtype: torch.dtype) -> Tensor:
        """(B,) one over the number of samples in each sample's group."""
        counts = torch.bincount(groups)
        return 1.0 / counts[groups].to(dtype)

    def _stage_observations(self, params: Mapping[str, Tensor], obs: Mapping[str, Tensor],
                            groups: Optional[Tensor], handlers: Sequence[nn.Module],
                            animals: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """``obs`` plus what the handlers derive from the fit at the stage's start (e.g.
        noise scales from the residuals), pooled over each of ``groups`` (an animal's
        frames) when given, per sample when ``None``; handlers that pool per animal in
        every stage (``pools_per_animal``, e.g. per-keypoint noise scales over the
        animal's frames) get ``animals`` whatever the stage fits."""
        needing = [h for h in handlers if getattr(h, 'needs_stage_observations', False)]
        if not needing:
            return dict(obs)
        out = dict(obs)
        with torch.no_grad():
            output = self.body_model(**{k: params[k] for k in _MODEL_INPUTS if k in params},
                                     return_vertices=any(getattr(h, 'needs_vertices', False)
                                                         for h in needing))
            for h in needing:
                pooling = animals if getattr(h, 'pools_per_animal', False) else groups
                out.update(h.stage_observations(output, obs, params, pooling))
        return out

    def _shared_starts(self, stage: Stage, params: Dict[str, Tensor],
                       obs: Mapping[str, Tensor], groups: Tensor,
                       handlers: Sequence[nn.Module]) -> Dict[str, Tensor]:
        """``params`` with the shared parameters ``stage`` fits moved to where the
        handlers estimate them in closed form (``estimates_shared``, e.g. keypoint
        offsets from the residuals), before the stage measures its noise scales; labels
        placed first (``place_unmapped``), made markers last (``place_markers``)."""
        fitting = {n for n in stage.fit if n in self.shared}
        params = dict(params)
        if stage.place_unmapped and 'keypoint_offsets' in fitting and not self._placed:
            self._placed = True
            params = place_unmapped(self, params, obs, groups, stage.place_unmapped)
        estimating = [h for h in handlers if fitting & set(h.estimates_shared)]
        with torch.no_grad():
            for h in estimating:
                expanded = self._expand(params, self.shared, groups)
                output = self.body_model(
                    **{k: expanded[k] for k in _MODEL_INPUTS if k in expanded},
                    return_vertices=False)
                names = fitting & set(h.estimates_shared)
                starts = h.shared_starts(output, obs, expanded, groups,
                                         {n: params[n] for n in names})
                params.update({n: v for n, v in starts.items() if n in names})
        if stage.place_markers and 'keypoint_offsets' in fitting \
                and stage.name not in self._markers_placed:
            self._markers_placed.add(stage.name)
            params = place_markers(self, params, obs, groups, self._pose_refit(stage, obs,
                                                                               groups))
        return params

    def _pose_refit(self, stage: Stage, obs: Mapping[str, Tensor], groups: Tensor):
        """The last per-frame pose stage before ``stage`` as ``params -> params`` (what
        placing markers refits the poses with), or None."""
        names = [s.name for s in self.stages]
        earlier = self.stages[:names.index(stage.name)] if stage.name in names else []
        poses = [s for s in earlier if 'body_pose' in s.fit and not set(s.fit) & self.shared]
        return None if not poses else (
            lambda p: self._run_stage(poses[-1], p, obs, groups)[0])

    # ------------------------------------------------------------------- fit
    def fit(self, observations: Mapping[str, Any],
            init_params: Optional[Mapping[str, Tensor]] = None,
            groups: Optional[Tensor] = None, allow_all_diverged: bool = False,
            fixed: Sequence[str] = (), until_last_shared: bool = False,
            near: Optional[Tensor] = None) -> FitResult:
        """Fit a batch of samples through all stages.

        Args:
            observations: tensors/arrays with a leading batch dimension (see the
                handlers), e.g. from :class:`smilfit.datasets.MultiViewHDF5Dataset`.
            init_params: parameters to start from (e.g. a previous frame's or a
                regressor's prediction), (B, ...) or (G, ...) for shared ones.
            groups: (B,) group index per sample for shared parameters (default: one
                group).
            allow_all_diverged: return the result (every sample flagged in
                ``diverged``) instead of raising when every sample diverged; a dataset
                fit reports such samples as failed and goes on with the next batch.
            fixed: parameters held at their initial values (``init_params``) by every
                stage, e.g. an animal's skeleton estimated beforehand; a stage left
                with nothing to fit is skipped (its history record says so).
            until_last_shared: stop after the last stage that fits a shared parameter
                (what estimating an animal's skeleton needs; later stages refine frames).
            near: (B,) bool, samples whose ``init_params`` are already near the answer
                (a network's prediction): they skip the ``coarse`` stages, which keep
                their per-sample parameters as they were (a stage every sample skips is
                not run; its history record says so).

        Returns:
            :class:`FitResult`.
        """
        if self._data_info is None:
            raise RuntimeError('call setup(data_info) before fit()')
        fixed = set(fixed)
        unknown = sorted(fixed - set(self.param_shapes()))
        if unknown:
            raise KeyError(f'fixed: unknown parameters {unknown}; allowed: '
                           f'{sorted(self.param_shapes())}')
        obs = self.to_tensors(observations)
        batch = next(v.shape[0] for v in obs.values() if v.dim() > 0)
        groups = (torch.zeros(batch, dtype=torch.long, device=self.body_model.device)
                  if groups is None else torch.as_tensor(groups, device=self.body_model.device))
        diverged = torch.zeros(batch, dtype=torch.bool, device=self.body_model.device)
        history: List[Dict[str, Any]] = []
        stages = [replace(st, fit=tuple(k for k in st.fit if k not in fixed))
                  for st in self.stages] if fixed else self.stages
        if self.multi_start is not None:
            if init_params:
                raise ValueError('init_params and multi_start exclude each other (multi_start '
                                 'makes its own starts); drop one')
            if fixed:
                raise ValueError('fixed parameters and multi_start exclude each other')
            first = self.stages[:self.multi_start['stages']]
            params, diverged = best_start(
                self.multi_start, self.body_model, self.keypoint_handler(), self.handlers,
                self.initial_params,
                lambda *args: self._run_stages(first, *args)[:2], obs, batch, history)
            stages = self.stages[self.multi_start['stages']:]
        else:
            params = self.initial_params(obs, batch, groups, init_params)
        if until_last_shared:
            last = [i for i, st in enumerate(stages) if any(k in self.shared for k in st.fit)]
            stages = stages[:last[-1] + 1] if last else stages
        if near is not None:
            near = torch.as_tensor(near, dtype=torch.bool, device=self.body_model.device)
            if near.shape != (batch,):
                raise ValueError(f'near: expected ({batch},) bool, got {tuple(near.shape)}')
        params, diverged, carried = self._run_stages(stages, params, obs, groups, diverged,
                                                     history, near)
        if bool(diverged.all()) and not allow_all_diverged:
            raise FittingDivergedError(f'all {batch} samples diverged (non-finite loss or '
                                       'gradient); check the observations and loss weights')
        if bool(diverged.any()):
            warnings.warn(f'samples {torch.nonzero(diverged).flatten().tolist()} diverged '
                          '(non-finite loss or gradient); they keep their last finite '
                          'parameters')
        return self._result(params, {**obs, **carried}, groups, diverged, history)

    def _run_stages(self, stages: Sequence[Stage], params: Dict[str, Tensor],
                    obs: Mapping[str, Tensor], groups: Tensor, diverged: Tensor,
                    history: List[Dict[str, Any]], near: Optional[Tensor] = None):
        """Run ``stages`` in turn: ``(params, diverged, carried)``, ``carried`` the
        posterior variances and per-frame fits handed on (for later handlers and losses)."""
        everyone_near = near is not None and bool(near.all())

        def runs(stage: Stage) -> bool:
            return bool(stage.fit) and not (stage.coarse and everyone_near)
        carried: Dict[str, Tensor] = {}   # e.g. posterior variances, for later pose priors
        for i, stage in enumerate(stages):
            skip = near if stage.coarse and near is not None and bool(near.any()) else None
            if not runs(stage):
                why = ('every parameter it fits is fixed' if not stage.fit else
                       'every sample starts near the answer')
                history.append(dict(stage=stage.name, steps=0, skipped=why, loss_trace=[]))
                continue
            seeded = self._seeded_stage(stage, next((s for s in stages[i + 1:] if runs(s)),
                                                    None))
            for hook in self.hooks:
                hook.before_stage(self, stage)
            before = params
            params, stage_diverged, record, (variance, own, handed) = self._run_stage(
                stage if seeded is None else replace(stage, ftol=stage.seed_ftol), params,
                {**obs, **carried}, groups, skip)
            carried.update(handed or {})   # e.g. the points' leverages, for noise scales
            if variance:
                carried.update({variance_key(k): v for k, v in variance.items()})
            if own:
                carried.update({per_frame_key(k): v for k, v in own.items()})
            if seeded is not None:
                record['seeds'] = seeded
            if skip is not None:   # (a runner that could not leave them out ran them)
                params = {k: v if k in self.shared else
                          torch.where(skip.view(-1, *([1] * (v.dim() - 1))), before[k], v)
                          for k, v in params.items()}
                stage_diverged = stage_diverged & ~skip
                record['skipped_samples'] = int(skip.sum())
            diverged = diverged | stage_diverged
            history.append(record)
            for hook in self.hooks:
                hook.after_stage(self, stage, record)
        return params, diverged, carried

    def _seeded_stage(self, stage: Stage, following: Optional[Stage]) -> Optional[str]:
        """The name of the stage ``stage`` only seeds, where it does (then it stops at its
        ``seed_ftol``): ``following``, the next stage that runs, fits every parameter
        ``stage`` fits and measures noise scales afresh (see :class:`~.stages.Stage`)."""
        if (stage.seed_ftol is None or following is None
                or not set(following.fit) >= set(stage.fit)):
            return None
        weights = stage_weights(following, self.base_weights)
        rescales = any(weights[name] > 0 and getattr(h, 'needs_stage_observations', False)
                       for name, h in self.handlers.items())
        return following.name if rescales else None

    def _run_stage(self, stage: Stage, params: Dict[str, Tensor],
                   obs: Mapping[str, Tensor], groups: Tensor, skip: Optional[Tensor] = None):
        with self._handler_weights(stage_weights(stage, self.base_weights)) as active:
            if not active:
                raise ValueError(f'stage {stage.name!r}: every handler has weight 0')
            shares = any(name in self.shared for name in stage.fit)
            if not shares:
                # Priors on shared parameters are constant where none is fitted.
                active = [h for h in active if not self.counted_per_group(h)]
                if not active:
                    raise ValueError(f'stage {stage.name!r}: its only handlers are priors '
                                     'on shared parameters, which it does not fit')
            diverged, records, variance = None, [], (None, None)
            for _ in range(stage.rounds):
                params = self._shared_starts(stage, params, obs, groups, active)
                # Pooled over each animal's frames where its skeleton is fitted (a
                # keypoint it misses everywhere keeps its own scale), per sample
                # elsewhere, except for handlers that pool per animal in every stage.
                stage_obs = self._stage_observations(self._expand(params, self.shared, groups),
                                                     obs, groups if shares else None, active,
                                                     groups)
                params, round_diverged, record, variance = self._optimise(
                    stage, params, stage_obs, groups, active, skip)
                diverged = round_diverged if diverged is None else diverged | round_diverged
                records.append(record)
            return params, diverged, merge_rounds(records), variance

    def _optimise(self, stage: Stage, params: Dict[str, Tensor], obs: Mapping[str, Tensor],
                  groups: Tensor, active: List[nn.Module], skip: Optional[Tensor] = None):
        """One round of ``stage``: the runner of its optimizer type
        (:mod:`.stage_runners`), with the loss before and after for the history."""
        coupled = (any(name in self.shared for name in stage.fit)
                   or any(getattr(h, 'couples_samples', False) for h in active))
        per_group = (self._per_group(groups, next(iter(params.values())).dtype)
                     if coupled and any(self.counted_per_group(h) for h in active) else None)
        def after_step(step: int) -> None:
            for hook in self.hooks:
                hook.after_step(self, stage, step)
        ctx = StageContext(self.body_model, frozenset(self.shared), self.per_sample_losses,
                           self.counted_per_group, after_step, stage,
                           {k: v.detach() for k, v in params.items()}, obs, groups, active,
                           any(getattr(h, 'needs_vertices', False) for h in active),
                           coupled, per_group, skip,
                           any(getattr(h, 'uses_posterior_variance', False)
                               for h in self.handlers.values()))
        outcome = runner_for(stage)(ctx)   # (runners fit copies: ctx.params stay)
        diverged = outcome.diverged
        start, end = outcome.start_loss, outcome.end_loss
        with torch.no_grad():   # what the runner did not report
            start = ctx.losses(ctx.params) if start is None else start
            end = ctx.losses(outcome.params) if end is None else end
        record = dict(stage=stage.name, steps=outcome.steps, mean_loss_start=float(start.mean()),
                      mean_loss_end=float(end[~diverged].mean()) if bool((~diverged).any())
                      else float('nan'), per_sample=outcome.per_sample,
                      loss_trace=mean_trace(outcome.trace,
                                            diverged if skip is None else diverged | skip))
        if outcome.unit_steps is not None:
            record['unit_steps'] = outcome.unit_steps
        return outcome.params, diverged, record, (outcome.variance, outcome.per_frame_fit,
                                                  outcome.carried)

    @contextlib.contextmanager
    def _handler_weights(self, weights: Mapping[str, float]):
        """Set handler weights for a stage; restore the ones before afterwards (a stage
        run inside another's, as placing markers refits the poses, hands them back)."""
        before = {name: handler.weight for name, handler in self.handlers.items()}
        try:
            for name, handler in self.handlers.items():
                handler.weight = weights[name]
            yield [h for h in self.handlers.values() if h.weight > 0]
        finally:
            for name, handler in self.handlers.items():
                handler.weight = before[name]

    def _result(self, params: Dict[str, Tensor], obs: Mapping[str, Tensor], groups: Tensor,
                diverged: Tensor, history: List[Dict[str, Any]]) -> FitResult:
        expanded = self._expand(params, self.shared, groups)
        with torch.no_grad(), self._handler_weights(
                stage_weights(self.stages[-1], self.base_weights)) as active:
            need_vertices = self.return_vertices or any(
                getattr(h, 'needs_vertices', False) for h in active)
            # Errors in noise units where a handler scores them so: scales from the
            # final residuals, per sample (per animal where a handler pools so).
            obs = self._stage_observations(expanded, obs, None, active, groups)
            output = self.body_model(**{k: expanded[k] for k in _MODEL_INPUTS if k in expanded},
                                     return_vertices=need_vertices)
            losses = {h.name: h(output, obs, expanded) for h in active}
            per_group = self._per_group(groups, output.joints.dtype)
            for h in active:
                if self.counted_per_group(h):
                    losses[h.name] = losses[h.name] * per_group
        total = torch.stack(list(losses.values())).sum(0)
        handler = self.keypoint_handler()
        exchanged = obs.get(getattr(handler, 'exchanged_key', None)) if handler else None
        return FitResult(params=expanded, output=output, losses=losses, total_loss=total,
                         diverged=diverged, history=history, exchanged=exchanged)

    def to_tensors(self, observations: Mapping[str, Any]) -> Dict[str, Tensor]:
        """Numeric observations as tensors on the model's device (floats in its dtype);
        other entries (strings, bytes) are dropped. Tensors already right pass through."""
        m = self.body_model
        out = {}
        for key, value in observations.items():
            if isinstance(value, (torch.Tensor, np.ndarray)) or (
                    isinstance(value, (list, tuple)) and value and
                    isinstance(value[0], (int, float))):
                value = torch.as_tensor(np.asarray(value) if isinstance(value, (list, tuple))
                                        else value, device=m.device)
                if value.is_floating_point():
                    value = value.to(m.dtype)
                out[key] = value
        return out


__all__ = ['SMILRegistrant', 'FitResult', 'FittingDivergedError']
