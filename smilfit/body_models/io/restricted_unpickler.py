"""The allow-list unpickler for legacy model pickles: nothing a file names is ever run.

Legacy model files are Python pickles of a dict in the SMPL layout. Unpickling runs
whatever callables the file names, so a plain ``pickle.load`` of a downloaded model is
arbitrary code execution. :class:`RestrictedUnpickler` resolves only an explicit
allow-list of globals (numpy array reconstruction, a few inert builtins) and maps
chumpy and scipy sparse classes to inert stubs that only collect their pickled state;
everything else raises :class:`UnsafePickleError` before anything is called.

This module is the whole of what a file can make smilfit construct; turning the stubs
into arrays is :mod:`.legacy_reader`'s job.
"""
from __future__ import annotations

import _compat_pickle
import io
import pickle
from typing import Any, Dict, Tuple

import numpy as np

from ...errors import SmilfitUserError

__all__ = ['UnsafePickleError', 'RestrictedUnpickler', 'ChumpyStub', 'SparseStub']

# numpy moved its internals from numpy.core to numpy._core in 2.0; files written by
# either version name their own path, so both names map to the installed functions.
try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _np_numeric  # type: ignore[no-redef]


class UnsafePickleError(SmilfitUserError, pickle.UnpicklingError):
    """A pickle names a global outside the allow-list; nothing from it was executed."""


# ---------------------------------------------------------------------- stubs
class _StateStub:
    """Inert stand-in for a foreign class: records constructor args and pickled state."""

    _source = '?'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args
        self._kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        # BUILD passes either a dict or (dict, slot_dict); keep both merged.
        if isinstance(state, tuple) and len(state) == 2 and (
                state[0] is None or isinstance(state[0], dict)) and (
                state[1] is None or isinstance(state[1], dict)):
            merged: Dict[str, Any] = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        self.__dict__['_state'] = state

    @property
    def state(self) -> Any:
        return self.__dict__.get('_state')

    def __repr__(self) -> str:
        return f'<stub of {self._source}>'


class ChumpyStub(_StateStub):
    """Stand-in for any ``chumpy`` class; chumpy itself is never imported."""


class SparseStub(_StateStub):
    """Stand-in for a scipy sparse matrix/array; ``_format`` is 'csc', 'csr' or 'coo'."""

    _format = '?'


_STUB_CACHE: Dict[Tuple[str, str], type] = {}


def _stub_class(base: type, module: str, name: str, **attrs: Any) -> type:
    key = (module, name)
    if key not in _STUB_CACHE:
        _STUB_CACHE[key] = type(name, (base,), {'_source': f'{module}.{name}',
                                                '__module__': __name__, **attrs})
    return _STUB_CACHE[key]


_SPARSE_FORMATS = ('csc', 'csr', 'coo')
# Every module path scipy has used for these classes (scipy < 1.8: scipy.sparse.csc,
# 1.8+: scipy.sparse._csc; sparse arrays: scipy.sparse._arrays in 1.8-1.10).
_SPARSE_GLOBALS: Dict[Tuple[str, str], str] = {}
for _fmt in _SPARSE_FORMATS:
    for _mod in ('scipy.sparse', f'scipy.sparse.{_fmt}', f'scipy.sparse._{_fmt}',
                 'scipy.sparse._arrays'):
        for _cls in (f'{_fmt}_matrix', f'{_fmt}_array'):
            _SPARSE_GLOBALS[(_mod, _cls)] = _fmt
del _fmt, _mod, _cls


_NUMPY_GLOBALS: Dict[Tuple[str, str], Any] = {}
for _core in ('numpy.core', 'numpy._core'):
    _NUMPY_GLOBALS[(f'{_core}.multiarray', '_reconstruct')] = _np_multiarray._reconstruct
    _NUMPY_GLOBALS[(f'{_core}.multiarray', 'scalar')] = _np_multiarray.scalar
    _NUMPY_GLOBALS[(f'{_core}.numeric', '_frombuffer')] = _np_numeric._frombuffer
del _core
_NUMPY_GLOBALS[('numpy', 'ndarray')] = np.ndarray
_NUMPY_GLOBALS[('numpy', 'dtype')] = np.dtype

