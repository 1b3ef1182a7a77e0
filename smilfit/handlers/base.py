"""The handler contract: :class:`BaseHandler` and small helpers shared by every handler.

A handler turns (body-model output, observations, parameters) into a weighted
per-sample loss of shape (B,). Registrants and regressors hold handlers in an
``nn.ModuleDict`` keyed by ``name``; stages override ``weight`` by name.
"""
from __future__ import annotations

import copy
import inspect
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..registry import LOSSES
from ..registry.build import build_module

LossSpec = Union[Dict[str, Any], nn.Module]


def build_loss(loss: Optional[LossSpec], handler: str, **defaults: Any) -> nn.Module:
    """A LOSSES config (or a built module) -> the loss module.

    ``defaults`` fill keys the config does not set (e.g. ``model_data``); a module is
    returned as it is. The loss must produce per-sample values: a ``reduction`` other
    than ``'none'`` is an error (handlers return (B,) and never reduce).
    """
    if loss is None:
        raise ValueError(f'handler {handler!r}: loss is None; give a LOSSES config dict '
                         '(e.g. dict(type="KeypointMSELoss")) or an nn.Module')
    if isinstance(loss, nn.Module):
        module = loss
    elif isinstance(loss, Mapping):
        cfg = dict(copy.deepcopy(dict(loss)))
        if 'type' not in cfg:
            raise ValueError(f'handler {handler!r}: the loss config has no "type": {cfg}')
        module = build_module(LOSSES, cfg, f'loss of handler {handler!r}', defaults)
    else:
        raise TypeError(f'handler {handler!r}: loss must be a LOSSES config dict or an '
                        f'nn.Module, got {type(loss).__name__}')
    reduction = getattr(module, 'reduction', 'none')
    if reduction != 'none':
        raise ValueError(f'handler {handler!r}: the loss {type(module).__name__} has '
                         f"reduction={reduction!r}; handlers need per-sample losses "
                         "(reduction='none')")
    return module


def accepts_kwarg(loss: LossSpec, key: str) -> bool:
    """Whether a LOSSES config's class (or a module's class) takes ``key`` in ``__init__``."""
    if isinstance(loss, nn.Module):
        cls = type(loss)
    else:
        t = loss.get('type') if isinstance(loss, Mapping) else None
        cls = LOSSES.get(t) if isinstance(t, str) else t
    if cls is None:
        return False
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False
    return key in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def batch_size(output) -> int:
    """B of a :class:`~smilfit.body_models.BodyModelOutput`."""
    return int(output.joints.shape[0])


def zeros_like_batch(output) -> torch.Tensor:
    """(B,) zeros with the output's dtype and device (a term with nothing to score)."""
    j = output.joints
    return j.new_zeros(j.shape[0])


#: The observation a registrant adds, for the stages after a Levenberg-Marquardt stage that
#: fitted a parameter, where a handler asks for it (``uses_posterior_variance``): each
#: sample's posterior variance of the parameter there, ``observations[variance_key(name)]``,
#: (B, *shape) like the parameter, NaN where a sample was not fitted.
def variance_key(param: str) -> str:
    return f'posterior_variance/{param}'


#: Beside it, where a handler asks for the variance: ``observations[per_frame_key(name)]``
#: ``(B, *shape)``, where each sample's own labels put the parameter in that stage (one
#: Gauss-Newton step of the stage's per-sample terms from where it ended, without terms
#: coupling samples in time), NaN where a sample was not fitted.
def per_frame_key(param: str) -> str:
    return f'per_frame_fit/{param}'


def get_param(params: Optional[Mapping[str, Any]], key: str) -> Optional[torch.Tensor]:
    """``params[key]`` or ``None`` when absent (or ``None``)."""
    if not params:
        return None
    return params.get(key)


