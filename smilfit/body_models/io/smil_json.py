"""smilfit's human-readable model format: one JSON document per model.

The format (``"format": "smilfit-model"``, ``"format_version": 1``) is specified in
``docs/model_format.md``. Design points:

- Everything in :class:`BodyModelData` is stored, and every numeric array records its
  dtype, so pickle -> JSON -> pickle is exact. Floats are written as the shortest
  decimal that round-trips a float64 (Python's ``repr``); float32 values are widened
  to float64 first (exact) and narrowed back on reading (exact).
- Sparse data is stored sparsely: skinning weights as per-vertex ``[joint, weight]``
  pairs, the joint regressor as per-joint ``[vertex, weight]`` pairs.
- The skeleton refers to parents by name, so joints can be edited by hand.
- Arrays are written one row per line; loading uses ``np.asarray`` on the nested lists
  (the 11k-vertex mouse model loads in about 0.1 s).

The value encodings (dtypes, arrays, sparse rows, the tagged values of ``extra``) are in
:mod:`.json_codecs`; this module holds the document (:func:`model_data_to_json_dict`,
:func:`model_data_from_json_dict`), its text layout and the file functions.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..model_data import BodyModelData
from .json_codecs import (ModelFormatError, _decode_array, _decode_extra, _decode_sparse_rows,
                          _dtype_name, _encode_array, _encode_extra, _encode_sparse_rows,
                          _fail, _parse_dtype, _plain)

PathLike = Union[str, 'os.PathLike[str]']

FORMAT_NAME = 'smilfit-model'
FORMAT_VERSION = 1

_TOP_FIELDS = ('format', 'format_version', 'name', 'units', 'up_axis', 'mesh', 'skeleton',
               'skinning_weights', 'joint_regressor', 'shapedirs', 'posedirs', 'shape_prior',
               'scale_translation', 'symmetry', 'keypoints', 'extra')
_REQUIRED_TOP = ('format', 'format_version', 'mesh', 'skeleton', 'skinning_weights')


# ----------------------------------------------------------------- document
def model_data_to_json_dict(data: BodyModelData) -> Dict[str, Any]:
    """Build the JSON document (a dict of plain JSON values) for ``data``.

    Shapes in the document: vertices (V, 3); faces (F, 3); shapedirs stored as
    (K, V, 3) (one vertex-offset field per coefficient; ``data.shapedirs`` is (V, 3, K));
    posedirs as (P, V, 3); scaledirs/transdirs (K', J, 3).
    """
    names = [str(n) for n in data.joint_names]
    parents = data.parents.tolist()
    positions = data.J.astype(np.float64).tolist()
    limits = None if data.joint_limits is None else data.joint_limits.astype(np.float64)
    joints: List[Dict[str, Any]] = []
    for j, name in enumerate(names):
        joint: Dict[str, Any] = {'name': name,
                                 'parent': None if parents[j] < 0 else names[parents[j]],
                                 'position': positions[j]}
        if limits is not None:
            joint['limits'] = [[None if math.isnan(x) else x for x in axis]
                               for axis in limits[j].tolist()]
        joints.append(joint)
    skeleton: Dict[str, Any] = {'parents_dtype': _dtype_name(data.parents.dtype),
                                'position_dtype': _dtype_name(data.J.dtype)}
    if data.joint_limits is not None:
        skeleton['limits_dtype'] = _dtype_name(data.joint_limits.dtype)
    skeleton['static_joint_locs'] = bool(data.static_joint_locs)
    skeleton['joints'] = joints

    def optional(arr: Optional[np.ndarray], field: str) -> Optional[Dict[str, Any]]:
        return None if arr is None else _encode_array(arr, field)

    sym_pairs = None
    if data.sym_joint_pairs is not None:
        sym_pairs = [[names[a], names[b]] for a, b in np.asarray(data.sym_joint_pairs).tolist()]
    symmetry: Dict[str, Any] = {'sym_verts': optional(data.sym_verts, 'symmetry.sym_verts'),
                                'sym_joint_pairs': sym_pairs}
    if data.sym_joint_pairs is not None:
        symmetry['sym_joint_pairs_dtype'] = _dtype_name(np.asarray(data.sym_joint_pairs).dtype)
    return {
        'format': FORMAT_NAME,
        'format_version': FORMAT_VERSION,
        'name': data.name,
        'units': data.units,
        'up_axis': data.up_axis,
        'mesh': {'vertices': _encode_array(data.v_template, 'mesh.vertices'),
                 'faces': _encode_array(data.faces, 'mesh.faces', kinds='iu')},
        'skeleton': skeleton,
        'skinning_weights': {'dtype': _dtype_name(data.weights.dtype),
                             'per_vertex': _encode_sparse_rows(data.weights)},
        'joint_regressor': {'dtype': _dtype_name(data.J_regressor.dtype),
                            'per_joint': _encode_sparse_rows(data.J_regressor)},
        'shapedirs': _encode_array(data.shapedirs.transpose(2, 0, 1), 'shapedirs'),
        'posedirs': _encode_array(data.posedirs.transpose(2, 0, 1), 'posedirs'),
        'shape_prior': {'mean': optional(data.shape_mean, 'shape_prior.mean'),
                        'cov': optional(data.shape_cov, 'shape_prior.cov')},
        'scale_translation': {'scaledirs': optional(data.scaledirs, 'scale_translation.scaledirs'),
                              'transdirs': optional(data.transdirs, 'scale_translation.transdirs'),
                              'trans_factor': float(data.trans_factor)},
        'symmetry': symmetry,
        'keypoints': _plain(data.keypoints, 'keypoints'),
        'extra': _encode_extra(data.extra, 'extra'),
    }


def _obj(doc: Any, key: str, field: str, source: str, required: bool = True,
         allowed: Sequence[str] = ()) -> Any:
    """``doc[key]`` checked to be a JSON object (dict) with only ``allowed`` keys."""
    if key not in doc:
        if required:
            raise _fail(source, field, 'is missing')
        return {}
    value = doc[key]
    if not isinstance(value, dict):
        raise _fail(source, field, f'expected an object, got {type(value).__name__}')
    unknown = set(value) - set(allowed) if allowed else set()
    if unknown:
        raise _fail(source, field, f'unknown key(s) {sorted(unknown)} '
                                   f'(allowed: {", ".join(allowed)})')
    return value


def _check_header(doc: Any, source: str) -> None:
    if not isinstance(doc, dict):
        raise ModelFormatError(f'{source}: expected a JSON object at the top level')
    if doc.get('format') != FORMAT_NAME:
        raise _fail(source, 'format', f'expected {FORMAT_NAME!r}, got {doc.get("format")!r} '
                                      '(not a smilfit model file)')
    if 'format_version' not in doc:
        raise _fail(source, 'format_version', 'is missing')
    version = doc['format_version']
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(source, 'format_version', f'expected a positive integer, got {version!r}')
    if version > FORMAT_VERSION:
        raise _fail(source, 'format_version',
                    f'file is version {version}; this smilfit reads up to version '
                    f'{FORMAT_VERSION} (upgrade smilfit)')
    for key in _REQUIRED_TOP:
        if key not in doc:
            raise _fail(source, key, 'is missing')
    unknown = set(doc) - set(_TOP_FIELDS)
    if unknown:
        raise _fail(source, sorted(unknown)[0], 'unknown top-level field '
                                                f'(known: {", ".join(_TOP_FIELDS)})')


def _read_skeleton(doc: Dict[str, Any], source: str
                   ) -> Tuple[List[str], np.ndarray, np.ndarray, Optional[np.ndarray], bool]:
    sk = _obj(doc, 'skeleton', 'skeleton', source,
              allowed=('parents_dtype', 'position_dtype', 'limits_dtype', 'static_joint_locs',
                       'joints'))
    joints = sk.get('joints')
    if not isinstance(joints, list) or not joints:
        raise _fail(source, 'skeleton.joints', 'must be a non-empty list of joints')
    names: List[str] = []
    for j, joint in enumerate(joints):
        field = f'skeleton.joints[{j}]'
        if not isinstance(joint, dict):
            raise _fail(source, field, 'expected an object')
        unknown = set(joint) - {'name', 'parent', 'position', 'limits'}
        if unknown:
            raise _fail(source, field, f'unknown key(s) {sorted(unknown)}')
        for key in ('name', 'parent', 'position'):
            if key not in joint:
                raise _fail(source, f'{field}.{key}', 'is missing')
        if not isinstance(joint['name'], str) or not joint['name']:
            raise _fail(source, f'{field}.name', 'must be a non-empty string')
        if joint['name'] in names:
            raise _fail(source, f'{field}.name', f'duplicate joint name {joint["name"]!r}')
        names.append(joint['name'])
    index = {n: i for i, n in enumerate(names)}
    parent_list: List[int] = []
    for j, joint in enumerate(joints):
        parent = joint['parent']
        if parent is None:
            parent_list.append(-1)
        elif isinstance(parent, str) and parent in index:
            parent_list.append(index[parent])
        else:
            raise _fail(source, f'skeleton.joints[{j}].parent',
                        f'{parent!r} is not the name of a joint (use null for the root)')
    parents = np.array(parent_list, dtype=_parse_dtype(sk.get('parents_dtype', 'int64'),
                                                       'skeleton.parents_dtype', source, 'i'))
    pos_dtype = sk.get('position_dtype', 'float64')
    J = _decode_array({'dtype': pos_dtype, 'data': [jt['position'] for jt in joints]},
                      'skeleton.joints[*].position', source, 'float64', ndim=2, kinds='f')
    if J.shape[1] != 3:
        raise _fail(source, 'skeleton.joints[*].position', 'every position needs 3 numbers')
    limits = None
    if any('limits' in jt for jt in joints):
        rows = []
        for j, joint in enumerate(joints):
            lim = joint.get('limits', [[None, None]] * 3)
            ok = isinstance(lim, list) and len(lim) == 3 and all(
                isinstance(a, list) and len(a) == 2 and all(
                    x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))
                    for x in a) for a in lim)
            if not ok:
                raise _fail(source, f'skeleton.joints[{j}].limits',
                            'expected 3 [min, max] pairs (radians, null = unlimited)')
            rows.append([[math.nan if x is None else x for x in a] for a in lim])
        dtype = _parse_dtype(sk.get('limits_dtype', 'float64'), 'skeleton.limits_dtype',
                             source, 'f')
        limits = np.array(rows, dtype=np.float64).astype(dtype)
    static = sk.get('static_joint_locs', False)
    if not isinstance(static, bool):
        raise _fail(source, 'skeleton.static_joint_locs', 'must be true or false')
    return names, parents, J, limits, static


def model_data_from_json_dict(doc: Dict[str, Any], source: str = '<json>') -> BodyModelData:
    """Parse a JSON document into :class:`BodyModelData` (structure-checked, not validated).

    Raises:
        ModelFormatError: wrong ``format``, newer ``format_version``, a missing or
            unknown field, an unknown parent name, ...; the message names the field.
    """
    _check_header(doc, source)
    mesh = _obj(doc, 'mesh', 'mesh', source, allowed=('vertices', 'faces'))
    for key in ('vertices', 'faces'):
        if key not in mesh:
            raise _fail(source, f'mesh.{key}', 'is missing')
    v = _decode_array(mesh['vertices'], 'mesh.vertices', source, 'float64', ndim=2, kinds='f')
    faces = _decode_array(mesh['faces'], 'mesh.faces', source, 'int64', ndim=2, kinds='iu')
    V = v.shape[0]
    names, parents, J, limits, static = _read_skeleton(doc, source)
    nJ = len(names)

    sw = _obj(doc, 'skinning_weights', 'skinning_weights', source,
              allowed=('dtype', 'per_vertex'))
    if 'per_vertex' not in sw:
        raise _fail(source, 'skinning_weights.per_vertex', 'is missing')
    w_dtype = _parse_dtype(sw.get('dtype', 'float64'), 'skinning_weights.dtype', source, 'f')
    weights = _decode_sparse_rows(sw['per_vertex'], (V, nJ), w_dtype,
                                  'skinning_weights.per_vertex', source, 'joint')

    jr = _obj(doc, 'joint_regressor', 'joint_regressor', source, required=not static,
              allowed=('dtype', 'per_joint'))
    jr_dtype = _parse_dtype(jr.get('dtype', 'float64'), 'joint_regressor.dtype', source, 'f')
    if 'per_joint' in jr:
        J_regressor = _decode_sparse_rows(jr['per_joint'], (nJ, V), jr_dtype,
                                          'joint_regressor.per_joint', source, 'vertex')
    elif jr:
        raise _fail(source, 'joint_regressor.per_joint', 'is missing')
    else:  # static_joint_locs models need no regressor
        J_regressor = np.zeros((nJ, V), dtype=jr_dtype)

    def dirs(key: str) -> np.ndarray:
        if key not in doc:
            return np.zeros((V, 3, 0), dtype=np.float64)
        arr = _decode_array(doc[key], key, source, 'float64', ndim=3, kinds='f')
        return np.ascontiguousarray(arr.transpose(1, 2, 0))  # (K, V, 3) -> (V, 3, K)

    def optional(obj: Dict[str, Any], key: str, field: str, ndim: int,
                 default_dtype: str = 'float64', kinds: str = 'f') -> Optional[np.ndarray]:
        value = obj.get(key)
        if value is None:
            return None
        return _decode_array(value, field, source, default_dtype, ndim=ndim, kinds=kinds)

    prior = _obj(doc, 'shape_prior', 'shape_prior', source, required=False,
                 allowed=('mean', 'cov'))
    st = _obj(doc, 'scale_translation', 'scale_translation', source, required=False,
              allowed=('scaledirs', 'transdirs', 'trans_factor'))
    trans_factor = st.get('trans_factor', 0.01)
    if not isinstance(trans_factor, (int, float)) or isinstance(trans_factor, bool):
        raise _fail(source, 'scale_translation.trans_factor', 'must be a number')
    sym = _obj(doc, 'symmetry', 'symmetry', source, required=False,
               allowed=('sym_verts', 'sym_joint_pairs', 'sym_joint_pairs_dtype'))
    sym_pairs = None
    if sym.get('sym_joint_pairs') is not None:
        index = {n: i for i, n in enumerate(names)}
        pairs = sym['sym_joint_pairs']
        rows = []
        for i, pair in enumerate(pairs if isinstance(pairs, list) else [None]):
            if not (isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(n, str) and n in index for n in pair)):
                raise _fail(source, f'symmetry.sym_joint_pairs[{i}]',
                            f'expected a pair of joint names, got {pair!r}')
            rows.append([index[pair[0]], index[pair[1]]])
        dtype = _parse_dtype(sym.get('sym_joint_pairs_dtype', 'int64'),
                             'symmetry.sym_joint_pairs_dtype', source, 'iu')
        sym_pairs = np.array(rows, dtype=dtype).reshape(-1, 2)

    keypoints = doc.get('keypoints', {})
    if not isinstance(keypoints, dict) or not all(isinstance(k, dict) for k in keypoints.values()):
        raise _fail(source, 'keypoints', 'expected an object of name -> definition objects')
    for key in ('name', 'units', 'up_axis'):
        if key in doc and not isinstance(doc[key], str):
            raise _fail(source, key, 'must be a string')
    extra = _decode_extra(doc.get('extra', {}), 'extra', source)
    if not isinstance(extra, dict):
        raise _fail(source, 'extra', 'expected an object')
    return BodyModelData(
        v_template=v, faces=faces, weights=weights, parents=parents, joint_names=names,
        shapedirs=dirs('shapedirs'), posedirs=dirs('posedirs'), J_regressor=J_regressor, J=J,
        static_joint_locs=static,
        scaledirs=optional(st, 'scaledirs', 'scale_translation.scaledirs', 3),
        transdirs=optional(st, 'transdirs', 'scale_translation.transdirs', 3),
        trans_factor=float(trans_factor),
        shape_mean=optional(prior, 'mean', 'shape_prior.mean', 1),
        shape_cov=optional(prior, 'cov', 'shape_prior.cov', 2),
        joint_limits=limits,
        sym_verts=optional(sym, 'sym_verts', 'symmetry.sym_verts', 1, 'int64', 'iu'),
        sym_joint_pairs=sym_pairs, keypoints=keypoints,
        units=doc.get('units', 'unknown'), up_axis=doc.get('up_axis', 'y'),
        name=doc.get('name', 'model'), extra=extra)


# --------------------------------------------------------------- formatting
_SCALARS_PER_LINE = 16


def _is_scalar_list(items: list) -> bool:
    return not any(isinstance(x, (list, dict)) for x in items)


def _is_compact(items: list) -> bool:
    """Short rows of scalars (or a few short scalar lists, e.g. weight pairs) fit one line."""
    if len(items) <= _SCALARS_PER_LINE and _is_scalar_list(items):
        return True
    return len(items) <= 8 and all(
        isinstance(x, list) and len(x) <= 2 and _is_scalar_list(x) for x in items)


def _emit(obj: Any, level: int, out: List[str]) -> None:
    pad = '\n' + '  ' * (level + 1)
    if isinstance(obj, dict):
        if not obj:
            out.append('{}')
            return
        out.append('{')
        for i, (key, value) in enumerate(obj.items()):
            out.append((',' if i else '') + pad + json.dumps(key) + ': ')
            _emit(value, level + 1, out)
        out.append('\n' + '  ' * level + '}')
    elif isinstance(obj, list):
        if _is_compact(obj):
            out.append(json.dumps(obj, allow_nan=False, separators=(', ', ': ')))
            return
        out.append('[')
        if _is_scalar_list(obj):  # long 1-D lists: a fixed number of values per line
            for i in range(0, len(obj), _SCALARS_PER_LINE):
                chunk = json.dumps(obj[i:i + _SCALARS_PER_LINE], allow_nan=False)[1:-1]
                out.append((',' if i else '') + pad + chunk)
        else:
            for i, value in enumerate(obj):
                out.append((',' if i else '') + pad)
                _emit(value, level + 1, out)
        out.append('\n' + '  ' * level + ']')
    else:
        out.append(json.dumps(obj, allow_nan=False))


def dumps_model_json(data: BodyModelData) -> str:
    """The JSON text for ``data``: objects indented, one array row per line."""
    out: List[str] = []
    _emit(model_data_to_json_dict(data), 0, out)
    out.append('\n')
    return ''.join(out)


def _reject_constant(name: str) -> Any:
    raise ValueError(f'non-standard JSON constant {name} (write NaN/inf as described in '
                     'docs/model_format.md)')


def read_model_json(path: PathLike, validate: bool = True) -> BodyModelData:
    """Read a smilfit model file (``.json``, or gzip-compressed ``.json.gz``).

    Args:
        path: the file.
        validate: also run :meth:`BodyModelData.validate`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ModelFormatError: malformed JSON or document (the message names the field).
        ModelValidationError: inconsistent model data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'model file not found: {path}')
    opener = gzip.open if str(path).lower().endswith('.gz') else open
    try:
        with opener(path, 'rt', encoding='utf-8') as f:
            doc = json.load(f, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ModelFormatError(f'{path}: not valid JSON: {e}') from None
    except RecursionError:
        raise ModelFormatError(f'{path}: nested too deeply to be a model file (a corrupt '
                               'or crafted file)') from None
    except ValueError as e:  # _reject_constant
        raise ModelFormatError(f'{path}: {e}') from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        # gzip names no file: a cut-off download or copy ends early, garbage has no header.
        raise ModelFormatError(f'{path}: truncated or not a gzip file ({e})') from None
    data = model_data_from_json_dict(doc, source=str(path))
    return data.validate() if validate else data


def write_model_json(data: BodyModelData, path: PathLike) -> None:
    """Validate ``data`` and write it as a smilfit model file (temp file + rename)."""
    from . import save_model_data  # late: the package imports this module
    if not str(path).lower().endswith(('.json', '.json.gz')):
        raise ValueError(f'smilfit model files end in .json or .json.gz: {path}')
    save_model_data(data, path)


__all__ = ['FORMAT_NAME', 'FORMAT_VERSION', 'ModelFormatError', 'model_data_to_json_dict',
           'model_data_from_json_dict', 'dumps_model_json', 'read_model_json',
           'write_model_json']
