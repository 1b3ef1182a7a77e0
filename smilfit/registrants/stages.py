"""Fitting stages from config, validated strictly.

A stage says which parameters to optimise, with which optimizer, for how long, and
how to weight each handler::

    dict(name='rigid', fit=['global_orient', 'transl'], n_iter=30,
         optimizer=dict(type='LBFGS', line_search_fn='strong_wolfe', max_iter=20),
         ftol=1e-9, gtol=1e-7, loss_weights=dict(kp2d=1.0, shape_prior=0.0))

A typo anywhere (an unknown stage key, parameter or handler name) is an error that
names it and lists what is allowed: mmhuman3d silently swallowed stage typos.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from smilfit.body_models.parameters import FITTABLE_PARAMS

#: Keys a stage config may have.
_STAGE_KEYS = ('name', 'fit', 'n_iter', 'optimizer', 'ftol', 'gtol', 'loss_weights',
               'per_sample', 'rounds', 'coarse', 'seed_ftol', 'place_markers',
               'place_unmapped')


class StageConfigError(ValueError):
    """A stage config is invalid; the message names the stage and the offending key."""


@dataclass(frozen=True)
class Stage:
    """One validated fitting stage.

    Attributes:
        name: stage name (for logs and results).
        fit: parameters optimised in this stage (others are held fixed).
        n_iter: optimizer steps; for L-BFGS each step runs up to the optimizer's own
            ``max_iter`` iterations, so the budget is ``n_iter * max_iter`` (per-sample
            stages spend it in one step, so each sample stops when it converges).
        optimizer: optimizer config; ``type`` is 'LBFGS' or any ``torch.optim`` class.
        ftol: L-BFGS: a sample stops when its loss or step changes by less than this
            (torch's ``tolerance_change``, absolute); other optimizers: the stage stops
            when the summed loss changes by less than ``ftol`` relative to its size.
        gtol: L-BFGS: a sample stops when its largest absolute gradient entry falls
            below this (torch's ``tolerance_grad``).
        loss_weights: handler name -> weight for this stage (others keep their
            configured weight; 0 disables a handler for the stage).
        per_sample: optimise every sample independently (batched per-sample L-BFGS)
            rather than the summed loss with one optimizer.
        rounds: run the stage this many times, the observations handlers derive from
            the fit (noise scales from the residuals,
            ``Keypoint2DHandler(scale_from_residuals=True)``) derived afresh before each:
            iteratively reweighted least squares. A scale taken where the fit starts far
            off overstates the noise (the data then weigh too little against the
            priors); a second round measures it nearer the solution.
        coarse: the stage only brings a frame near the answer (a rigid alignment, a
            first pose before the skeleton is known): frames that already start near it
            (a network's prediction, ``data.init_from``) skip it, while the frames that
            start from the rest pose in the same batch run it.
        seed_ftol: the ``ftol`` this stage stops at where it only seeds the next one:
            where the next stage that runs fits every parameter this one fits (and
            perhaps more) and measures noise scales afresh
            (``Keypoint2DHandler(scale_from_residuals=True)``), this stage's answer
            matters only as that stage's start and the place its scales are measured. A
            scale is a robust estimate from a few tens of residuals, uncertain by several
            percent; the last 1 % of the loss moves the residuals by about half a
            percent. ``None``: always ``ftol``. (In a per-frame pass with the animal's
            skeleton held fixed the skeleton stages between two pose stages fit nothing
            and are skipped, so the first pose stage seeds the second there, and not
            where the skeleton is estimated.)
        place_markers: before the stage (which fits the per-animal ``keypoint_offsets``),
            make every label a marker on the body's surface where it sits now, moved by
            the joints that move the skin there (:mod:`.marker_placement`); once per
            registrant.
        place_unmapped: before the stage (which fits the per-animal
            ``keypoint_offsets``), place the data keypoints the joint lookup leaves out
            (``True``: all of them; or a tuple of their names) at the model point
            nearest to where they are triangulated (:mod:`.unmapped_placement`); once per
            registrant.
    """

    name: str
    fit: Tuple[str, ...]
    n_iter: int = 10
    optimizer: Mapping[str, Any] = field(default_factory=lambda: dict(type='LBFGS'))
    ftol: float = 1e-9
    gtol: float = 1e-7
    loss_weights: Mapping[str, float] = field(default_factory=dict)
    per_sample: bool = True
    rounds: int = 1
    coarse: bool = False
    seed_ftol: Optional[float] = None
    place_markers: bool = False
    place_unmapped: Union[bool, Tuple[str, ...]] = False


def _suggest(name: str, allowed: Iterable[str]) -> str:
    import difflib
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f' (did you mean {close[0]!r}?)' if close else ''


def parse_stage(cfg: Mapping[str, Any], index: int, handler_names: Sequence[str],
                fittable: Sequence[str] = FITTABLE_PARAMS) -> Stage:
    """Validate one stage config and return a :class:`Stage`.

    Args:
        cfg: the stage dict.
        index: its position (for error messages).
        handler_names: names of the registrant's handlers.
        fittable: parameters this registrant can fit.
    """
    where = f'stage {index} ({cfg.get("name", "unnamed")!r})'
    if not isinstance(cfg, Mapping):
        raise StageConfigError(f'{where}: expected a dict, got {type(cfg).__name__}')
    for key in cfg:
        if key not in _STAGE_KEYS:
            raise StageConfigError(f'{where}: unknown key {key!r}{_suggest(key, _STAGE_KEYS)}; '
                                   f'allowed: {list(_STAGE_KEYS)}')
    fit = cfg.get('fit')
    if isinstance(fit, str) or not fit:
        raise StageConfigError(f"{where}: 'fit' must be a non-empty list of parameter names")
    for name in fit:
        if name not in fittable:
            raise StageConfigError(f'{where}: cannot fit unknown parameter {name!r}'
                                   f'{_suggest(name, fittable)}; allowed: {list(fittable)}')
    weights = dict(cfg.get('loss_weights', {}))
    for name, weight in weights.items():
        if name not in handler_names:
            raise StageConfigError(
                f'{where}: loss_weights names unknown handler {name!r}'
                f'{_suggest(name, handler_names)}; handlers: {list(handler_names)}')
        if not isinstance(weight, (int, float)) or weight < 0:
            raise StageConfigError(f'{where}: weight of {name!r} must be a number >= 0, '
                                   f'got {weight!r}')
    optimizer = dict(cfg.get('optimizer', dict(type='LBFGS')))
    if 'type' not in optimizer:
        raise StageConfigError(f"{where}: optimizer needs a 'type' (e.g. 'LBFGS', 'Adam')")
    n_iter = cfg.get('n_iter', 10)
    if not isinstance(n_iter, int) or n_iter < 1:
        raise StageConfigError(f"{where}: 'n_iter' must be a positive integer, got {n_iter!r}")
    rounds = cfg.get('rounds', 1)
    if not isinstance(rounds, int) or rounds < 1:
        raise StageConfigError(f"{where}: 'rounds' must be a positive integer, got {rounds!r}")
    coarse = cfg.get('coarse', False)
    if not isinstance(coarse, bool):
        raise StageConfigError(f"{where}: 'coarse' must be True or False, got {coarse!r}")
    seed_ftol = cfg.get('seed_ftol')
    if seed_ftol is not None and (isinstance(seed_ftol, bool)
                                  or not isinstance(seed_ftol, (int, float))
                                  or not seed_ftol > 0):
        raise StageConfigError(f"{where}: 'seed_ftol' must be a number > 0 or None, "
                               f'got {seed_ftol!r}')
    place_markers = cfg.get('place_markers', False)
    if not isinstance(place_markers, bool):
        raise StageConfigError(f"{where}: 'place_markers' must be True or False, got "
                               f'{place_markers!r}')
    place_unmapped = cfg.get('place_unmapped', False)
    if not isinstance(place_unmapped, bool):
        if isinstance(place_unmapped, str) or not isinstance(place_unmapped, Sequence) \
                or not all(isinstance(n, str) for n in place_unmapped):
            raise StageConfigError(f"{where}: 'place_unmapped' must be True, False or a list "
                                   f'of data keypoint names, got {place_unmapped!r}')
        place_unmapped = tuple(place_unmapped)
    return Stage(name=str(cfg.get('name', f'stage{index}')), fit=tuple(fit), n_iter=n_iter,
                 optimizer=optimizer, ftol=float(cfg.get('ftol', 1e-9)),
                 gtol=float(cfg.get('gtol', 1e-7)), loss_weights=weights,
                 per_sample=bool(cfg.get('per_sample', True)), rounds=rounds,
                 coarse=coarse, seed_ftol=None if seed_ftol is None else float(seed_ftol),
                 place_markers=place_markers, place_unmapped=place_unmapped)


def parse_stages(cfgs: Sequence[Mapping[str, Any]], handler_names: Sequence[str],
                 fittable: Sequence[str] = FITTABLE_PARAMS) -> List[Stage]:
    """Validate a list of stage configs (at least one; unique names)."""
    if not cfgs:
        raise StageConfigError('a registrant needs at least one stage')
    stages = [parse_stage(cfg, i, handler_names, fittable) for i, cfg in enumerate(cfgs)]
    names = [s.name for s in stages]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise StageConfigError(f'stage names must be unique, repeated: {duplicates}')
    return stages


def stage_weights(stage: Stage, base: Mapping[str, float]) -> Dict[str, float]:
    """Handler weights in effect during ``stage``: the base weights with its overrides."""
    weights = dict(base)
    weights.update(stage.loss_weights)
    return weights


def optimizer_kwargs(stage: Stage) -> Dict[str, Any]:
    """The stage's optimizer config without ``type``."""
    return {k: v for k, v in stage.optimizer.items() if k != 'type'}


def describe(stages: Sequence[Stage]) -> str:
    """One line per stage, for logs."""
    return '\n'.join(f'{s.name}: fit {list(s.fit)} x{s.n_iter} with {s.optimizer["type"]}'
                     f'{" (per sample)" if s.per_sample else ""}' for s in stages)


__all__ = ['FITTABLE_PARAMS', 'Stage', 'StageConfigError', 'parse_stage', 'parse_stages',
           'stage_weights', 'optimizer_kwargs', 'describe']
