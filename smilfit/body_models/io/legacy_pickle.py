"""Legacy SMPL/SMAL/SMIL model pickles: safe reading, exact writing.

Legacy model files are Python pickles of a dict in the SMPL layout. Unpickling runs
whatever callables the file names, so a plain ``pickle.load`` of a downloaded model is
arbitrary code execution. :class:`RestrictedUnpickler` resolves only an explicit
allow-list of globals (numpy array reconstruction, a few inert builtins) and maps
chumpy and scipy sparse classes to inert stubs that only collect their pickled state;
everything else raises :class:`UnsafePickleError` before anything is called.

:func:`legacy_dict_to_model_data` maps the dict to :class:`BodyModelData` and records
in ``extra['legacy']`` what is needed for :func:`model_data_to_legacy_dict` to rebuild
the original dict exactly (same keys, order, types, dtypes and values).
"""
from __future__ import annotations

import _compat_pickle
import copy
import io
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

from ...errors import SmilfitUserError
from ..model_data import BodyModelData, ModelValidationError

PathLike = Union[str, 'os.PathLike[str]']

#: Key of ``BodyModelData.extra`` holding the legacy-file bookkeeping.
LEGACY_META_KEY = 'legacy'
#: Pickle key under which smilfit stores fields the SMPL layout has no place for.
SMILFIT_METADATA_KEY = 'smilfit_metadata'
#: Raw root-parent values legacy kintree tables use for "no parent" (-1, uint32 -1, uint64 -1).
_ROOT_SENTINELS = (-1, 2 ** 32 - 1, 2 ** 64 - 1)

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


class LegacyModelError(SmilfitUserError, ValueError):
    """A legacy model file is readable but holds something smilfit cannot convert."""


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
                TypeError, AttributeError, UnicodeDecodeError) as err:
            # Truncated or corrupt files fail inside the unpickler with many types.
            raise LegacyModelError(f'{path}: not a readable model pickle, truncated or '
                                   f'corrupt ({type(err).__name__}: {err})') from None
    if not isinstance(raw, dict):
        raise LegacyModelError(f'{path}: expected a pickled dict of model arrays, '
                               f'got {type(raw).__name__}')
    sources: Dict[str, str] = {}
    out: Dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise LegacyModelError(f'{path}: dict key {key!r} is not a string')
        out[key] = _convert_stubs(value, f'{path}: key {key!r}', sources, key)
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


# ------------------------------------------------------------- dict <-> data
#: Legacy keys that map onto BodyModelData fields (everything else goes to ``extra``).
_KNOWN_KEYS = ('v_template', 'f', 'weights', 'kintree_table', 'J', 'J_regressor',
               'shapedirs', 'posedirs', 'J_names', 'bs_style', 'bs_type',
               'static_joint_locs', 'scaledirs', 'transdirs', 'shape_cov',
               'shape_mean_betas', 'sym_verts', 'joint_limits', SMILFIT_METADATA_KEY)
#: Optional array keys: absent, an empty list/array (-> None) or an array.
_OPTIONAL_ARRAYS = {'scaledirs': 'scaledirs', 'transdirs': 'transdirs',
                    'shape_cov': 'shape_cov', 'shape_mean_betas': 'shape_mean',
                    'sym_verts': 'sym_verts', 'joint_limits': 'joint_limits'}
#: Fields of the smilfit metadata dict and the defaults that make them unnecessary.
_METADATA_DEFAULTS = {'name': None, 'units': 'unknown', 'up_axis': 'y', 'keypoints': {},
                      'sym_joint_pairs': None, 'trans_factor': 0.01}


def _legacy_array(d: Dict[str, Any], key: str) -> np.ndarray:
    value = d[key]
    if not isinstance(value, np.ndarray):
        raise ModelValidationError(f'legacy model key {key!r}: expected a numpy array, '
                                   f'got {type(value).__name__}')
    return value


def _array_meta(arr: np.ndarray) -> Dict[str, Any]:
    meta: Dict[str, Any] = {'dtype': arr.dtype.str, 'shape': list(arr.shape)}
    if arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous:
        meta['order'] = 'F'
    return meta


