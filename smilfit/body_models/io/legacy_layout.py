"""The SMPL-layout dict of a legacy model file <-> :class:`BodyModelData`, exactly.

:func:`legacy_dict_to_model_data` maps the dict to :class:`BodyModelData` and records
in ``extra['legacy']`` what is needed for :func:`model_data_to_legacy_dict` to rebuild
the original dict exactly (same keys, order, types, dtypes and values). Fields the SMPL
layout has no key for (units, keypoints, ...) travel in a ``smilfit_metadata`` dict.
Plain data in, plain data out: no file access and no unpickling here.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional

import numpy as np

from ..model_data import BodyModelData, ModelValidationError

__all__ = ['LEGACY_META_KEY', 'SMILFIT_METADATA_KEY', 'legacy_dict_to_model_data',
           'model_data_to_legacy_dict']

#: Key of ``BodyModelData.extra`` holding the legacy-file bookkeeping.
LEGACY_META_KEY = 'legacy'
#: Pickle key under which smilfit stores fields the SMPL layout has no place for.
SMILFIT_METADATA_KEY = 'smilfit_metadata'
#: Raw root-parent values legacy kintree tables use for "no parent" (-1, uint32 -1, uint64 -1).
_ROOT_SENTINELS = (-1, 2 ** 32 - 1, 2 ** 64 - 1)


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
