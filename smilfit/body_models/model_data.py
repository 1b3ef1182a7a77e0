"""The in-memory description of a parametric body model, independent of file format.

Every loader (legacy pickle, smilfit's JSON model format) and the procedural model
builder produce a :class:`BodyModelData`; :class:`~smilfit.body_models.SMILModel`
consumes one. Arrays are numpy, in the model's own units (see ``units``).

Conventions (SMPL layout):

- ``parents[j]`` is the parent joint of joint ``j``; the root has ``-1``. Joints may
  come in any order as long as they form one tree.
- ``shapedirs`` is (V, 3, K): vertex offset per unit of each shape coefficient.
- ``posedirs`` is (V, 3, P) with ``P = 9 * (J - 1)`` or empty (P = 0): pose
  blendshapes driven by ``(R_j - I)`` of the non-root joints, flattened row-major.
- ``scaledirs`` / ``transdirs`` are (K', J, 3) PCA directions of per-joint scale and
  bone translation (SMILify's layout), or ``None``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import SmilfitUserError

#: Legal keypoint definition kinds; see :func:`validate_keypoint`.
KEYPOINT_KINDS = ('joint', 'vertex', 'vertices', 'marker')
#: The fields of a ``marker`` keypoint (see :func:`validate_keypoint`).
MARKER_FIELDS = ('position', 'joint', 'vertices', 'weights', 'depth')
#: Allowed ``up_axis`` values.
UP_AXES = ('x', 'y', 'z', '-x', '-y', '-z')


class ModelValidationError(SmilfitUserError, ValueError):
    """A body model's data is inconsistent; the message names the offending field."""


@dataclasses.dataclass
class BodyModelData:
    """Everything a linear-blend-skinning body model needs.

    Attributes:
        v_template: (V, 3) rest-pose template vertices.
        faces: (F, 3) integer triangle vertex indices.
        weights: (V, J) skinning weights; each row sums to 1.
        parents: (J,) parent index per joint, ``-1`` for the root.
        joint_names: J unique joint names.
        shapedirs: (V, 3, K) shape blendshapes; K may be 0.
        posedirs: (V, 3, 9 * (J - 1)) pose blendshapes or (V, 3, 0).
        J_regressor: (J, V) joint regressor from shaped vertices (rows may be all
            zero when ``static_joint_locs``).
        J: (J, 3) stored rest joint locations (used when ``static_joint_locs``).
        static_joint_locs: rest joints come from ``J`` (shifted by nothing), not
            from ``J_regressor @ v_shaped``.
        scaledirs: (K', J, 3) per-joint scale PCA directions or ``None``.
        transdirs: (K', J, 3) per-joint bone-translation PCA directions or ``None``.
        trans_factor: factor applied to ``transdirs`` weights (SMILify uses 0.01).
        shape_mean: (K,) mean of the shape coefficients (prior) or ``None``.
        shape_cov: (K, K) covariance of the shape coefficients (prior) or ``None``.
        joint_limits: (J, 3, 2) per joint and axis-angle axis (min, max) in radians,
            NaN where unlimited, or ``None``.
        sym_verts: (S,) indices of vertices on the symmetry plane, or ``None``.
        sym_joint_pairs: (P, 2) left/right joint index pairs, or ``None``.
        keypoints: name -> definition (see :func:`validate_keypoint`).
        units: length unit of the vertices ('m', 'mm', 'cm' or 'unknown').
        up_axis: which axis points up in the rest pose ('y', '-z', ...).
        name: a human-readable model name.
        extra: anything else the source file held (kept for lossless round trips).
    """

    v_template: np.ndarray
    faces: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    joint_names: List[str]
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    J: np.ndarray
    static_joint_locs: bool = False
    scaledirs: Optional[np.ndarray] = None
    transdirs: Optional[np.ndarray] = None
    trans_factor: float = 0.01
    shape_mean: Optional[np.ndarray] = None
    shape_cov: Optional[np.ndarray] = None
    joint_limits: Optional[np.ndarray] = None
    sym_verts: Optional[np.ndarray] = None
    sym_joint_pairs: Optional[np.ndarray] = None
    keypoints: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
    units: str = 'unknown'
    up_axis: str = 'y'
    name: str = 'model'
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    # ------------------------------------------------------------------ sizes
    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def validate(self, weight_tol: float = 1e-3) -> 'BodyModelData':
        """Check shapes, finiteness and structure; raise :class:`ModelValidationError`.

        Args:
            weight_tol: allowed deviation of each skinning-weight row sum from 1.

        Returns:
            ``self``, so loaders can write ``return data.validate()``.
        """
        validate_model_data(self, weight_tol=weight_tol)
        return self


