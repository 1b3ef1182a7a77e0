"""JSON values for numpy data: the encodings smilfit's model format is built from.

JSON has numbers, strings, lists and objects only. Here: dtype names; arrays as
``{"dtype", "shape", "data"}`` with nested row lists (NaN/inf as string tokens in a flat
list, only inside ``extra``); sparse matrices as per-row ``[index, value]`` pairs; and the
tagged values of ``extra`` (numpy arrays and scalars, tuples, bytes, non-finite floats).
Every decoder checks what it reads and raises :class:`ModelFormatError` naming the JSON
field. The document built from them is :mod:`.smil_json`'s.
"""
from __future__ import annotations

import base64
import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..model_data import ModelValidationError

__all__ = ['ModelFormatError']

_NONFINITE_TOKENS = {'NaN': math.nan, 'Infinity': math.inf, '-Infinity': -math.inf}
# Tags that mark non-JSON values inside "extra" (see docs/model_format.md).
_TAGS = ('__ndarray__', '__npscalar__', '__tuple__', '__float__', '__bytes__')


class ModelFormatError(ModelValidationError):
    """A model JSON document is malformed; the message names the JSON field."""


def _fail(source: str, field: str, problem: str) -> ModelFormatError:
    return ModelFormatError(f'{source}: field {field!r}: {problem}')


# ------------------------------------------------------------------- dtypes
def _dtype_name(dtype: np.dtype) -> str:
    """'float32' for native numeric dtypes; the explicit '>f4' / '<U5' form otherwise."""
    if dtype.kind in 'US' or dtype.byteorder not in ('=', '|'):
        return dtype.str
    return dtype.name


def _parse_dtype(value: Any, field: str, source: str, kinds: str) -> np.dtype:
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise _fail(source, field, f'unknown dtype {value!r}') from None
    if dtype.kind not in kinds or (dtype.kind == 'f' and dtype.itemsize > 8):
        raise _fail(source, field, f'dtype {value!r} is not allowed here')
    return dtype


# ------------------------------------------------------------------- arrays
def _float_token(x: float) -> Any:
    return x if math.isfinite(x) else ('NaN' if math.isnan(x) else
                                       'Infinity' if x > 0 else '-Infinity')


def _encode_array(arr: np.ndarray, field: str, kinds: str = 'biuf') -> Dict[str, Any]:
    """``{"dtype", "shape", "data"}`` with ``data`` the nested row lists.

    Arrays holding NaN/inf (only possible inside ``extra``) are written flat with the
    tokens "NaN", "Infinity", "-Infinity" and ``"flat": true``.
    """
    arr = np.asarray(arr)
    if arr.dtype.kind not in kinds or (arr.dtype.kind == 'f' and arr.dtype.itemsize > 8):
        raise ModelFormatError(f'field {field!r}: cannot store dtype {arr.dtype} in JSON')
    out: Dict[str, Any] = {'dtype': _dtype_name(arr.dtype), 'shape': list(arr.shape)}
    if arr.dtype.kind == 'f':
        wide = arr.astype(np.float64)  # exact for float16/float32
        if wide.size and not np.all(np.isfinite(wide)):
            out['flat'] = True
            out['data'] = [_float_token(x) for x in wide.ravel().tolist()]
            return out
        out['data'] = wide.tolist()
    else:
        out['data'] = arr.tolist()
    return out


def _as_dtype(raw: np.ndarray, dtype: np.dtype, field: str, source: str) -> np.ndarray:
    """Cast parsed JSON numbers to ``dtype``, refusing anything that changes a value."""
    if raw.size == 0:
        return raw.astype(dtype)
    kind = raw.dtype.kind
    if dtype.kind == 'f':
        ok = kind in 'fiu'
    elif dtype.kind in 'iu':
        ok = kind in 'iu'
    elif dtype.kind == 'b':
        ok = kind == 'b'
    else:  # strings (extra only)
        ok = kind == 'U'
    if not ok:
        want = {'f': 'numbers', 'i': 'integers', 'u': 'integers', 'b': 'true/false'}
        raise _fail(source, field, f'expected {want.get(dtype.kind, "strings")} for dtype '
                                   f'{dtype}, found values of kind {raw.dtype}')
    out = raw.astype(dtype)
    if dtype.kind in 'iu' and not np.array_equal(out, raw):
        raise _fail(source, field, f'integer value out of range for dtype {dtype}')
    return out