def _empty_dirs(value: Any, key: str, V: int, meta: Dict[str, Any]) -> np.ndarray:
    """shapedirs/posedirs: (V, 3, K) as is; an empty array of another shape -> (V, 3, 0)."""
    if isinstance(value, (list, tuple)) and len(value) == 0:
        meta['empty_containers'][key] = type(value).__name__
        return np.zeros((V, 3, 0), dtype=np.float64)
    if not isinstance(value, np.ndarray):
        raise ModelValidationError(f'legacy model key {key!r}: expected a numpy array, '
                                   f'got {type(value).__name__}')
    if value.size == 0 and value.shape != (V, 3, 0):
        return np.zeros((V, 3, 0), dtype=value.dtype)
    return value


def legacy_dict_to_model_data(d: Dict[str, Any], name: str = 'model') -> BodyModelData:
    """Map a legacy model dict onto :class:`BodyModelData` (not validated here).

    Args:
        d: dict as returned by :func:`read_legacy_pickle`.
        name: model name (a ``smilfit_metadata`` entry in the dict takes precedence).

    Returns:
        The model data; ``extra[LEGACY_META_KEY]`` holds the bookkeeping that lets
        :func:`model_data_to_legacy_dict` rebuild ``d`` exactly, and unknown keys are
        copied to ``extra`` unchanged.
    """
    for key in ('v_template', 'f', 'weights', 'kintree_table', 'J_regressor'):
        if key not in d:
            raise ModelValidationError(f'legacy model key {key!r} is missing')
    meta: Dict[str, Any] = {'key_order': list(d), 'arrays': {}, 'empty_containers': {},
                            'scalar_types': {}, 'name': name}
    for key, value in d.items():
        if key in _KNOWN_KEYS and isinstance(value, np.ndarray):
            meta['arrays'][key] = _array_meta(value)

    v_template = _legacy_array(d, 'v_template')
    V = v_template.shape[0] if v_template.ndim else 0
    f = _legacy_array(d, 'f')
    faces = f.astype(np.int64) if f.dtype.kind in 'iu' else f

    kintree = _legacy_array(d, 'kintree_table')
    if kintree.ndim != 2 or kintree.shape[0] != 2 or kintree.dtype.kind not in 'iu':
        raise ModelValidationError(f"legacy model key 'kintree_table': expected a (2, J) "
                                   f'integer array, got {kintree.dtype} {kintree.shape}')
    row0 = [int(p) for p in kintree[0]]
    roots = [i for i, p in enumerate(row0) if p in _ROOT_SENTINELS]
    # uint32/int64 files store the root's "no parent" as 4294967295; normalise to -1.
    meta['kintree_root_raw'] = row0[roots[0]] if roots else -1
    parents = np.array([-1 if p in _ROOT_SENTINELS else p for p in row0], dtype=np.int64)
    meta['kintree_row1'] = kintree[1].copy()
    J = parents.shape[0]

    if 'J_names' in d:
        names = d['J_names']
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise ModelValidationError("legacy model key 'J_names': expected a list of str")
        meta['scalar_types']['J_names'] = type(names).__name__
        joint_names = list(names)
    else:
        joint_names = [f'joint_{i}' for i in range(J)]

    J_regressor = _legacy_array(d, 'J_regressor')
    if 'J' in d:
        joints = _legacy_array(d, 'J')
    else:  # SMPL defines the rest joints as the regressor applied to the template
        try:
            joints = J_regressor @ v_template
        except ValueError:
            raise ModelValidationError(
                f"legacy model key 'J' is missing and 'J_regressor' {J_regressor.shape} "
                f"cannot be applied to 'v_template' {v_template.shape}") from None

    shapedirs = _empty_dirs(d['shapedirs'], 'shapedirs', V, meta) if 'shapedirs' in d \
        else np.zeros((V, 3, 0), dtype=np.float64)
    posedirs = _empty_dirs(d['posedirs'], 'posedirs', V, meta) if 'posedirs' in d \
        else np.zeros((V, 3, 0), dtype=np.float64)

    static = False
    if 'static_joint_locs' in d:
        value = d['static_joint_locs']
        if type(value) not in (bool, np.bool_, int):
            raise ModelValidationError("legacy model key 'static_joint_locs': expected a bool, "
                                       f'got {type(value).__name__}')
        meta['scalar_types']['static_joint_locs'] = (
            'numpy.bool_' if isinstance(value, np.bool_) else type(value).__name__)
        static = bool(value)

    optional: Dict[str, Optional[np.ndarray]] = {}
    for key, field in _OPTIONAL_ARRAYS.items():
        value = d.get(key)
        if isinstance(value, (list, tuple)) and len(value) == 0:
            meta['empty_containers'][key] = type(value).__name__
            value = None
        elif value is not None and not isinstance(value, np.ndarray):
            raise ModelValidationError(f'legacy model key {key!r}: expected a numpy array or '
                                       f'an empty list, got {type(value).__name__}')
        elif isinstance(value, np.ndarray) and value.size == 0 and key in ('scaledirs',
                                                                         'transdirs'):
            value = None  # an empty array means "no scale/translation PCA" too
        optional[field] = value

    for key, default in (('bs_style', 'lbs'), ('bs_type', 'lrotmin')):
        if key in d:
            if not isinstance(d[key], str):
                raise ModelValidationError(f'legacy model key {key!r}: expected a str, '
                                           f'got {type(d[key]).__name__}')
            meta[key] = d[key]
            if d[key] != default and not (key == 'bs_type' and posedirs.shape[-1] == 0):
                # Only linear blend skinning with (R - I) pose blendshapes is implemented.
                raise ModelValidationError(f'legacy model key {key!r}: {d[key]!r} is not '
                                           f'supported (expected {default!r})')

    smil_meta = dict(_METADATA_DEFAULTS)
    if SMILFIT_METADATA_KEY in d:
        stored = d[SMILFIT_METADATA_KEY]
        if not isinstance(stored, dict) or set(stored) - set(_METADATA_DEFAULTS):
            raise ModelValidationError(f'legacy model key {SMILFIT_METADATA_KEY!r}: expected a '
                                       f'dict with keys among {sorted(_METADATA_DEFAULTS)}')
        smil_meta.update(stored)

    extra: Dict[str, Any] = {k: v for k, v in d.items() if k not in _KNOWN_KEYS}
    if LEGACY_META_KEY in extra:
        raise ModelValidationError(f'legacy model key {LEGACY_META_KEY!r} clashes with '
                                   "smilfit's bookkeeping entry of the same name")
    extra[LEGACY_META_KEY] = meta
    trans_factor = smil_meta['trans_factor']
    return BodyModelData(
        v_template=v_template, faces=faces, weights=_legacy_array(d, 'weights'),
        parents=parents, joint_names=joint_names, shapedirs=shapedirs, posedirs=posedirs,
        J_regressor=J_regressor, J=joints, static_joint_locs=static,
        scaledirs=optional['scaledirs'], transdirs=optional['transdirs'],
        trans_factor=trans_factor,
        shape_mean=optional['shape_mean'], shape_cov=optional['shape_cov'],
        joint_limits=optional['joint_limits'], sym_verts=optional['sym_verts'],
        sym_joint_pairs=(None if smil_meta['sym_joint_pairs'] is None
                         else np.asarray(smil_meta['sym_joint_pairs'])),
        keypoints=dict(smil_meta['keypoints']), units=smil_meta['units'],
        up_axis=smil_meta['up_axis'], name=smil_meta['name'] or name, extra=extra)


