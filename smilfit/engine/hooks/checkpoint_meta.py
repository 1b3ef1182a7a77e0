"""Put what inference needs into every checkpoint: the config as data, smilfit version, model
extras."""
import os
from numbers import Real
from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook

from smilfit.registry import HOOKS
from smilfit.version import __version__

from ..config_data import config_to_data
from .model_access import unwrap_model

RESERVED_KEYS = ('config_data', 'version')


def plain_meta(value: Any, where: str) -> Any:
    """``value`` made of what torch's ``weights_only`` loading accepts.

    None, bools, numbers, strings, tensors, and lists/tuples/dicts (string keys) of
    them pass; paths become strings and numpy arrays lists. Anything else would make
    the checkpoint unloadable under torch's default, so it is refused here, at save
    time, naming the entry.

    Raises:
        TypeError: ``where`` names the offending entry.
    """
    if value is None or isinstance(value, (bool, str, torch.Tensor)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Real):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(plain_meta(v, f'{where}[{i}]') for i, v in enumerate(value))
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f'{where} has key {key!r}: checkpoint meta keys must be strings')
            out[key] = plain_meta(item, f'{where}[{key!r}]')
        return out
    raise TypeError(f'{where} is a {type(value).__name__}, which checkpoints loaded with '
                    'weights_only=True refuse; use str, numbers, lists, dicts or tensors')


@HOOKS.register_module()
class CheckpointMetaHook(Hook):
    """Adds ``meta['smilfit']`` to every checkpoint the runner saves.

    ``meta['smilfit'] = dict(config_data=<the resolved config as plain data>,
    version=<smilfit version>, **model.checkpoint_meta())``, the last part only when the
    (unwrapped) model defines ``checkpoint_meta()`` returning a dict (e.g. the body-model
    file and joint names an inference script needs). The config is stored as data
    (:mod:`smilfit.engine.config_data`), never as Python text to execute; a config that
    cannot be stored so is refused before training starts, naming the entry. mmengine's
    own ``meta['cfg']`` (Python text) is left as mmengine writes it and never read by
    smilfit. ``tools/train.py`` adds this hook to every run.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._config_data = None

    def before_run(self, runner) -> None:
        self._config_data = config_to_data(runner.cfg)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._config_data is None:
            self._config_data = config_to_data(runner.cfg)
        info = dict(config_data=self._config_data, version=__version__)
        model = unwrap_model(runner.model)
        extras_fn = getattr(model, 'checkpoint_meta', None)
        if callable(extras_fn):
            extras = extras_fn()
            where = f'{type(model).__name__}.checkpoint_meta()'
            if not isinstance(extras, dict):
                raise TypeError(f'{where} returned a {type(extras).__name__}, expected a dict')
            clash = sorted(set(extras) & set(RESERVED_KEYS))
            if clash:
                raise ValueError(f'{where} returned reserved key(s) {clash}; '
                                 f'{list(RESERVED_KEYS)} are set by CheckpointMetaHook')
            info.update(plain_meta(extras, where))
        checkpoint.setdefault('meta', {})['smilfit'] = info