# ---------------------------------------------------------------------- checks
def _fail(field: str, problem: str) -> None:
    raise ModelValidationError(f'body model field {field!r}: {problem}')


def _check_array(field: str, value: Any, shape: Sequence[Optional[int]],
                 integer: bool = False) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        _fail(field, f'expected a numpy array, got {type(value).__name__}')
    if value.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(value.shape, shape)):
        want = tuple('*' if s is None else s for s in shape)
        _fail(field, f'expected shape {want}, got {tuple(value.shape)}')
    if integer:
        if value.dtype.kind not in 'iu':
            _fail(field, f'expected an integer array, got dtype {value.dtype}')
    else:
        if value.dtype.kind not in 'fiub':
            _fail(field, f'expected a numeric array, got dtype {value.dtype}')
        if value.size and not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            _fail(field, f'contains {bad} NaN/inf value(s)')
    return value


def check_kinematic_tree(parents: np.ndarray, field: str = 'parents') -> None:
    """Raise unless ``parents`` (J,) describes exactly one tree (one root, no cycles)."""
    parents = np.asarray(parents)
    n = parents.shape[0]
    if n == 0:
        _fail(field, 'a model needs at least one joint')
    roots = np.flatnonzero(parents < 0)
    if len(roots) != 1:
        _fail(field, f'expected exactly one root (parent -1), found {len(roots)}: '
                     f'{roots.tolist()[:10]}')
    if np.any(parents >= n):
        bad = np.flatnonzero(parents >= n)
        _fail(field, f'parent index out of range for joint(s) {bad.tolist()[:10]} '
                     f'(only {n} joints)')
    if np.any(parents[parents >= 0] == np.flatnonzero(parents >= 0)):
        bad = np.flatnonzero(parents == np.arange(n))
        _fail(field, f'joint(s) {bad.tolist()[:10]} are their own parent')
    # Walk every joint up to the root; a cycle never gets there.
    depth = np.full(n, -1)
    depth[roots[0]] = 0
    for _ in range(n):
        pending = depth < 0
        if not pending.any():
            break
        par = parents[pending]
        known = depth[par] >= 0
        idx = np.flatnonzero(pending)[known]
        depth[idx] = depth[parents[idx]] + 1
    if np.any(depth < 0):
        bad = np.flatnonzero(depth < 0)
        _fail(field, f'joint(s) {bad.tolist()[:10]} are not connected to the root '
                     '(cycle in the kinematic tree)')