_OMIT = object()  # builder result: leave the key out of the dict


def _cast_exact(arr: np.ndarray, dtype: str, key: str) -> np.ndarray:
    """Cast to the file's original dtype, refusing casts that change values."""
    out = arr.astype(np.dtype(dtype), copy=False)
    if out.dtype != arr.dtype and not np.array_equal(out.astype(arr.dtype), arr):
        raise ModelValidationError(f'legacy model key {key!r}: values do not fit the original '
                                   f'dtype {np.dtype(dtype)}')
    return out


def _with_layout(arr: np.ndarray, meta: Optional[Dict[str, Any]]) -> np.ndarray:
    if meta and meta.get('order') == 'F':
        return np.asfortranarray(arr)
    return np.ascontiguousarray(arr)


def _was_empty(meta: Dict[str, Any], key: str) -> bool:
    orig = meta['arrays'].get(key)
    return orig is not None and int(np.prod(orig['shape'])) == 0


def _smilfit_metadata(data: BodyModelData, default_name: Optional[str]) -> Dict[str, Any]:
    """Fields the SMPL layout has no key for, where they differ from the loader defaults."""
    out: Dict[str, Any] = {}
    if data.name != default_name:
        out['name'] = data.name
    for field in ('units', 'up_axis', 'trans_factor'):
        if getattr(data, field) != _METADATA_DEFAULTS[field]:
            out[field] = getattr(data, field)
    if data.keypoints:
        out['keypoints'] = copy.deepcopy(data.keypoints)
    if data.sym_joint_pairs is not None:
        out['sym_joint_pairs'] = np.asarray(data.sym_joint_pairs)
    return out


