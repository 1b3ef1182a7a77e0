"""Loss-weight curriculum: change a model's loss weights on a schedule of epochs or iterations."""
import math
from numbers import Real
from typing import Dict, List, Mapping, Optional, Tuple

from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop

from smilfit.registry import HOOKS

from .model_access import unwrap_model

Schedule = List[Tuple[int, Dict[str, float]]]


def _parse_step(key, hook_name: str) -> int:
    """A schedule key: a non-negative int (or its decimal string, as JSON/YAML give)."""
    if isinstance(key, bool):
        raise TypeError(f'{hook_name}: schedule key {key!r} is a bool, expected an epoch or '
                        'iteration number')
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if not isinstance(key, int) or key < 0:
        raise ValueError(f'{hook_name}: schedule key {key!r} is not a non-negative integer '
                         'epoch/iteration')
    return key


def parse_schedule(schedule: Mapping, hook_name: str = 'LossWeightCurriculumHook') -> Schedule:
    """Validate ``{step: {loss_name: weight}}`` and return it sorted by step.

    Raises:
        TypeError / ValueError: naming the bad key, loss name or weight.
    """
    if not isinstance(schedule, Mapping) or not schedule:
        raise ValueError(f'{hook_name}: schedule must be a non-empty dict '
                         f'{{epoch_or_iter: {{loss_name: weight}}}}, got {schedule!r}')
    parsed: Dict[int, Dict[str, float]] = {}
    for key, weights in schedule.items():
        step = _parse_step(key, hook_name)
        if step in parsed:
            raise ValueError(f'{hook_name}: step {step} appears twice in the schedule')
        if not isinstance(weights, Mapping) or not weights:
            raise ValueError(f'{hook_name}: schedule[{key!r}] must be a non-empty dict '
                             f'{{loss_name: weight}}, got {weights!r}')
        entry = {}
        for name, weight in weights.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f'{hook_name}: schedule[{key!r}] has loss name {name!r}; '
                                'loss names are non-empty strings')
            if isinstance(weight, bool) or not isinstance(weight, Real) \
                    or not math.isfinite(weight) or weight < 0:
                raise ValueError(f'{hook_name}: schedule[{key!r}][{name!r}] = {weight!r} is '
                                 'not a finite non-negative number')
            entry[name] = float(weight)
        parsed[step] = entry
    return sorted(parsed.items())


@HOOKS.register_module()
class LossWeightCurriculumHook(Hook):
    """Set a model's loss weights from ``{epoch_or_iter: {loss_name: weight}}``.

    Each entry changes the weights it names from its step on: at step ``s`` a loss has
    the weight of the latest entry at or before ``s`` that names it; a loss that no
    entry up to ``s`` names keeps the weight the model was built with. Steps are
    0-based, like mmengine's parameter schedulers: with ``by_epoch=True`` entry ``0``
    applies from the first epoch, entry ``5`` from the sixth. The weights are derived
    from the current step alone (not from entries seen earlier in this process), so a
    resumed run gets exactly the weights of an uninterrupted one.

    The model (unwrapped from DDP: hooks change ``runner.model.module``) must expose
    ``loss_weights`` (dict name -> float) and ``set_loss_weight(name, weight)``; its
    ``mode='loss'`` outputs are named ``loss_<name>``. Every name in the schedule is
    checked against ``loss_weights`` before training starts.

    Config::

        custom_hooks = [dict(type='LossWeightCurriculumHook', by_epoch=True,
                             schedule={0: dict(kp2d=1.0, shape_prior=0.0),
                                       10: dict(shape_prior=1e-2),
                                       30: dict(kp2d=0.5, silhouette=1.0)})]

    Args:
        schedule: step -> {loss name: weight >= 0}. Keys are ints (decimal strings are
            accepted, as JSON and ``--cfg-options`` give them).
        by_epoch: steps are epochs (applied before each epoch) or iterations (applied
            before each iteration). ``True`` needs an epoch-based train loop.
    """

    priority = 'NORMAL'

    def __init__(self, schedule: Mapping, by_epoch: bool = True) -> None:
        self.schedule = parse_schedule(schedule, type(self).__name__)
        self.by_epoch = bool(by_epoch)

    def weights_at(self, step: int) -> Dict[str, float]:
        """The scheduled weights at ``step`` (only the names some entry up to it gives)."""
        weights: Dict[str, float] = {}
        for entry_step, entry in self.schedule:
            if entry_step > step:
                break
            weights.update(entry)
        return weights

    @property
    def loss_names(self) -> List[str]:
        """Every loss name the schedule mentions, sorted."""
        return sorted({name for _, entry in self.schedule for name in entry})

    def _model(self, runner):
        model = unwrap_model(runner.model)
        if not isinstance(getattr(model, 'loss_weights', None), Mapping) or \
                not callable(getattr(model, 'set_loss_weight', None)):
            raise TypeError(f'{type(self).__name__}: the model ({type(model).__name__}) needs a '
                            '`loss_weights` dict and a `set_loss_weight(name, weight)` method')
        return model

    def before_train(self, runner) -> None:
        if self.by_epoch and isinstance(runner.train_loop, IterBasedTrainLoop):
            raise ValueError(f'{type(self).__name__}(by_epoch=True) needs an epoch-based train '
                             'loop, but train_cfg is iteration-based: set by_epoch=False and '
                             'give the schedule in iterations')
        model = self._model(runner)
        unknown = sorted(set(self.loss_names) - set(model.loss_weights))
        if unknown:
            raise ValueError(f'{type(self).__name__}: schedule names unknown loss(es) {unknown}; '
                             f'{type(model).__name__} has loss weights '
                             f'{sorted(model.loss_weights)}')

    def _apply(self, runner, step: int) -> None:
        model = self._model(runner)
        changed = {}
        for name, weight in self.weights_at(step).items():
            if float(model.loss_weights[name]) != weight:
                model.set_loss_weight(name, weight)
                changed[name] = weight
        if changed:
            unit = 'epoch' if self.by_epoch else 'iter'
            runner.logger.info(f'loss weights from {unit} {step}: '
                               + ', '.join(f'{n}={w:g}' for n, w in sorted(changed.items())))

    def before_train_epoch(self, runner) -> None:
        if self.by_epoch:
            self._apply(runner, runner.epoch)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        if not self.by_epoch:
            self._apply(runner, runner.iter)
