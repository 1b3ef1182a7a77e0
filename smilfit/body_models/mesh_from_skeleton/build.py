"""Grow a skinned, shape-parametric :class:`BodyModelData` around a skeleton.

:func:`build_model_from_skeleton` validates the skeleton and options, lays out the tubes
(:mod:`.tubes`), turns their rings into the vertex generator ``v = C @ P + (D @ r) * U``
(see the package docstring), and assembles template, faces, skinning weights
(:mod:`.skinning`), joint regressor, shape directions (:mod:`.shape_directions`),
keypoints and symmetric joint pairs (:mod:`.symmetry`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..model_data import UP_AXES, BodyModelData
from .shape_directions import _shape_skeleton_dirs, default_bone_groups
from .skeleton import ParentSpec, SkeletonError, _children, validate_skeleton
from .skinning import _ring_weights
from .symmetry import find_symmetric_pairs
from .tubes import RadiusSpec, _decompose_paths, _layout_path, _radii, _Rings, _tube_faces

__all__ = ['build_model_from_skeleton']


def _axis_vector(up_axis: str) -> np.ndarray:
    sign = -1.0 if up_axis.startswith('-') else 1.0
    vec = np.zeros(3)
    vec['xyz'.index(up_axis[-1])] = sign
    return vec


def build_model_from_skeleton(
        joint_names: Sequence[str], parents: Sequence[ParentSpec], rest_positions: Any, *,
        radius: RadiusSpec = None, radius_fraction: float = 0.2, rings: int = 6,
        segments: int = 16, cap_rings: int = 3, blend: float = 0.35,
        num_betas: Optional[int] = None,
        bone_groups: Optional[Mapping[str, Sequence[str]]] = None,
        shape_step: float = 0.1, tip_keypoints: bool = False,
        joint_limits: Optional[np.ndarray] = None, units: str = 'unknown',
        up_axis: str = 'y', name: str = 'model') -> BodyModelData:
    """Grow a skinned, shape-parametric body model around a skeleton.

    Args:
        joint_names: J unique joint names.
        parents: J parent names or indices (``None``, ``''`` or ``-1`` for the root).
        rest_positions: (J, 3) rest joint positions in model units (``units``).
        radius: tube radius in model units: ``None`` (``radius_fraction`` times the
            mean length of the bones meeting at each joint), one number, one value
            per joint, or ``{joint name: radius}`` (others default). Along a bone the
            radius is interpolated linearly between its joints.
        radius_fraction: see ``radius``.
        rings: ring intervals per bone (>= 1).
        segments: vertices per ring (>= 3).
        cap_rings: rings in each rounded end cap, besides its pole (>= 1).
        blend: half-width of the skinning blend around a joint, as a fraction
            (<= 0.5) of the shortest bone meeting there.
        num_betas: keep the first this many shape directions (default: all). Order:
            ``size``, ``thickness``, then one ``length:*`` per bone group.
        bone_groups: ``{direction name: [child joint of each bone]}`` for the
            bone-length directions; default :func:`default_bone_groups`.
        shape_step: relative change per unit shape coefficient (0.1 = 10 %).
        tip_keypoints: add a ``'<joint>_tip'`` vertex keypoint at the pole of each
            tube end at an end of the skeleton (a leaf, or a root with one child):
            the nose tip, a paw's sole, ...
        joint_limits: (J, 3, 2) limits in radians (NaN = unlimited) or ``None``.
        units, up_axis, name: stored on the model; ``up_axis`` also orients the ring
            seams.

    Returns:
        A validated :class:`BodyModelData`. ``extra['builder']`` records the options,
        the per-joint radii and the shape direction names.

    Raises:
        SkeletonError: on an unusable skeleton or option, naming the problem.
    """
    skel = validate_skeleton(joint_names, parents, rest_positions)
    if int(rings) < 1 or int(segments) < 3 or int(cap_rings) < 1:
        raise SkeletonError(f'need rings >= 1, segments >= 3 and cap_rings >= 1, got '
                            f'{rings}, {segments}, {cap_rings}')
    if not 0.0 < blend <= 0.5:
        raise SkeletonError(f'blend must be in (0, 0.5], got {blend}')
    if units not in ('m', 'cm', 'mm', 'unknown'):
        raise SkeletonError(f"units must be 'm', 'cm', 'mm' or 'unknown', got {units!r}")
    if up_axis not in UP_AXES:
        raise SkeletonError(f'up_axis must be one of {UP_AXES}, got {up_axis!r}')
    if not (np.isfinite(shape_step) and shape_step > 0):
        raise SkeletonError(f'shape_step must be positive, got {shape_step}')
    J = len(skel.joint_names)
    radii = _radii(skel, radius, radius_fraction)
    S = int(segments)

    # Ring layout, one closed tube per path.
    rings_data = _Rings()
    joint_ring: Dict[int, int] = {}
    tubes: List[Tuple[int, int]] = []
    paths = _decompose_paths(skel)
    for k, path in enumerate(paths):
        tubes.append(_layout_path(path, k == 0, skel, radii, int(rings), int(cap_rings),
                                  _axis_vector(up_axis), rings_data, joint_ring))
    assert len(joint_ring) == J, 'every joint owns one ring'

    # Per-vertex generator: poles are one vertex, other rings `segments` vertices.
    is_pole = np.array(rings_data.is_pole)
    per_ring = np.where(is_pole, 1, S)
    ring_start = np.concatenate([[0], np.cumsum(per_ring)[:-1]])
    V = int(per_ring.sum())
    ring_of_vertex = np.repeat(np.arange(len(is_pole)), per_ring)
    slot = np.arange(V) - ring_start[ring_of_vertex]
    theta = 2.0 * np.pi * slot / S
    nrm, bin_, axis = (np.asarray(x)[ring_of_vertex] for x in
                       (rings_data.normal, rings_data.binormal, rings_data.axis))
    cos_phi = np.asarray(rings_data.cos_phi)[ring_of_vertex]
    sin_phi = np.asarray(rings_data.sin_phi)[ring_of_vertex]
    U = cos_phi[:, None] * (np.cos(theta)[:, None] * nrm + np.sin(theta)[:, None] * bin_) \
        + sin_phi[:, None] * axis
    c_idx = np.asarray(rings_data.center_idx)[ring_of_vertex]
    c_w = np.asarray(rings_data.center_w)[ring_of_vertex]
    r_idx = np.asarray(rings_data.radius_idx)[ring_of_vertex]
    r_w = np.asarray(rings_data.radius_w)[ring_of_vertex]

    def generate(P: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(..., J, 3) positions, (..., J) radii -> (..., V, 3) vertices (linear)."""
        C = (c_w[:, 0, None] * P[..., c_idx[:, 0], :] + c_w[:, 1, None] * P[..., c_idx[:, 1], :])
        R = r_w[:, 0] * r[..., r_idx[:, 0]] + r_w[:, 1] * r[..., r_idx[:, 1]]
        return C + R[..., None] * U

    v_template = generate(skel.rest_positions, radii)
    faces = np.concatenate([_tube_faces(int(ring_start[a]), b - a - 1, S) for a, b in tubes])
    weights = _ring_weights(np.asarray(rings_data.bone, dtype=np.float64), skel,
                            blend)[ring_of_vertex]

    # Joint regressor: the mean of the ring centred on each joint.
    J_regressor = np.zeros((J, V))
    for j, rid in joint_ring.items():
        J_regressor[j, ring_start[rid]:ring_start[rid] + S] = 1.0 / S

    groups = default_bone_groups(skel) if bone_groups is None else dict(bone_groups)
    dir_names, dP, dr = _shape_skeleton_dirs(skel, radii, groups, float(shape_step))
    if num_betas is not None:
        if not 0 <= int(num_betas) <= len(dir_names):
            raise SkeletonError(f'num_betas={num_betas}, but this skeleton has '
                                f'{len(dir_names)} shape directions: {dir_names}')
        dir_names, dP, dr = dir_names[:num_betas], dP[:num_betas], dr[:num_betas]
    shapedirs = np.ascontiguousarray(generate(dP, dr).transpose(1, 2, 0))  # (V, 3, K)
    K = shapedirs.shape[2]

    keypoints: Dict[str, Dict[str, Any]] = {n: {'joint': n} for n in skel.joint_names}
    if tip_keypoints:
        kids = _children(skel.parents)
        for a, b in tubes:
            for rid in (a, b):
                j = rings_data.center_idx[rid][0]
                tip = f'{skel.joint_names[j]}_tip'
                # Ends of the skeleton: leaves, and a root with a single child.
                if len(kids[j]) + (skel.parents[j] >= 0) == 1 and tip not in keypoints:
                    keypoints[tip] = {'vertex': int(ring_start[rid])}

    data = BodyModelData(
        v_template=v_template, faces=faces, weights=weights, parents=skel.parents.copy(),
        joint_names=list(skel.joint_names), shapedirs=shapedirs,
        posedirs=np.zeros((V, 3, 0)), J_regressor=J_regressor,
        J=skel.rest_positions.copy(), static_joint_locs=False,
        shape_mean=np.zeros(K), shape_cov=np.eye(K),
        joint_limits=None if joint_limits is None else np.asarray(joint_limits, np.float64),
        sym_joint_pairs=find_symmetric_pairs(skel.joint_names), keypoints=keypoints,
        units=units, up_axis=up_axis, name=name,
        extra={'builder': {
            'shape_directions': list(dir_names), 'shape_step': float(shape_step),
            'bone_groups': {g: list(m) for g, m in groups.items()},
            'radii': radii.tolist(), 'rings': int(rings), 'segments': S,
            'cap_rings': int(cap_rings), 'blend': float(blend),
            'num_tubes': len(tubes)}})
    return data.validate()
