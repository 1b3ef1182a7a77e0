"""Read a legacy model pickle safely into a plain dict of numpy arrays.

The file is unpickled by :class:`~.restricted_unpickler.RestrictedUnpickler`; the inert
chumpy and scipy sparse stubs it leaves are then replaced by arrays: a chumpy ``Ch`` by
its stored value, a sparse matrix by its dense form. What cannot be converted (a chumpy
expression without a stored value, a malformed sparse matrix, a top level that is not a
dict) raises :class:`LegacyModelError`.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, Tuple, Union

import numpy as np

from ...errors import SmilfitUserError
from .restricted_unpickler import (ChumpyStub, RestrictedUnpickler, SparseStub,
                                   UnsafePickleError, _StateStub)

__all__ = ['LegacyModelError', 'read_legacy_pickle']

PathLike = Union[str, 'os.PathLike[str]']


class LegacyModelError(SmilfitUserError, ValueError):
    """A legacy model file is readable but holds something smilfit cannot convert."""


# ----------------------------------------------------------------- conversion
def _sparse_to_dense(stub: SparseStub, where: str) -> np.ndarray:
    """Densify a scipy sparse stub from its pickled state (duplicates are summed)."""
    state = stub.state
    if not isinstance(state, dict):
        raise LegacyModelError(f'{where}: scipy sparse object {stub._source} has no state dict')
    shape = state.get('_shape', state.get('shape'))
    try:
        rows, cols = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise LegacyModelError(f'{where}: sparse matrix shape {shape!r} is not 2-D') from None
    if rows < 0 or cols < 0:
        raise LegacyModelError(f'{where}: sparse matrix shape {shape!r} is negative')

    def get(name: str, integer: bool) -> np.ndarray:
        value = state.get(name)
        if not isinstance(value, np.ndarray) or value.ndim != 1 or (
                integer and value.dtype.kind not in 'iu'):
            raise LegacyModelError(f'{where}: sparse matrix field {name!r} is missing or '
                                   f'not a 1-D {"integer " if integer else ""}array')
        return value

    data = get('data', False)
    fmt = stub._format
    if fmt == 'coo':
        if 'coords' in state:  # scipy >= 1.13
            coords = state['coords']
            if not (isinstance(coords, tuple) and len(coords) == 2):
                raise LegacyModelError(f'{where}: coo matrix coords must be a (row, col) pair')
            state = {**state, 'row': coords[0], 'col': coords[1]}
        row, col = get('row', True), get('col', True)
    else:
        indptr, indices = get('indptr', True), get('indices', True)
        major = cols if fmt == 'csc' else rows
        if indptr.shape[0] != major + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0) \
                or indptr[-1] != indices.shape[0]:
            raise LegacyModelError(f'{where}: inconsistent sparse {fmt} index pointer')
        outer = np.repeat(np.arange(major), np.diff(indptr))
        row, col = (indices, outer) if fmt == 'csc' else (outer, indices)
    if not (row.shape == col.shape == data.shape):
        raise LegacyModelError(f'{where}: sparse matrix index/data lengths differ')
    if row.size and (row.min() < 0 or row.max() >= rows or col.min() < 0 or col.max() >= cols):
        raise LegacyModelError(f'{where}: sparse matrix index out of range for shape {shape}')
    dense = np.zeros((rows, cols), dtype=data.dtype)
    np.add.at(dense, (row.astype(np.int64), col.astype(np.int64)), data)
    return dense


def _chumpy_to_array(stub: ChumpyStub, where: str, convert: Callable[[Any, str], Any]) -> Any:
    """A terminal ``Ch`` holds its value under ``'x'``; derived expressions cannot be evaluated."""
    state = stub.state
    name = type(stub).__name__
    if name == 'Ch' and isinstance(state, dict) and 'x' in state:
        value = convert(state['x'], where)
        if isinstance(value, np.ndarray):
            return value
        if isinstance(value, (int, float, np.number)):
            return np.asarray(value)
        raise LegacyModelError(f'{where}: chumpy.Ch value is a {type(value).__name__}, '
                               'not an array')
    keys = sorted(state) if isinstance(state, dict) else []
    raise LegacyModelError(
        f'{where}: holds a chumpy expression ({stub._source}, state keys {keys[:8]}) whose '
        "value is not stored in the file (only chumpy.Ch objects with an 'x' array are); "
        'convert it to a numpy array with chumpy installed (np.asarray(value)) and re-save')


def _convert_stubs(obj: Any, where: str, sources: Dict[str, str], top_key: str) -> Any:
    """Replace stubs by numpy arrays throughout containers; record what was converted."""
    memo: Dict[int, Any] = {}

    def convert(value: Any, path: str) -> Any:
        if id(value) in memo:
            return memo[id(value)]
        if isinstance(value, SparseStub):
            out: Any = _sparse_to_dense(value, path)
            sources.setdefault(top_key, value._source)
        elif isinstance(value, ChumpyStub):
            out = _chumpy_to_array(value, path, convert)
            sources.setdefault(top_key, value._source)
        elif isinstance(value, list):
            out = []
            memo[id(value)] = out  # before recursing: self-referencing lists
            out.extend(convert(v, f'{path}[{i}]') for i, v in enumerate(value))
        elif isinstance(value, tuple):
            out = tuple(convert(v, f'{path}[{i}]') for i, v in enumerate(value))
        elif isinstance(value, dict):
            out = {}
            memo[id(value)] = out
            for k, v in value.items():
                out[k] = convert(v, f'{path}[{k!r}]')
        elif isinstance(value, _StateStub):  # pragma: no cover - all stubs handled above
            raise LegacyModelError(f'{path}: unexpected {value!r}')
        else:
            out = value
        memo[id(value)] = out
        return out

    return convert(obj, where)


def _printable(err: Exception, limit: int = 120) -> str:
    """``err``'s message as one printable line of at most ``limit`` characters: the
    unpickler's messages quote the file's bytes, which in a corrupt file are anything."""
    text = ''.join(c if c.isprintable() else ascii(c)[1:-1] for c in str(err))
    return text if len(text) <= limit else text[:limit] + '...'


def _read_with_sources(path: PathLike) -> Tuple[Dict[str, Any], Dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'model file not found: {path}')
    with open(path, 'rb') as f:
        try:
            raw = RestrictedUnpickler(f, source=str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError,
                TypeError, AttributeError, UnicodeDecodeError, OverflowError,
                MemoryError) as err:
            # Truncated or corrupt files fail inside the unpickler with many types; a
            # corrupt length field asks for more bytes than exist (OverflowError beyond
            # the address space, MemoryError below it).
            raise LegacyModelError(f'{path}: not a readable model pickle, truncated or '
                                   f'corrupt ({type(err).__name__}: {_printable(err)})'
                                   ) from None
    if not isinstance(raw, dict):
        raise LegacyModelError(f'{path}: expected a pickled dict of model arrays, '
                               f'got {type(raw).__name__}')
    sources: Dict[str, str] = {}
    out: Dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise LegacyModelError(f'{path}: dict key {key!r} is not a string')
        try:
            out[key] = _convert_stubs(value, f'{path}: key {key!r}', sources, key)
        except RecursionError:
            raise LegacyModelError(f'{path}: key {key!r} is nested too deeply to be model '
                                   'data (a corrupt or crafted file)') from None
    return out, sources


def read_legacy_pickle(path: PathLike) -> Dict[str, Any]:
    """Read a legacy model pickle safely.

    Args:
        path: a ``.pkl`` file holding a dict (SMPL/SMAL/SMIL layout), any protocol,
            written by Python 2 or 3, numpy 1 or 2.

    Returns:
        The dict, in file order, with chumpy ``Ch`` objects replaced by their value
        arrays and scipy sparse matrices by dense numpy arrays.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the file names a global outside the allow-list.
        LegacyModelError: a chumpy expression without a stored value, a malformed
            sparse matrix, or a top level that is not a dict.
    """
    return _read_with_sources(path)[0]