# Inert builtins that plain values pickle through at protocol < 3 (Python 3 writes an
# empty bytes as ``bytes()``, sets as ``set([...])``).
_BUILTIN_NAMES = {'object': object, 'set': set, 'frozenset': frozenset, 'bytes': bytes,
                  'bytearray': bytearray, 'complex': complex}
_LATIN1_NAMES = ('latin1', 'latin-1', 'latin_1', 'iso-8859-1', 'iso8859-1', 'l1')


def _describe_global(module: str, name: str) -> str:
    """'module.name', plus the Python 3 spelling for Python 2 names (__builtin__.eval)."""
    py3 = _compat_pickle.NAME_MAPPING.get((module, name))
    if py3 is None and module in _compat_pickle.IMPORT_MAPPING:
        py3 = (_compat_pickle.IMPORT_MAPPING[module], name)
    text = f'{module}.{name}'
    if py3 is not None and py3 != (module, name):
        text += f' (Python 3: {py3[0]}.{py3[1]})'
    return text


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals (see module docstring).

    Args:
        file: binary file object to read from.
        source: file name used in error messages.
    """

    def __init__(self, file: io.BufferedIOBase, source: str = '<stream>') -> None:
        # latin1 lets Python-2 str objects (numpy buffers) through byte for byte.
        super().__init__(file, encoding='latin1')
        self.source = source

    def _refuse(self, what: str, why: str = 'not in the allow-list') -> UnsafePickleError:
        return UnsafePickleError(
            f'{self.source}: refusing to load {what} ({why}); legacy model pickles may '
            'only contain numpy arrays, plain containers, chumpy arrays and scipy '
            'sparse matrices')

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _NUMPY_GLOBALS:
            if name == '_reconstruct':
                return self._reconstruct_array
            return _NUMPY_GLOBALS[key]
        if module in ('builtins', '__builtin__') and name in _BUILTIN_NAMES:
            return _BUILTIN_NAMES[name]
        if key in (('copy_reg', '_reconstructor'), ('copyreg', '_reconstructor')):
            return self._copyreg_reconstructor
        if key == ('_codecs', 'encode'):
            return self._codecs_encode
        if key in _SPARSE_GLOBALS:
            return _stub_class(SparseStub, module, name, _format=_SPARSE_GLOBALS[key])
        if (module == 'chumpy' or module.startswith('chumpy.')) and name.isidentifier():
            return _stub_class(ChumpyStub, module, name)
        raise self._refuse(f'global {_describe_global(module, name)}')

    def _reconstruct_array(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        # Only plain ndarrays: subclasses (np.matrix, masked arrays) would need their module.
        if subtype is not np.ndarray:
            raise self._refuse(f'numpy _reconstruct({subtype!r}, ...)',
                               'only plain numpy.ndarray objects may be reconstructed')
        return _np_multiarray._reconstruct(subtype, shape, dtype)

    def _copyreg_reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        """Protocol 0/1 object creation, limited to our inert stubs on ``object``."""
        if not (isinstance(cls, type) and issubclass(cls, _StateStub)):
            raise self._refuse(f'copy_reg._reconstructor({cls!r}, ...)',
                               'only chumpy/scipy sparse objects may be reconstructed')
        if base is not object or state is not None:
            raise self._refuse(f'copy_reg._reconstructor({cls!r}, {base!r}, ...)',
                               'only the plain object base is allowed')
        return cls.__new__(cls)

    def _codecs_encode(self, obj: Any, encoding: str = 'utf-8', errors: str = 'strict') -> bytes:
        """Python 3 writes ``bytes`` at protocol < 3 as ``_codecs.encode(str, 'latin1')``."""
        # Other codecs (zlib, bz2, ...) transform data; only the identity latin-1 is needed.
        if not isinstance(obj, str) or str(encoding).lower() not in _LATIN1_NAMES:
            raise self._refuse(f'_codecs.encode(..., {encoding!r})',
                               'only latin-1 encoding of a str is allowed')
        return obj.encode('latin1')

    def persistent_load(self, pid: Any) -> Any:
        raise self._refuse(f'persistent id {pid!r}')
