"""A regressor's constructor options, checked before anything is built
(:func:`check_options`, :func:`compile_options`), and its parts built from configs or
taken as built (:func:`build_part`, :func:`build_data_preprocessor`)."""
from __future__ import annotations

import copy
from typing import Any, Mapping, Optional, Union

from torch import nn

from smilfit.losses.param_supervision import ROTATION_LOSSES
from smilfit.registry import MODELS
from smilfit.registry.build import build_module

ModuleSpec = Union[dict, nn.Module]


def build_part(registry, spec: ModuleSpec, what: str, **defaults: Any) -> nn.Module:
    """A part of the regressor: ``spec`` built from ``registry`` (a copy, so building never
    changes the caller's config; ``defaults`` fill in keys it does not set), or the module
    itself when it is built already (:func:`smilfit.registry.build.build_module`)."""
    if isinstance(spec, Mapping):
        spec = copy.deepcopy(dict(spec))
    return build_module(registry, spec, what, defaults)


def build_data_preprocessor(spec: Optional[Union[dict, nn.Module]]) -> nn.Module:
    """The data preprocessor: ``RegressionDataPreprocessor`` by default, a ``MODELS``
    config built, or a module as it is."""
    if spec is None:
        spec = dict(type='RegressionDataPreprocessor')
    return build_module(MODELS, spec, 'data preprocessor')


def check_options(num_views: int, supervise_iterations: str, rotation_loss: str) -> int:
    """Check the options that need nothing built; return ``num_views`` as an int.

    Raises:
        ValueError: ``supervise_iterations`` is not ``'all'``/``'last'``, ``num_views``
            < 1 or ``rotation_loss`` is not one of ``ROTATION_LOSSES``.
    """
    if supervise_iterations not in ('all', 'last'):
        raise ValueError(f"supervise_iterations must be 'all' or 'last', got "
                         f'{supervise_iterations!r}')
    views = int(num_views)
    if views < 1:
        raise ValueError(f'num_views must be >= 1, got {num_views}')
    if rotation_loss not in ROTATION_LOSSES:
        raise ValueError(f'rotation_loss must be one of {ROTATION_LOSSES}, got '
                         f'{rotation_loss!r}')
    return views


def check_rotation_codec(rotation_loss: str, rotation: str) -> None:
    """``rotation_loss='raw_6d'`` compares the head's raw 6D output: the body codec's
    ``rotation`` must be ``'6d'``."""
    if rotation_loss == 'raw_6d' and rotation != '6d':
        raise ValueError("rotation_loss='raw_6d' needs param_codec=dict(rotation='6d'), "
                         f'got rotation={rotation!r}')


def compile_options(compile_loss: Union[bool, Mapping[str, Any]]) -> Optional[dict]:
    """``compile_loss`` as ``torch.compile`` keywords (``{}`` for True), None when off.

    What is compiled runs after the backbone in training (``mode='loss'``): the head and
    the scoring of its iterations (decode, body model, losses); e.g.
    ``dict(mode='max-autotune-no-cudagraphs')``. On a GPU these are a few thousand small
    kernels whose launches, not arithmetic, bound a step; compiled, they fuse into a few
    hundred (``benchmarks/train_throughput.py --compile-loss``). The first training steps
    compile (tens of seconds); prediction stays eager. The backbone is compiled by the
    training config's ``compile=True`` (mmengine), which compiles the whole model instead.
    """
    if not isinstance(compile_loss, (bool, Mapping)):
        raise TypeError(f'compile_loss must be a bool or a dict of torch.compile options, '
                        f'got {type(compile_loss).__name__}')
    return dict(compile_loss) if isinstance(compile_loss, Mapping) else \
        ({} if compile_loss else None)


__all__ = ['ModuleSpec', 'build_part', 'build_data_preprocessor', 'check_options',
           'check_rotation_codec', 'compile_options']