class BaseHandler(nn.Module):
    """Base of all handlers: name, loss, mutable weight, ``setup`` and ``forward``.

    Subclasses implement :meth:`compute` (the unweighted (B,) loss); :meth:`forward`
    checks its shape and multiplies it by ``weight``. A plugin may also override
    ``forward`` directly, as long as it honours the contract below.

    Contract (what a registrant relies on):

    - ``needs_vertices`` (class or instance attribute): the body model must skin the
      mesh for this handler; when no active handler needs vertices the registrant
      calls the model with ``return_vertices=False``.
    - ``couples_samples``: the loss of one sample depends on others (a sequence); the
      registrant then cannot fit samples independently.
    - ``setup(body_model, data_info)`` once before fitting: resolve names (keypoints,
      joints) and build model-dependent losses. ``data_info`` holds
      ``keypoint_names`` (the K data keypoints, in the observations' order) and
      optionally ``joint_lookup`` (model keypoint name -> data keypoint name).
    - ``needs_stage_observations`` / ``stage_observations(output, observations, params,
      groups)``: observations a handler derives from the fit itself at the start of
      every stage (e.g. noise scales from the residuals, :mod:`.residual_scale`); the
      registrant adds them to the stage's observations. ``groups`` (B,) is given in
      stages fitting shared parameters (pool over each group), ``None`` otherwise;
      a handler with ``pools_per_animal`` true gets the animals in every stage.
    - ``estimates_shared`` / ``shared_starts(output, observations, params, groups,
      shared)``: shared parameters the handler can estimate in closed form from the
      current fit (e.g. a keypoint's offset from its joint, :mod:`.offset_estimate`);
      in a stage fitting them, the registrant starts every round from these values
      (before the stage observations are derived), per group (G, ...).
    - ``forward(output, observations, params) -> (B,)``, already multiplied by
      ``weight``. ``weight`` is a plain float a stage may change at any time; with
      ``weight == 0`` the registrant may skip the handler altogether.

    Args:
        name: the handler's key (stages override weights by it).
        loss: a LOSSES config dict or a built ``nn.Module`` returning (B,).
        weight: factor on the per-sample loss (finite, >= 0).
        check_finite: raise ``FloatingPointError`` naming the samples when the loss is
            NaN/inf (costs a device sync per call; off by default).
    """

    #: Whether this handler reads ``output.vertices``.
    needs_vertices: bool = False
    #: Whether a sample's loss depends on other samples of the batch (e.g. temporal
    #: smoothness over a sequence): registrants then optimise the summed loss instead
    #: of every sample independently.
    couples_samples: bool = False

    #: Least-squares form for Gauss-Newton / Levenberg-Marquardt stages: ``'points'``
    #: (:meth:`point_residuals` of the matched model points, each residual depending on
    #: one point), ``'params'`` (:meth:`param_residuals` of ``residual_params``) or
    #: ``None`` (no residual form: such a handler only works with gradient optimizers).
    residual_kind: Optional[str] = None
    #: Parameter names :meth:`param_residuals` reads.
    residual_params: Sequence[str] = ()
    #: The parameter holding offsets this handler adds to its model points (e.g.
    #: ``'keypoint_offsets'``), or ``None``; :attr:`offsets_frame` says in which axes:
    #: ``'world'`` (added inside :meth:`point_residuals`) or ``'joint'`` (turning with
    #: the carrying joint: the solver attaches them to the points,
    #: :meth:`local_offsets`).
    offsets_key: Optional[str] = None
    offsets_frame: str = 'world'
    #: Whether :meth:`stage_observations` adds anything.
    needs_stage_observations: bool = False
    #: Shared parameters :meth:`shared_starts` estimates.
    estimates_shared: Sequence[str] = ()
    #: Whether :meth:`stage_observations` gets the animals (``groups``) in every stage,
    #: not only in stages fitting shared parameters.
    pools_per_animal: bool = False

    def stage_observations(self, output, observations: Mapping[str, Any],
                           params: Mapping[str, Any],
                           groups: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Observations derived at the start of a stage from the current fit (``output``
        at ``params``), keyed by names of this handler's own; none by default."""
        return {}

    def shared_starts(self, output, observations: Mapping[str, Any],
                      params: Mapping[str, Any], groups: torch.Tensor,
                      shared: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Starting values (G, ...) of the shared parameters ``shared`` (name -> current
        (G, ...) values, names from :attr:`estimates_shared`) from the fit ``output`` at
        ``params`` (per sample, (B, ...)), ``groups`` (B,) each sample's group; none by
        default."""
        return {}

    @property
    def affine_param_residuals(self) -> bool:
        """Whether :meth:`param_residuals` is affine in the parameters with the same
        coefficients for every sample (a linear prior): Levenberg-Marquardt then
        computes its Jacobian once per stage instead of every iteration."""
        return False

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 check_finite: bool = False) -> None:
        super().__init__()
        if not isinstance(name, str) or not name:
            raise ValueError(f'a handler needs a non-empty string name, got {name!r}')
        self.name = name
        self.weight = weight
        self.check_finite = bool(check_finite)
        self._is_setup = False
        self.loss = None if loss is None else self._make_loss(loss)

    # ------------------------------------------------------------------ weight
    @property
    def weight(self) -> float:
        return self._weight

    @weight.setter
    def weight(self, value: float) -> None:
        try:
            value = float(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f'handler {getattr(self, "name", "?")!r}: weight must be a '
                            f'number, got {value!r}') from err
        if not math.isfinite(value) or value < 0:
            raise ValueError(f'handler {getattr(self, "name", "?")!r}: weight must be '
                             f'finite and >= 0, got {value}')
        self._weight = value

    # ------------------------------------------------------------------ loss
    def _make_loss(self, loss: LossSpec, **defaults: Any) -> nn.Module:
        return build_loss(loss, self.name, **defaults)

    def _model_loss(self, loss: LossSpec, body_model, blockers: Sequence[str] = ()
                    ) -> nn.Module:
        """Build a loss that reads model data: ``model_data=body_model`` is added to a
        config whose class accepts it, unless the config sets ``model_data`` or one of
        ``blockers`` (keys that exclude it). Modules are used as they are."""
        if isinstance(loss, Mapping) and accepts_kwarg(loss, 'model_data') and not any(
                k in loss for k in ('model_data',) + tuple(blockers)):
            return self._make_loss(loss, model_data=body_model)
        return self._make_loss(loss)

    # ------------------------------------------------------------------ setup
    def setup(self, body_model, data_info: Optional[Mapping[str, Any]] = None) -> None:
        """Resolve everything that depends on the model or the data (call once)."""
        self._is_setup = True

    def _require_setup(self) -> None:
        if not self._is_setup:
            raise RuntimeError(f'handler {self.name!r} ({type(self).__name__}): call '
                               'setup(body_model, data_info) before forward')

    # ------------------------------------------------------------------ forward
    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        """The unweighted per-sample loss (B,). Implemented by subclasses."""
        raise NotImplementedError

    def point_residuals(self, points: torch.Tensor, observations: Mapping[str, Any],
                        params: Mapping[str, Any]) -> torch.Tensor:
        """(B, G, M, D) unweighted residuals of the (B, M, 3) matched model points.

        ``(r * r).sum((1, 2, 3)) == compute(...)``, and ``r[:, :, m]`` depends on
        ``points[:, m]`` only. Implemented by handlers with ``residual_kind = 'points'``.
        """
        raise NotImplementedError(self._no_residuals())

    def param_residuals(self, params: Mapping[str, Any],
                        observations: Mapping[str, Any]) -> torch.Tensor:
        """(B, R) unweighted residuals with ``(r * r).sum(1) == compute(...)``, functions of
        ``params[n]`` for ``n`` in ``residual_params``. For ``residual_kind = 'params'``."""
        raise NotImplementedError(self._no_residuals())

    def point_residuals_and_jacobian(self, points: torch.Tensor,
                                     observations: Mapping[str, Any],
                                     params: Mapping[str, Any]
                                     ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`point_residuals` (B, G, M, D) and their derivatives w.r.t. the points
        (B, G, M, D, 3) in closed form, or ``None`` (the default): the solver then
        differentiates :meth:`point_residuals` by forward mode."""
        return None

    def pool_index(self, body_model) -> torch.Tensor:
        """(M,) the indices of the points :meth:`point_residuals` reads in the body
        model's point pool (its joints, then its vertex keypoint readouts). For
        ``residual_kind = 'points'``."""
        raise NotImplementedError(self._no_residuals())

    def local_offsets(self, params: Mapping[str, Any]) -> Optional[torch.Tensor]:
        """(B or 1, M, 3) joint-frame offsets of the points :meth:`point_residuals`
        reads, which the solver attaches to the model's points (so that their Jacobian
        sees them turn with the carrying joint), or ``None`` (the default)."""
        return None

    def _no_residuals(self) -> str:
        return (f'handler {self.name!r} ({type(self).__name__}) has no least-squares '
                'residual form; use it in LBFGS/Adam stages, not Levenberg-Marquardt')

    def forward(self, output, observations: Optional[Mapping[str, Any]] = None,
                params: Optional[Mapping[str, Any]] = None) -> torch.Tensor:
        """Weighted per-sample loss (B,)."""
        self._require_setup()
        loss = self.compute(output, observations or {}, params or {})
        B = batch_size(output)
        if loss.shape != (B,):
            raise RuntimeError(f'handler {self.name!r} ({type(self).__name__}) returned '
                               f'shape {tuple(loss.shape)}, expected ({B},)')
        if self.check_finite:
            bad = ~torch.isfinite(loss)
            if bool(bad.any()):
                idx = torch.nonzero(bad).flatten().tolist()
                raise FloatingPointError(f'handler {self.name!r}: non-finite loss for '
                                         f'sample(s) {idx[:20]}')
        return loss * self.weight

    def extra_repr(self) -> str:
        return (f'name={self.name!r}, weight={self.weight}, '
                f'needs_vertices={self.needs_vertices}')


__all__ = ['BaseHandler', 'build_loss', 'accepts_kwarg', 'batch_size', 'zeros_like_batch',
           'get_param']
