"""Reading the fields of one predicted sample (the metric contract), with named errors.

A sample is a dict (or an mmengine data element, converted with ``to_dict``) holding
torch tensors or numpy arrays; see ``docs/metrics.md`` for the keys.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from smilfit.evaluation.functional.arrays import to_numpy


def as_mapping(sample: Any, where: str) -> Mapping:
    """The sample as a mapping (mmengine data elements are converted with ``to_dict``)."""
    if isinstance(sample, Mapping):
        return sample
    if hasattr(sample, 'to_dict'):
        return sample.to_dict()
    raise TypeError(f'{where}: expected a dict of predictions and ground truth, got '
                    f'{type(sample).__name__}')


def describe_sample(sample: Mapping, position: int) -> str:
    """A name for error messages: position in the batch plus sample_idx/session/frame."""
    parts = [f'sample {position} of the batch']
    for key in ('sample_idx', 'session', 'frame'):
        if key in sample and sample[key] is not None:
            value = sample[key]
            if hasattr(value, 'tolist'):
                value = value.tolist()
            parts.append(f'{key}={value}')
    return ' '.join(parts[:1]) + (f' ({", ".join(parts[1:])})' if len(parts) > 1 else '')


def get_array(sample: Mapping, key: str, where: str, ndim: Sequence[int],
              last: Optional[int] = None, dtype: Any = np.float64,
              required: bool = True) -> Optional[np.ndarray]:
    """``sample[key]`` as numpy, checking its rank (one of ``ndim``) and last axis size.

    Returns None when the key is absent or None and ``required`` is False.
    """
    value = sample.get(key)
    if value is None:
        if required:
            raise KeyError(f'{where} has no {key!r}; keys present: {sorted(sample)}')
        return None
    array = to_numpy(value, f'{where}: {key}', dtype=dtype)
    if array.ndim not in tuple(ndim) or (last is not None and array.shape[-1] != last):
        expected = ' or '.join(f'{d}-D' for d in ndim)
        tail = f' with last axis {last}' if last is not None else ''
        raise ValueError(f'{where}: {key} has shape {array.shape}, expected {expected}{tail}')
    return array


def sample_meta(sample: Mapping) -> dict:
    """``session`` (str, '' if absent), ``frame`` and ``sample_idx`` (int, -1 if absent)."""
    def _int(value) -> int:
        try:
            return int(to_numpy(value, 'meta', dtype=None).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            return -1
    session = sample.get('session')
    return dict(session='' if session is None else str(session),
                frame=_int(sample['frame']) if sample.get('frame') is not None else -1,
                sample_idx=(_int(sample['sample_idx'])
                            if sample.get('sample_idx') is not None else -1))


def stack_padded(arrays: Sequence[np.ndarray], fill: Any) -> np.ndarray:
    """Stack arrays that may differ in their first axis (views), padding with ``fill``.

    Raises:
        ValueError: the arrays differ in any other axis (e.g. the number of joints).
    """
    arrays = [np.asarray(a) for a in arrays]
    tails = {a.shape[1:] for a in arrays}
    if len(tails) > 1:
        raise ValueError(f'samples disagree in shape beyond the view axis: {sorted(tails)} '
                         f'(e.g. a different number of keypoints)')
    length = max(a.shape[0] for a in arrays) if arrays else 0
    if all(a.shape[0] == length for a in arrays):
        return np.stack(arrays)
    dtype = np.result_type(*arrays)  # e.g. the longest string among camera labels
    out = np.full((len(arrays), length) + arrays[0].shape[1:], fill, dtype=dtype)
    for i, a in enumerate(arrays):
        out[i, :a.shape[0]] = a
    return out