def validate_keypoint(name: str, spec: Dict[str, Any], joint_names: Sequence[str],
                      num_vertices: int) -> None:
    """Check one keypoint definition.

    A keypoint is one of:

    - ``{'joint': 'name'}`` or ``{'joint': index}``: a joint of the model;
    - ``{'vertex': index}``: one vertex (e.g. a nose tip);
    - ``{'vertices': [i, ...], 'weights': [w, ...]}``: a weighted vertex average
      (weights default to uniform and must sum to 1);
    - ``{'marker': {'position': [x, y, z], 'joint': name, 'vertices': [a, b, c],
      'weights': [u, v, w], 'depth': t}}``: a point of the body at ``position`` (rest
      pose, the mean shape; model units), skinned with the weights interpolated from
      those of ``joint`` (``depth`` 0: it moves as the joint) to those of the surface
      point ``vertices``/``weights`` (``depth`` 1: as the skin there), its shape
      motion interpolated likewise (a label placed on the body,
      :mod:`smilfit.body_models.markers`).
    """
    field = f'keypoints[{name!r}]'
    kinds = [k for k in KEYPOINT_KINDS if k in spec]
    if len(kinds) != 1:
        _fail(field, f'needs exactly one of {KEYPOINT_KINDS}, got keys {sorted(spec)}')
    kind = kinds[0]
    unknown = set(spec) - {kind} - ({'weights'} if kind == 'vertices' else set())
    if unknown:
        _fail(field, f'unknown key(s) {sorted(unknown)}')
    if kind == 'joint':
        joint = spec['joint']
        if isinstance(joint, str):
            if joint not in joint_names:
                _fail(field, f'joint {joint!r} is not one of the model joints')
        elif not (isinstance(joint, (int, np.integer)) and 0 <= joint < len(joint_names)):
            _fail(field, f'joint index {joint!r} out of range [0, {len(joint_names)})')
    elif kind == 'marker':
        _validate_marker(field, spec['marker'], joint_names, num_vertices)
    elif kind == 'vertex':
        v = spec['vertex']
        if not (isinstance(v, (int, np.integer)) and 0 <= v < num_vertices):
            _fail(field, f'vertex index {v!r} out of range [0, {num_vertices})')
    else:
        ids = np.asarray(spec['vertices'])
        if ids.ndim != 1 or ids.size == 0 or ids.dtype.kind not in 'iu':
            _fail(field, "'vertices' must be a non-empty list of integer vertex ids")
        if ids.min() < 0 or ids.max() >= num_vertices:
            _fail(field, f'vertex ids out of range [0, {num_vertices})')
        if 'weights' in spec:
            w = np.asarray(spec['weights'], dtype=np.float64)
            if w.shape != ids.shape:
                _fail(field, f"'weights' has {w.size} entries for {ids.size} vertices")
            if not np.all(np.isfinite(w)) or abs(w.sum() - 1.0) > 1e-4:
                _fail(field, f"'weights' must be finite and sum to 1 (sum {w.sum():.6g})")


def _validate_marker(field: str, marker: Any, joint_names: Sequence[str],
                     num_vertices: int) -> None:
    if not isinstance(marker, dict) or sorted(marker) != sorted(MARKER_FIELDS):
        _fail(field, f"'marker' needs exactly the fields {list(MARKER_FIELDS)}, got "
                     f'{sorted(marker) if isinstance(marker, dict) else type(marker).__name__}')
    position = np.asarray(marker['position'], dtype=np.float64)
    if position.shape != (3,) or not np.all(np.isfinite(position)):
        _fail(field, "marker 'position' must be 3 finite numbers")
    validate_keypoint(field, {'joint': marker['joint']}, joint_names, num_vertices)
    validate_keypoint(field, {'vertices': marker['vertices'], 'weights': marker['weights']},
                      joint_names, num_vertices)
    depth = marker['depth']
    if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0 <= depth <= 1:
        _fail(field, f"marker 'depth' must be a number in [0, 1], got {depth!r}")