def _decode_array(obj: Any, field: str, source: str, default_dtype: str,
                  ndim: Optional[int] = None, kinds: str = 'biuf') -> np.ndarray:
    """Read an array field: ``{"dtype", "shape", "data"}`` or a bare nested list."""
    shape: Optional[Tuple[int, ...]] = None
    flat = False
    if isinstance(obj, list):
        dtype, data = np.dtype(default_dtype), obj
    elif isinstance(obj, dict):
        unknown = set(obj) - {'dtype', 'shape', 'data', 'flat'}
        if unknown:
            raise _fail(source, field, f'unknown key(s) {sorted(unknown)}')
        if 'data' not in obj:
            raise _fail(source, field, "missing 'data'")
        dtype = _parse_dtype(obj.get('dtype', default_dtype), f'{field}.dtype', source, kinds)
        data, flat = obj['data'], bool(obj.get('flat', False))
        if 'shape' in obj:
            s = obj['shape']
            if not (isinstance(s, list) and all(isinstance(n, int) and n >= 0 for n in s)):
                raise _fail(source, f'{field}.shape', 'must be a list of non-negative integers')
            shape = tuple(s)
    else:
        raise _fail(source, field, f'expected an array object or a list, got '
                                   f'{type(obj).__name__}')
    if flat:
        if not isinstance(data, list) or shape is None:
            raise _fail(source, field, "a 'flat' array needs a list 'data' and a 'shape'")
        try:
            data = [_NONFINITE_TOKENS[x] if isinstance(x, str) else x for x in data]
        except KeyError as e:
            raise _fail(source, field, f'unknown token {e.args[0]!r}') from None
    try:
        raw = np.asarray(data)
    except ValueError as e:  # ragged rows
        raise _fail(source, field, f'rows of unequal length ({e})') from None
    if raw.dtype == object:
        raise _fail(source, field, 'rows of unequal length or mixed value types')
    arr = _as_dtype(raw, dtype, field, source)
    if shape is not None:
        if arr.shape != shape:
            if arr.size == 0 and int(np.prod(shape)) == 0 or flat and arr.size == np.prod(shape):
                arr = arr.reshape(shape)
            else:
                raise _fail(source, field, f"'data' has shape {arr.shape}, 'shape' says {shape}")
    if ndim is not None and arr.ndim != ndim:
        if arr.size == 0 and shape is None:
            raise _fail(source, field, f"an empty array needs a 'shape' ({ndim}-D)")
        raise _fail(source, field, f'expected a {ndim}-D array, got shape {arr.shape}')
    return arr


def _encode_sparse_rows(mat: np.ndarray) -> List[List[List[Any]]]:
    """Row i -> ``[[column, value], ...]`` for entries != 0 (and -0.0, kept for exactness)."""
    wide = mat.astype(np.float64) if mat.dtype.kind == 'f' else mat
    mask = (mat != 0) | (np.signbit(mat) if mat.dtype.kind == 'f' else False)
    rows, cols = np.nonzero(mask)
    values = wide[rows, cols].tolist()
    pairs = [[c, v] for c, v in zip(cols.tolist(), values)]
    bounds = np.searchsorted(rows, np.arange(mat.shape[0] + 1)).tolist()
    return [pairs[bounds[i]:bounds[i + 1]] for i in range(mat.shape[0])]


def _decode_sparse_rows(rows: Any, shape: Tuple[int, int], dtype: np.dtype, field: str,
                        source: str, what: str) -> np.ndarray:
    """Inverse of :func:`_encode_sparse_rows`: ``shape[0]`` rows of ``[column, value]``."""
    n_rows, n_cols = shape
    if not isinstance(rows, list) or len(rows) != n_rows:
        got = len(rows) if isinstance(rows, list) else type(rows).__name__
        raise _fail(source, field, f'expected a list of {n_rows} rows, got {got}')
    counts = [len(r) if isinstance(r, list) else -1 for r in rows]
    if -1 in counts:
        raise _fail(source, f'{field}[{counts.index(-1)}]', 'expected a list of pairs')
    flat = [p for r in rows for p in r]
    out = np.zeros((n_rows, n_cols), dtype=dtype)
    if not flat:
        return out
    try:
        pairs = np.asarray(flat, dtype=np.float64)
    except (ValueError, TypeError):
        raise _fail(source, field, f'every entry must be a [{what}, weight] pair of numbers') \
            from None
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise _fail(source, field, f'every entry must be a [{what}, weight] pair')
    row = np.repeat(np.arange(n_rows), counts)
    col = pairs[:, 0]
    if np.any(col != np.round(col)) or col.min() < 0 or col.max() >= n_cols:
        bad = int(np.flatnonzero((col != np.round(col)) | (col < 0) | (col >= n_cols))[0])
        raise _fail(source, f'{field}[{int(row[bad])}]',
                    f'{what} index {flat[bad][0]!r} is not an integer in [0, {n_cols})')
    col = col.astype(np.int64)
    flat_index = row * n_cols + col
    order = np.argsort(flat_index, kind='stable')
    repeated = np.flatnonzero(flat_index[order][1:] == flat_index[order][:-1])
    if repeated.size:  # silently summing or overwriting would hide an editing mistake
        k = int(order[repeated[0] + 1])
        raise _fail(source, f'{field}[{int(row[k])}]', f'{what} {int(col[k])} is listed twice')
    out[row, col] = pairs[:, 1].astype(dtype)
    return out


