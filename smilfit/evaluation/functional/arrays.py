"""Conversion of torch tensors / numpy arrays / lists to numpy, with named errors."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np


def to_numpy(value: Any, name: str = 'array', dtype: Optional[Any] = np.float64) -> np.ndarray:
    """``value`` (torch tensor, numpy array, list, scalar) as a numpy array.

    Torch tensors are detached and moved to the CPU (so CUDA tensors and tensors that
    require grad are accepted). ``dtype=None`` keeps the input's dtype.

    Raises:
        TypeError: ``value`` is None or cannot be converted; the message names ``name``.
    """
    if value is None:
        raise TypeError(f'{name} is None; expected an array')
    if hasattr(value, 'detach') and hasattr(value, 'cpu'):  # torch.Tensor without importing torch
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise TypeError(f'{name} cannot be converted to a numpy array: {e}') from None
    return array


def check_shape(array: np.ndarray, expected: Sequence[Optional[int]], name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``array.shape`` matches ``expected``.

    ``expected`` holds ints or None (any size) per axis.
    """
    shape = array.shape
    if len(shape) != len(expected) or any(e is not None and s != e
                                          for s, e in zip(shape, expected)):
        pretty = '(' + ', '.join('*' if e is None else str(e) for e in expected) + ')'
        raise ValueError(f'{name} has shape {tuple(shape)}, expected {pretty}')