def validate_model_data(data: BodyModelData, weight_tol: float = 1e-3) -> None:
    """Raise :class:`ModelValidationError` naming the first inconsistent field."""
    v = _check_array('v_template', data.v_template, (None, 3))
    V = v.shape[0]
    if V == 0:
        _fail('v_template', 'the mesh has no vertices')
    parents = _check_array('parents', data.parents, (None,), integer=True)
    check_kinematic_tree(parents)
    J = parents.shape[0]
    if len(data.joint_names) != J:
        _fail('joint_names', f'{len(data.joint_names)} names for {J} joints')
    not_str = [n for n in data.joint_names if not isinstance(n, str) or not n]
    if not_str:
        _fail('joint_names', f'names must be non-empty strings, got {not_str[:5]!r}')
    if len(set(data.joint_names)) != J:
        dup = sorted({n for n in data.joint_names if list(data.joint_names).count(n) > 1})
        _fail('joint_names', f'duplicate names {dup[:10]}')
    faces = _check_array('faces', data.faces, (None, 3), integer=True)
    if faces.size and (faces.min() < 0 or faces.max() >= V):
        _fail('faces', f'vertex index out of range [0, {V}) '
                       f'(min {faces.min()}, max {faces.max()})')
    w = _check_array('weights', data.weights, (V, J))
    if np.any(w < -1e-6):
        _fail('weights', 'contains negative skinning weights')
    row_err = np.abs(w.sum(axis=1) - 1.0)
    if np.any(row_err > weight_tol):
        bad = np.flatnonzero(row_err > weight_tol)
        _fail('weights', f'{len(bad)} row(s) do not sum to 1 (first: vertex {bad[0]} sums to '
                         f'{w[bad[0]].sum():.6g})')
    sd = _check_array('shapedirs', data.shapedirs, (V, 3, None))
    K = sd.shape[2]
    pd = _check_array('posedirs', data.posedirs, (V, 3, None))
    if pd.shape[2] not in (0, 9 * (J - 1)):
        _fail('posedirs', f'expected 0 or 9 * (J - 1) = {9 * (J - 1)} pose basis vectors, '
                          f'got {pd.shape[2]}')
    _check_array('J_regressor', data.J_regressor, (J, V))
    _check_array('J', data.J, (J, 3))
    for field in ('scaledirs', 'transdirs'):
        value = getattr(data, field)
        if value is not None:
            _check_array(field, value, (None, J, 3))
    if not np.isfinite(data.trans_factor):
        _fail('trans_factor', 'must be finite')
    if data.shape_mean is not None:
        _check_array('shape_mean', data.shape_mean, (K,))
    if data.shape_cov is not None:
        cov = _check_array('shape_cov', data.shape_cov, (K, K))
        if K and not np.allclose(cov, cov.T, atol=1e-8 * max(1.0, np.abs(cov).max())):
            _fail('shape_cov', 'is not symmetric')
    if data.joint_limits is not None:
        lim = data.joint_limits
        if not isinstance(lim, np.ndarray) or lim.shape != (J, 3, 2):
            _fail('joint_limits', f'expected shape ({J}, 3, 2), got '
                                  f'{getattr(lim, "shape", type(lim).__name__)}')
        if np.any(np.isinf(lim)):
            _fail('joint_limits', 'use NaN, not inf, for an unlimited axis')
        both = np.isfinite(lim).all(axis=-1)
        if np.any(lim[..., 0][both] > lim[..., 1][both]):
            _fail('joint_limits', 'a minimum is larger than its maximum')
    if data.sym_verts is not None:
        sv = _check_array('sym_verts', data.sym_verts, (None,), integer=True)
        if sv.size and (sv.min() < 0 or sv.max() >= V):
            _fail('sym_verts', f'vertex index out of range [0, {V})')
    if data.sym_joint_pairs is not None:
        sp = _check_array('sym_joint_pairs', data.sym_joint_pairs, (None, 2), integer=True)
        if sp.size and (sp.min() < 0 or sp.max() >= J):
            _fail('sym_joint_pairs', f'joint index out of range [0, {J})')
    for name, spec in data.keypoints.items():
        validate_keypoint(name, spec, data.joint_names, V)
    if data.units not in ('m', 'cm', 'mm', 'unknown'):
        _fail('units', f"expected one of 'm', 'cm', 'mm', 'unknown', got {data.units!r}")
    if data.up_axis not in UP_AXES:
        _fail('up_axis', f'expected one of {UP_AXES}, got {data.up_axis!r}')
