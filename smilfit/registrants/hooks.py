"""Fitting hooks: observe a registrant's stages (progress bars, loss history, plots).

A hook is any object with the three methods of :class:`FittingHook`; configs build the
registered ones from ``FITTING_HOOKS`` by name.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Union

from smilfit.registry.build import build_module
from smilfit.registry import FITTING_HOOKS


class FittingHook:
    """Base class: every method is optional and does nothing by default."""

    def before_stage(self, registrant: Any, stage: Any) -> None:
        """Called before a stage starts."""

    def after_step(self, registrant: Any, stage: Any, step: int) -> None:
        """Called after optimizer steps; ``step`` counts the stage's steps done so far.

        Per-sample L-BFGS stages run their whole budget as one step and report
        ``step = n_iter`` once at the end.
        """

    def after_stage(self, registrant: Any, stage: Any, record: Dict[str, Any]) -> None:
        """Called after a stage with its record (steps, mean loss before and after)."""


@FITTING_HOOKS.register_module()
class ProgressBarHook(FittingHook):
    """A tqdm bar per stage, counting optimizer steps."""

    def __init__(self, leave: bool = False) -> None:
        self.leave = leave
        self._bar = None

    def before_stage(self, registrant: Any, stage: Any) -> None:
        from tqdm import tqdm
        self._bar = tqdm(total=stage.n_iter, desc=f'stage {stage.name}', leave=self.leave)

    def after_step(self, registrant: Any, stage: Any, step: int) -> None:
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def after_stage(self, registrant: Any, stage: Any, record: Dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.set_postfix(loss=f'{record["mean_loss_end"]:.4g}')
            self._bar.close()
            self._bar = None


@FITTING_HOOKS.register_module()
class LossHistoryHook(FittingHook):
    """Collects every stage record (for loss-curve plots and logs)."""

    def __init__(self) -> None:
        self.records: List[Dict[str, Any]] = []

    def after_stage(self, registrant: Any, stage: Any, record: Dict[str, Any]) -> None:
        self.records.append(dict(record))


def build_hooks(hooks: Sequence[Union[FittingHook, Mapping[str, Any]]]) -> List[FittingHook]:
    """Hook objects from objects or ``FITTING_HOOKS`` configs."""
    return [build_module(FITTING_HOOKS, h, 'fitting hook') for h in hooks]


__all__ = ['FittingHook', 'ProgressBarHook', 'LossHistoryHook', 'build_hooks']