def _fresh_meta() -> Dict[str, Any]:
    """Bookkeeping for data that did not come from a legacy file (canonical layout)."""
    return {'key_order': [], 'arrays': {}, 'empty_containers': {}, 'scalar_types': {},
            'kintree_root_raw': -1, 'kintree_row1': None, 'name': 'model'}


def model_data_to_legacy_dict(data: BodyModelData) -> Dict[str, Any]:
    """Build the legacy (SMPL-layout) dict for ``data``.

    For data read from a legacy file (``extra['legacy']`` present) the result equals
    the original dict exactly: same keys in the same order, lists stay lists, integer
    arrays get their original dtype and memory order back, empty entries their
    original form. chumpy/sparse values come back as dense numpy arrays. Fields the
    SMPL layout lacks (units, keypoints, ...) go to a ``smilfit_metadata`` dict when
    they differ from the defaults. Arrays are shared with ``data`` where no cast or
    re-layout is needed (not copied).
    """
    meta = data.extra.get(LEGACY_META_KEY)
    fresh = not isinstance(meta, dict)
    if fresh:
        meta = _fresh_meta()
    arrays: Dict[str, Dict[str, Any]] = meta['arrays']
    empties: Dict[str, str] = meta['empty_containers']
    J = data.num_joints

    def empty_container(key: str) -> Any:
        return [] if empties[key] == 'list' else ()

    def kintree() -> np.ndarray:
        row1 = meta.get('kintree_row1')
        if row1 is None or np.shape(row1) != (J,):
            row1 = np.arange(J, dtype=np.int64)
        row0 = data.parents.astype(np.int64)
        table = np.stack([np.where(row0 < 0, int(meta['kintree_root_raw']), row0),
                          np.asarray(row1, dtype=np.int64)])
        dtype = arrays.get('kintree_table', {}).get('dtype', np.asarray(row1).dtype.str)
        return _with_layout(_cast_exact(table, dtype, 'kintree_table'),
                            arrays.get('kintree_table'))

    def faces() -> np.ndarray:
        dtype = arrays.get('f', {}).get('dtype', data.faces.dtype.str)
        return _with_layout(_cast_exact(data.faces, dtype, 'f'), arrays.get('f'))

    def dirs(key: str) -> Any:
        arr = getattr(data, key)
        if arr.shape[2] == 0:
            if key in empties:
                return empty_container(key)
            if _was_empty(meta, key):
                return np.zeros(arrays[key]['shape'], dtype=arr.dtype)
            if key == 'posedirs':  # SMILify's convention for "no pose blendshapes"
                return np.zeros((0,), dtype=arr.dtype)
        return _with_layout(arr, arrays.get(key))

    def optional(key: str) -> Any:
        value = getattr(data, _OPTIONAL_ARRAYS[key])
        if value is not None:
            return _with_layout(value, arrays.get(key))
        if key in empties:
            return empty_container(key)
        if _was_empty(meta, key):  # an empty array stood for "none"
            return np.zeros(arrays[key]['shape'], dtype=arrays[key]['dtype'])
        return _OMIT

    def names() -> Any:
        kind = meta['scalar_types'].get('J_names', 'list')
        return tuple(data.joint_names) if kind == 'tuple' else list(data.joint_names)

    def static() -> Any:
        kind = meta['scalar_types'].get('static_joint_locs', 'bool')
        value = bool(data.static_joint_locs)
        if kind == 'numpy.bool_':
            return np.bool_(value)
        return int(value) if kind == 'int' else value

    def smilfit_metadata() -> Dict[str, Any]:
        return _smilfit_metadata(data, default_name=meta.get('name'))

    builders: Dict[str, Callable[[], Any]] = {
        'v_template': lambda: _with_layout(data.v_template, arrays.get('v_template')),
        'f': faces,
        'weights': lambda: _with_layout(data.weights, arrays.get('weights')),
        'kintree_table': kintree,
        'J': lambda: _with_layout(data.J, arrays.get('J')),
        'J_regressor': lambda: _with_layout(data.J_regressor, arrays.get('J_regressor')),
        'shapedirs': lambda: dirs('shapedirs'),
        'posedirs': lambda: dirs('posedirs'),
        'J_names': names,
        'bs_style': lambda: meta.get('bs_style', 'lbs'),
        'bs_type': lambda: meta.get('bs_type', 'lrotmin'),
        'static_joint_locs': static,
        SMILFIT_METADATA_KEY: smilfit_metadata,
    }
    for key in _OPTIONAL_ARRAYS:
        builders[key] = (lambda k: lambda: optional(k))(key)

    def wanted(key: str) -> bool:
        """Whether a known key that the original file lacked carries information."""
        if key in ('v_template', 'f', 'weights', 'kintree_table', 'J_regressor'):
            return True
        if key in ('bs_style', 'bs_type'):
            return fresh
        if key == 'J':  # legacy files without J meant "regress it from the template"
            return fresh or not np.array_equal(data.J, data.J_regressor @ data.v_template)
        if key == 'J_names':
            return fresh or data.joint_names != [f'joint_{i}' for i in range(J)]
        if key in ('shapedirs', 'posedirs'):
            return fresh or getattr(data, key).shape[2] > 0
        if key == 'static_joint_locs':
            return bool(data.static_joint_locs)
        if key == SMILFIT_METADATA_KEY:
            return bool(smilfit_metadata())
        return getattr(data, _OPTIONAL_ARRAYS[key]) is not None

    extra_keys = [k for k in data.extra if k != LEGACY_META_KEY]
    for key in extra_keys:
        if key in _KNOWN_KEYS:
            raise ModelValidationError(f'extra[{key!r}] clashes with the legacy model key of '
                                       'the same name')
    order = list(meta['key_order'])
    order += [k for k in _KNOWN_KEYS if k not in order]
    order += [k for k in extra_keys if k not in order]
    out: Dict[str, Any] = {}
    for key in order:
        if key in builders:
            if key in meta['key_order'] or wanted(key):
                value = builders[key]()
                if value is not _OMIT:
                    out[key] = value
        elif key in data.extra:  # unknown legacy keys; dropped if removed from extra
            out[key] = data.extra[key]
    return out


