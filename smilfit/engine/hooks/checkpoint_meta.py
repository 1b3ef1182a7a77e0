"""Put what inference needs into every checkpoint: config text, smilfit version, model extras."""
import os
from numbers import Real
from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook

from smilfit.registry import HOOKS
from smilfit.version import __version__

from .model_access import unwrap_model

RESERVED_KEYS = ('config', 'version')


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

    ``meta['smilfit'] = dict(config=<cfg.pretty_text>, version=<smilfit version>,
    **model.checkpoint_meta())``, the last part only when the (unwrapped) model defines
    ``checkpoint_meta()`` returning a dict (e.g. the body-model file and joint names an
    inference script needs). mmengine itself stores ``meta['cfg']`` too; ``smilfit``
    keeps everything of ours in one place. ``tools/train.py`` adds this hook to every
    run.
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        info = dict(config=runner.cfg.pretty_text, version=__version__)
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
