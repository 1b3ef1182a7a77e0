"""A last-value memo keyed on tensor identity and contents.

An optimiser evaluates a handler or loss many times on the same observations: the parts
that depend on the observations only (which entries count, their weights, the gathered
targets) are the same every time. :class:`TensorMemo` keeps the last such value while
the tensors it came from are the same objects with the same contents.
"""
from __future__ import annotations

from typing import Callable, Hashable, Optional, Sequence, TypeVar

import torch

T = TypeVar('T')


def _transforms_active() -> bool:
    """Inside ``vmap``/``jvp`` or while ``torch.compile`` traces (object ids are not
    values there)."""
    compiling = getattr(torch.compiler, 'is_compiling', None)
    if compiling is not None and compiling():
        return True
    query = getattr(torch._C, '_are_functorch_transforms_active', None)
    return True if query is None else bool(query())


class TensorMemo:
    """The value last computed from some tensors (and hashable settings), reused while
    they are the same tensor objects at the same version (an in-place write, also through
    a view, bumps a tensor's version counter) and the settings are equal.

    The tensors are held while their value is, so their ids cannot be reused by others.
    Nothing is memoised when an input requires grad, inside a function transform
    (``vmap``, ``jvp``; the value may carry a graph or wrapped tensors there) or while
    ``torch.compile`` traces. Callers must not modify a returned value in place.
    """

    def __init__(self) -> None:
        self._key = None
        self._inputs: Sequence[Optional[torch.Tensor]] = ()
        self._value = None

    def __call__(self, tensors: Sequence[Optional[torch.Tensor]], settings: Hashable,
                 compute: Callable[[], T]) -> T:
        """``compute()``, or its value from the last call with the same ``tensors``
        (``None`` entries allowed) and ``settings``."""
        if any(t is not None and t.requires_grad for t in tensors) or _transforms_active():
            return compute()
        key = (tuple(None if t is None else (id(t), t._version) for t in tensors), settings)
        if self._key is not None and self._key == key:
            return self._value
        value = compute()
        self._key, self._inputs, self._value = key, tuple(tensors), value
        return value

    def clear(self) -> None:
        """Drop the value and the tensors held for it."""
        self._key, self._inputs, self._value = None, (), None


__all__ = ['TensorMemo']