# -------------------------------------------------------------------- extra
def _encode_extra(obj: Any, field: str) -> Any:
    """Plain JSON values pass through; numpy/tuple/bytes/non-finite values get a tag."""
    # numpy first: np.float64 and np.str_ subclass float and str but must come back as numpy.
    if isinstance(obj, np.ndarray):
        enc = _encode_array(obj, field, kinds='biufU')
        return {'__ndarray__': enc.pop('dtype'), **enc}
    if isinstance(obj, np.generic):
        enc = _encode_array(np.asarray(obj), field, kinds='biufU')
        return {'__npscalar__': enc['dtype'], 'value': enc['data'][0] if enc.get('flat')
                else enc['data']}
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {'__float__': _float_token(obj)}
    if type(obj) is bytes:
        return {'__bytes__': base64.b64encode(obj).decode('ascii')}
    if isinstance(obj, tuple):
        return {'__tuple__': [_encode_extra(v, f'{field}[{i}]') for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode_extra(v, f'{field}[{i}]') for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ModelFormatError(f'field {field!r}: dict key {k!r} is not a string; '
                                       'JSON can only store string keys')
            if k in _TAGS:
                raise ModelFormatError(f'field {field!r}: key {k!r} is reserved by the format')
            out[k] = _encode_extra(v, f'{field}.{k}')
        return out
    raise ModelFormatError(f'field {field!r}: cannot store a {type(obj).__name__} in JSON '
                           '(extra values must be numbers, strings, lists, dicts, tuples, '
                           'bytes or numpy arrays)')


def _decode_extra(obj: Any, field: str, source: str) -> Any:
    if isinstance(obj, list):
        return [_decode_extra(v, f'{field}[{i}]', source) for i, v in enumerate(obj)]
    if not isinstance(obj, dict):
        return obj
    tags = [t for t in _TAGS if t in obj]
    if not tags:
        return {k: _decode_extra(v, f'{field}.{k}', source) for k, v in obj.items()}
    tag = tags[0]
    if tag == '__ndarray__':
        body = {k: v for k, v in obj.items() if k != tag}
        return _decode_array({**body, 'dtype': obj[tag]}, field, source, 'float64',
                             kinds='biufU')
    if tag == '__npscalar__':
        body = {'dtype': obj[tag], 'shape': [], 'data': obj.get('value')}
        kind = _parse_dtype(obj[tag], field, source, 'biufU').kind
        if kind == 'f' and isinstance(body['data'], str):  # "NaN" / "Infinity" token
            body.update(data=[body['data']], flat=True)
        return _decode_array(body, field, source, 'float64', kinds='biufU')[()]
    if tag == '__tuple__':
        return tuple(_decode_extra(v, f'{field}[{i}]', source) for i, v in enumerate(obj[tag]))
    if tag == '__float__':
        if obj[tag] not in _NONFINITE_TOKENS:
            raise _fail(source, field, f'unknown __float__ token {obj[tag]!r}')
        return _NONFINITE_TOKENS[obj[tag]]
    return base64.b64decode(obj[tag])


def _plain(obj: Any, field: str) -> Any:
    """numpy scalars/arrays inside keypoint definitions -> plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v, f'{field}.{k}') for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v, f'{field}[{i}]') for i, v in enumerate(list(obj))]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ModelFormatError(f'field {field!r}: cannot store a {type(obj).__name__}')
