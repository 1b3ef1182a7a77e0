"""Checks of what :meth:`~.writer.DatasetWriter.add_samples` is given, before anything is
written: every key known and of the schema's shape, the documented defaults filled in, the
missing-point invariants held (:func:`validate_samples`)."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .schema import _STR, REQUIRED_KEYS, SAMPLE_FIELDS, DatasetFormatError


def trailing_shape(spec: Tuple[Any, ...], num_views: int, num_keypoints: int
                   ) -> Tuple[int, ...]:
    """A field's per-sample shape: its schema ``spec`` with ``'C'`` and ``'K'`` filled in."""
    sizes = {'C': num_views, 'K': num_keypoints}
    return tuple(sizes.get(d, d) for d in spec)


def validate_samples(samples: Mapping[str, Any], num_views: int, num_keypoints: int,
                     num_sessions: int):
    """A batch of samples as the arrays the writer stores.

    Returns:
        ``(arrays, images, masks, params)``: the per-sample fields (schema dtypes,
        defaults filled in), the image and mask bytes (B lists of C, or None) and the
        ``params`` arrays (float32, (B, ...)).

    Raises:
        DatasetFormatError: see :meth:`~.writer.DatasetWriter.add_samples`.
    """
    missing = [k for k in REQUIRED_KEYS if k not in samples]
    if missing:
        raise DatasetFormatError(f'add_samples: missing keys {missing}')
    unknown = sorted(set(samples) - set(SAMPLE_FIELDS) - {'params'})
    if unknown:
        raise DatasetFormatError(f'add_samples: unknown keys {unknown} (known: '
                                 f'{sorted(SAMPLE_FIELDS) + ["params"]})')
    b = int(np.asarray(samples['session']).shape[0])
    c = num_views
    arrays: Dict[str, np.ndarray] = {}

    def take(key: str, default: Any = None) -> None:
        path, spec, dtype = SAMPLE_FIELDS[key]
        value = samples.get(key)
        if value is None:
            value = default
        if dtype is _STR:
            arr = np.asarray(value, dtype=object).astype(str).astype(object)
        else:
            arr = np.asarray(value)
            if dtype != np.bool_ and arr.dtype.kind in 'fiub':
                arr = arr.astype(dtype)
            elif dtype == np.bool_:
                arr = arr.astype(np.bool_)
        expect = (b,) + trailing_shape(spec, num_views, num_keypoints)
        if arr.shape != expect:
            raise DatasetFormatError(
                f"add_samples: '{key}' has shape {arr.shape}; expected "
                f"(N, {', '.join(map(str, spec))}) = {expect}")
        arrays[key] = arr

    take('session')
    take('frame')
    take('instance', np.zeros(b, np.int32))
    take('track', np.full(b, '', dtype=object))
    take('valid')
    take('calibrated', np.ones((b, c), bool))
    take('keypoints_2d')
    take('confidence')
    kp_finite = np.isfinite(arrays['keypoints_2d']).all(-1)
    take('visible', kp_finite & (arrays['confidence'] > 0))
    take('K')
    take('dist', np.zeros((b, c, 5)))
    take('R')
    take('t')
    take('image_size')
    take('crop', np.broadcast_to(np.eye(3), (b, c, 3, 3)))
    if samples.get('keypoints_3d') is not None:
        take('keypoints_3d')
    s = arrays['session']
    if b and (s.min() < 0 or s.max() >= num_sessions):
        raise DatasetFormatError(f'add_samples: session index out of range [0, '
                                 f'{num_sessions}): {np.unique(s).tolist()}')
    if np.any(arrays['visible'] & ~kp_finite):
        raise DatasetFormatError("add_samples: 'visible' is True where 'keypoints_2d' "
                                 'is NaN/inf')
    if np.any((arrays['confidence'] != 0) & ~kp_finite):
        raise DatasetFormatError("add_samples: 'confidence' must be 0 where "
                                 "'keypoints_2d' is missing (NaN)")
    images = check_blobs(samples.get('images'), 'images', b, c)
    masks = check_blobs(samples.get('masks'), 'masks', b, c)
    params: Dict[str, np.ndarray] = {}
    for name, value in (samples.get('params') or {}).items():
        arr = np.asarray(value, dtype=np.float32)
        if arr.ndim < 1 or arr.shape[0] != b:
            raise DatasetFormatError(f"add_samples: params['{name}'] has shape "
                                     f'{arr.shape}; expected ({b}, ...)')
        params[str(name)] = arr
    return arrays, images, masks, params


def check_blobs(blobs: Optional[Sequence[Sequence[bytes]]], key: str, b: int,
                c: int) -> Optional[List[List[bytes]]]:
    """``images`` or ``masks`` as B lists of C bytes (``b''`` for None), or None."""
    if blobs is None:
        return None
    if len(blobs) != b or any(len(row) != c for row in blobs):
        raise DatasetFormatError(f"add_samples: '{key}' must be {b} lists of {c} bytes "
                                 '(b"" where there is none)')
    return [[bytes(x) if x is not None else b'' for x in row] for row in blobs]


__all__ = ['trailing_shape', 'validate_samples', 'check_blobs']