def dumps_legacy_pickle(data: BodyModelData) -> bytes:
    """Pickle :func:`model_data_to_legacy_dict` (protocol 2, numpy-1 module paths).

    numpy 2 would name ``numpy._core`` in the stream, which numpy 1.x cannot import;
    the legacy ``numpy.core`` names load under both (numpy 2 keeps a shim).
    """
    buf = io.BytesIO()
    _LegacyPickler(buf, protocol=2).dump(model_data_to_legacy_dict(data))
    return buf.getvalue()


_LEGACY_GLOBAL_NAMES = {
    id(_np_multiarray._reconstruct): b'numpy.core.multiarray\n_reconstruct\n',
    id(_np_multiarray.scalar): b'numpy.core.multiarray\nscalar\n',
}


class _LegacyPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pure-Python pickler that names numpy internals by their numpy-1 module path."""

    def save_global(self, obj: Any, name: Optional[str] = None) -> None:
        legacy = _LEGACY_GLOBAL_NAMES.get(id(obj))
        if legacy is None:
            super().save_global(obj, name)
            return
        self.write(pickle.GLOBAL + legacy)
        self.memoize(obj)


def write_legacy_pickle(data: BodyModelData, path: PathLike) -> None:
    """Validate ``data`` and write it as a legacy model pickle (temp file + rename)."""
    from . import write_bytes_atomic  # late: the package imports this module
    data.validate()
    write_bytes_atomic(Path(path), dumps_legacy_pickle(data))


def load_legacy_model(path: PathLike, name: Optional[str] = None) -> BodyModelData:
    """Read and map a legacy pickle; ``extra['legacy']['converted']`` names chumpy/sparse keys.

    Not validated here; :func:`smilfit.body_models.io.load_model_data` validates.
    """
    d, sources = _read_with_sources(path)
    data = legacy_dict_to_model_data(d, name=name or Path(path).stem)
    if sources:
        data.extra[LEGACY_META_KEY]['converted'] = dict(sources)
    return data


__all__ = ['UnsafePickleError', 'LegacyModelError', 'RestrictedUnpickler', 'ChumpyStub',
           'SparseStub', 'read_legacy_pickle', 'legacy_dict_to_model_data',
           'model_data_to_legacy_dict', 'dumps_legacy_pickle', 'write_legacy_pickle',
           'load_legacy_model', 'LEGACY_META_KEY', 'SMILFIT_METADATA_KEY']
