"""Procedural body models: a skeleton -> a skinned, shape-parametric :class:`BodyModelData`.

The project cannot ship third-party model files, so it grows its own: a tube is swept
along the skeleton and skinned to it. The construction is *linear* in the skeleton:
every vertex is

    ``v = C @ P + (D @ r) * U``

with ``P`` (J, 3) the rest joint positions, ``r`` (J,) the per-joint tube radii,
``C`` / ``D`` fixed interpolation weights (two non-zeros per vertex) and ``U`` (V, 3)
fixed offset directions. A shape direction is therefore just a change of skeleton
``(dP, dr)`` pushed through the same map, and since every joint is the centre of one
ring of ``segments`` evenly spaced vertices (whose offsets ``U`` average to zero), the
joint regressor (the mean of that ring) returns ``P + sum_k beta_k dP_k`` *exactly*
for any shape coefficients ``beta``.

Mesh layout: the tree is split into paths (the longest straight-ish chains; the root
path may run through the root, e.g. tail tip -> pelvis -> nose). Each path is one
closed tube (rings of ``segments`` vertices, ``rings`` intervals per bone, rounded
end caps with ``cap_rings`` rings and a pole vertex), so the mesh is a union of
watertight, outward-oriented components that share no vertices.

Skinning (SMPL convention: a bone ``p -> c`` moves with joint ``p``): the vertices of
bone ``p -> c`` belong to ``p``, blended smoothly (smoothstep) with ``parent(p)``
around joint ``p`` and with ``c`` around joint ``c`` (50/50 exactly at a joint), so
each vertex has at most two non-zero weights. Leaf joints get no weight.
"""
from __future__ import annotations

import dataclasses
import re
from typing import (Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple,
                    Union)

import numpy as np

from .model_data import UP_AXES, BodyModelData

__all__ = [
    'SkeletonError', 'Skeleton', 'validate_skeleton', 'mirror_joint_name',
    'find_symmetric_pairs', 'default_bone_groups', 'build_model_from_skeleton',
]

RadiusSpec = Union[None, float, Sequence[float], np.ndarray, Mapping[str, float]]
ParentSpec = Union[None, int, str]


class SkeletonError(ValueError):
    """The input skeleton (names, parents, rest positions, options) is unusable."""


class Skeleton(NamedTuple):
    """A validated skeleton; unpacks as ``(joint_names, parents, rest_positions)``.

    Attributes:
        joint_names: J unique names.
        parents: (J,) int64 parent index per joint, ``-1`` for the single root.
        rest_positions: (J, 3) float64 rest joint positions in model units.
    """

    joint_names: Tuple[str, ...]
    parents: np.ndarray
    rest_positions: np.ndarray


# ------------------------------------------------------------------ validation
def _resolve_parents(joint_names: Sequence[str], parents: Sequence[ParentSpec]) -> np.ndarray:
    """Parent names / indices (``None``, ``''``, ``-1`` for the root) -> (J,) int64."""
    index = {name: i for i, name in enumerate(joint_names)}
    out = np.empty(len(joint_names), dtype=np.int64)
    for j, (name, par) in enumerate(zip(joint_names, parents)):
        if par is None or (isinstance(par, str) and par.strip() == ''):
            out[j] = -1
        elif isinstance(par, str):
            if par not in index:
                raise SkeletonError(f'joint {name!r} has unknown parent {par!r}')
            out[j] = index[par]
        elif isinstance(par, (int, np.integer)) and not isinstance(par, bool):
            if par < -1 or par >= len(joint_names):
                raise SkeletonError(f'joint {name!r} has parent index {int(par)} out of '
                                    f'range [-1, {len(joint_names)})')
            out[j] = int(par)
        else:
            raise SkeletonError(f'joint {name!r}: parent must be a joint name, an index '
                                f'or None, got {par!r}')
    return out


def _check_tree(names: Sequence[str], parents: np.ndarray) -> None:
    """Raise :class:`SkeletonError` unless ``parents`` is one tree (one root, no cycle)."""
    J = len(names)
    self_parent = np.flatnonzero(parents == np.arange(J))
    if self_parent.size:
        raise SkeletonError(f'joint {names[self_parent[0]]!r} is its own parent')
    roots = np.flatnonzero(parents < 0)
    if roots.size != 1:
        listed = [names[i] for i in roots[:10]]
        raise SkeletonError(f'a skeleton needs exactly one root (joint without parent), '
                            f'found {roots.size}: {listed}')
    # Depth by repeated relaxation; joints on a cycle never reach the root.
    depth = np.full(J, -1)
    depth[roots[0]] = 0
    for _ in range(J):
        pending = np.flatnonzero(depth < 0)
        if pending.size == 0:
            break
        known = pending[depth[parents[pending]] >= 0]
        if known.size == 0:
            break
        depth[known] = depth[parents[known]] + 1
    if np.any(depth < 0):
        bad = [names[i] for i in np.flatnonzero(depth < 0)[:10]]
        raise SkeletonError(f'the skeleton is not a tree: joints {bad} are not connected '
                            'to the root (their parents form a cycle)')


def validate_skeleton(joint_names: Sequence[str], parents: Sequence[ParentSpec],
                      rest_positions: Any, *, min_bone_length: Optional[float] = None
                      ) -> Skeleton:
    """Check a raw skeleton and normalise it; errors name the offending joint.

    Args:
        joint_names: J unique, non-empty names.
        parents: J parent names or indices; ``None``, ``''`` or ``-1`` marks the root.
        rest_positions: (J, 3) rest joint positions (model units).
        min_bone_length: bones not longer than this are rejected as zero-length;
            default ``1e-6`` times the skeleton's bounding-box diagonal.

    Returns:
        A :class:`Skeleton` with int64 parents and float64 positions.
    """
    names = list(joint_names)
    if not names:
        raise SkeletonError('the skeleton has no joints')
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise SkeletonError(f'joint names must be non-empty strings, got {name!r}')
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise SkeletonError(f'duplicate joint names: {dup[:10]}')
    J = len(names)
    try:
        pos = np.asarray(rest_positions, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SkeletonError(f'rest positions are not a numeric (J, 3) array: {err}') from err
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise SkeletonError(f'rest positions must have shape (J, 3), got {pos.shape}')
    if pos.shape[0] != J:
        raise SkeletonError(f'{J} joint names but {pos.shape[0]} rest positions')
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if bad.size:
        raise SkeletonError(f'rest position of joint {names[bad[0]]!r} is not finite: '
                            f'{pos[bad[0]].tolist()}')
    parents = list(parents)
    if len(parents) != J:
        raise SkeletonError(f'{J} joint names but {len(parents)} parents')
    par = _resolve_parents(names, parents)
    _check_tree(names, par)
    if J < 2:
        raise SkeletonError('a skeleton needs at least one bone (two joints)')
    if min_bone_length is None:
        extent = float(np.linalg.norm(pos.max(axis=0) - pos.min(axis=0)))
        min_bone_length = 1e-6 * extent
    child = np.flatnonzero(par >= 0)
    length = np.linalg.norm(pos[child] - pos[par[child]], axis=1)
    short = child[length <= min_bone_length]
    if short.size:
        c = short[0]
        raise SkeletonError(f'bone {names[par[c]]!r} -> {names[c]!r} has zero length '
                            f'({np.linalg.norm(pos[c] - pos[par[c]]):.3g})')
    return Skeleton(tuple(names), par, pos)


# ------------------------------------------------------------------- symmetry
# Side markers: (left pattern, right pattern, left text, right text), tried in order.
# Separators keep 'l_' / '_r' from matching inside words like 'tail_1' or 'lumbar'.
_SIDE_RULES: Tuple[Tuple[str, str, str, str], ...] = (
    (r'(?<=[_.\-])L$', r'(?<=[_.\-])R$', 'L', 'R'),
    (r'(?<=[_.\-])l$', r'(?<=[_.\-])r$', 'l', 'r'),
    (r'^L(?=[_.\-])', r'^R(?=[_.\-])', 'L', 'R'),
    (r'^l(?=[_.\-])', r'^r(?=[_.\-])', 'l', 'r'),
    (r'left', r'right', 'left', 'right'),
    (r'Left', r'Right', 'Left', 'Right'),
    (r'LEFT', r'RIGHT', 'LEFT', 'RIGHT'),
)


def _side(name: str) -> Optional[Tuple[bool, str]]:
    """``(is_left, mirrored name)`` from the first matching side marker, or ``None``."""
    for left, right, left_text, right_text in _SIDE_RULES:
        if re.search(left, name):
            return True, re.sub(left, right_text, name, count=1)
        if re.search(right, name):
            return False, re.sub(right, left_text, name, count=1)
    return None


def mirror_joint_name(name: str) -> Optional[str]:
    """The name of the other side's joint (``hip_L`` <-> ``hip_R``, ``l_ear`` <->
    ``r_ear``, ``left_paw`` <-> ``right_paw``), or ``None`` without a side marker."""
    side = _side(name)
    return None if side is None else side[1]


def find_symmetric_pairs(joint_names: Sequence[str]) -> Optional[np.ndarray]:
    """(P, 2) int64 ``(left, right)`` joint index pairs found by name, or ``None``."""
    index = {n: i for i, n in enumerate(joint_names)}
    pairs = []
    for i, name in enumerate(joint_names):
        side = _side(name)
        j = index.get(side[1]) if side is not None else None
        if side is not None and side[0] and j is not None and j != i:
            pairs.append((i, j))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2) if pairs else None


# ------------------------------------------------------------------ topology
def _children(parents: np.ndarray) -> List[List[int]]:
    kids: List[List[int]] = [[] for _ in range(len(parents))]
    for j, p in enumerate(parents):
        if p >= 0:
            kids[p].append(j)
    return kids


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def _decompose_paths(skel: Skeleton) -> List[List[int]]:
    """Split the tree into paths of adjacent joints, each to become one closed tube.

    From a joint, a path continues into the child whose bone is most aligned with the
    incoming bone; the other children start branch paths (whose first joint is the
    branch point, already owned by an earlier path). When the root has two children
    pointing in roughly opposite directions (tail and spine), the root path runs
    through the root from one end to the other.
    """
    parents, pos = skel.parents, skel.rest_positions
    kids = _children(parents)
    root = int(np.flatnonzero(parents < 0)[0])

    def descend(first: int, frm: int) -> List[int]:
        chain = [first]
        while kids[chain[-1]]:
            cur = chain[-1]
            prev = frm if len(chain) == 1 else chain[-2]
            d_in = _unit(pos[cur] - pos[prev])
            d_out = _unit(pos[kids[cur]] - pos[cur])
            chain.append(kids[cur][int(np.argmax(d_out @ d_in))])
        return chain

    rk = kids[root]
    dirs = _unit(pos[rk] - pos[root])
    cos = dirs @ dirs.T + 2.0 * np.eye(len(rk))  # exclude pairing a child with itself
    if len(rk) >= 2 and cos.min() < -0.5:
        a, b = np.unravel_index(int(np.argmin(cos)), cos.shape)
        a, b = sorted((int(a), int(b)))
        main = descend(rk[a], root)[::-1] + [root] + descend(rk[b], root)
    else:
        main = [root] + descend(rk[0], root)
    paths = [main]
    on_path = set(main)
    queue = list(main)
    while queue:
        j = queue.pop(0)
        for c in kids[j]:
            if c not in on_path:
                branch = [j] + descend(c, j)
                paths.append(branch)
                on_path.update(branch)
                queue.extend(branch[1:])
    return paths


# --------------------------------------------------------------------- layout
@dataclasses.dataclass
class _Rings:
    """Per-ring generator data (N rings); vertices are rings x segments plus poles."""

    center_idx: List[Tuple[int, int]] = dataclasses.field(default_factory=list)
    center_w: List[Tuple[float, float]] = dataclasses.field(default_factory=list)
    radius_idx: List[Tuple[int, int]] = dataclasses.field(default_factory=list)
    radius_w: List[Tuple[float, float]] = dataclasses.field(default_factory=list)
    normal: List[np.ndarray] = dataclasses.field(default_factory=list)    # ring frame n
    binormal: List[np.ndarray] = dataclasses.field(default_factory=list)  # ring frame b
    axis: List[np.ndarray] = dataclasses.field(default_factory=list)      # cap offset dir
    cos_phi: List[float] = dataclasses.field(default_factory=list)        # ring radius factor
    sin_phi: List[float] = dataclasses.field(default_factory=list)        # axial offset factor
    bone: List[Tuple[int, int, float]] = dataclasses.field(default_factory=list)  # (p, c, s)
    is_pole: List[bool] = dataclasses.field(default_factory=list)

    def add(self, center: Tuple[Tuple[int, int], Tuple[float, float]],
            radius: Tuple[Tuple[int, int], Tuple[float, float]], n: np.ndarray,
            b: np.ndarray, axis: np.ndarray, phi: float, bone: Tuple[int, int, float],
            pole: bool = False) -> int:
        self.center_idx.append(center[0])
        self.center_w.append(center[1])
        self.radius_idx.append(radius[0])
        self.radius_w.append(radius[1])
        self.normal.append(n)
        self.binormal.append(b)
        self.axis.append(axis)
        # A pole is exactly on the axis (cos(pi / 2) is 6e-17 in floating point).
        self.cos_phi.append(0.0 if pole else float(np.cos(phi)))
        self.sin_phi.append(1.0 if pole else float(np.sin(phi)))
        self.bone.append(bone)
        self.is_pole.append(pole)
        return len(self.is_pole) - 1


def _initial_normal(tangent: np.ndarray, up: np.ndarray) -> np.ndarray:
    """A unit vector normal to ``tangent``, towards ``up`` when possible (ring seam)."""
    for ref in (up, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0])):
        n = ref - (ref @ tangent) * tangent
        if np.linalg.norm(n) > 1e-3:
            return _unit(n)
    raise AssertionError('unreachable: some axis is not parallel to the tangent')


def _transport(n: np.ndarray, tangent: np.ndarray) -> np.ndarray:
    """Carry frame normal ``n`` onto the plane normal to ``tangent`` (little twist)."""
    m = n - (n @ tangent) * tangent
    if np.linalg.norm(m) < 1e-6:  # the path folded back exactly onto itself
        return _initial_normal(tangent, n)
    return _unit(m)


def _layout_path(path: List[int], owned_start: bool, skel: Skeleton, radii: np.ndarray,
                 rings: int, cap_rings: int, up: np.ndarray, out: _Rings,
                 joint_ring: Dict[int, int]) -> Tuple[int, int]:
    """Append the rings of one path's tube to ``out``; return its (first, last) ring ids.

    ``joint_ring`` receives, for each joint the path owns, the id of the ring centred
    on it (used by the joint regressor).
    """
    pos, parents = skel.rest_positions, skel.parents
    m = len(path) - 1
    # Bones in path order: the tree bone (p -> c), its length and the path direction.
    bones = []
    for a, b in zip(path[:-1], path[1:]):
        p, c = (a, b) if parents[b] == a else (b, a)
        bones.append((p, c, float(np.linalg.norm(pos[c] - pos[p])), parents[b] == a))
    d = _unit(np.stack([pos[b] - pos[a] for a, b in zip(path[:-1], path[1:])]))
    # Joint tangents: bisect the two bones so a bend does not pinch the tube.
    T = np.concatenate([d[:1], _unit(d[:-1] + d[1:]), d[-1:]])
    folded = np.linalg.norm(d[:-1] + d[1:], axis=1) < 1e-6
    T[1:-1][folded] = d[:-1][folded]

    # A branch path starts inside its parent's body: begin it thin, not at the
    # (possibly much fatter) branch joint's radius.
    start_r = path[0]
    if not owned_start and radii[path[1]] < radii[path[0]]:
        start_r = path[1]

    def bone_point(k: int, tau: float) -> Tuple[Tuple[int, int], Tuple[float, float],
                                                 Tuple[int, int], Tuple[float, float],
                                                 Tuple[int, int, float]]:
        """Centre/radius interpolation and bone coordinate at fraction tau of bone k."""
        a, b = path[k], path[k + 1]
        ra = start_r if k == 0 else a
        p, c, L, forward = bones[k]
        s = tau * L if forward else (1.0 - tau) * L
        return (a, b), (1.0 - tau, tau), (ra, b), (1.0 - tau, tau), (p, c, s)

    n = _initial_normal(T[0], up)

    def frame(t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        nonlocal n
        n = _transport(n, t)
        return n, np.cross(t, n)

    # Start cap: pole, then rings widening towards the first joint ring.
    nn, bb = frame(T[0])
    phis = np.pi / 2 * np.arange(cap_rings, 0, -1) / (cap_rings + 1)

    def cap_s(phi: float, r_joint: int, k: int, beyond_end: bool) -> Tuple[int, int, float]:
        # Bone coordinate of a cap ring: past the end of bone k by r sin(phi).
        p, c, L, forward = bones[k]
        off = radii[r_joint] * np.sin(phi)
        at_c = forward == beyond_end  # the cap sits at the bone's child end
        return (p, c, L + off if at_c else -off)

    j0 = path[0]
    first = out.add(((j0, j0), (1.0, 0.0)), ((start_r, start_r), (1.0, 0.0)), nn, bb, -T[0],
                    np.pi / 2, cap_s(np.pi / 2, start_r, 0, False), pole=True)
    for phi in phis:
        out.add(((j0, j0), (1.0, 0.0)), ((start_r, start_r), (1.0, 0.0)), nn, bb, -T[0],
                phi, cap_s(phi, start_r, 0, False))
    ci, cw, ri, rw, bone = bone_point(0, 0.0)
    rid = out.add((ci, cw), (ri, rw), nn, bb, T[0], 0.0, bone)
    if owned_start:
        joint_ring[j0] = rid
    # Body: `rings` intervals per bone; interior ring tangents turn gradually from the
    # joint bisectors to the bone direction so that neighbouring rings do not cross.
    for k in range(m):
        for i in range(1, rings + 1):
            tau = i / rings
            t = d[k] + max(0.0, 1 - 2 * tau) * (T[k] - d[k]) \
                + max(0.0, 2 * tau - 1) * (T[k + 1] - d[k])
            t = _unit(t) if np.linalg.norm(t) > 1e-9 else d[k]
            nn, bb = frame(t)
            ci, cw, ri, rw, bone = bone_point(k, tau)  # tau = 1: exactly joint path[k+1]
            rid = out.add((ci, cw), (ri, rw), nn, bb, t, 0.0, bone)
            if i == rings:
                joint_ring[path[k + 1]] = rid
    # End cap: rings narrowing to the end pole.
    je = path[-1]
    for phi in phis[::-1]:
        out.add(((je, je), (1.0, 0.0)), ((je, je), (1.0, 0.0)), nn, bb, T[-1], phi,
                cap_s(phi, je, m - 1, True))
    last = out.add(((je, je), (1.0, 0.0)), ((je, je), (1.0, 0.0)), nn, bb, T[-1],
                   np.pi / 2, cap_s(np.pi / 2, je, m - 1, True), pole=True)
    return first, last


def _tube_faces(first_vertex: int, n_rings: int, segments: int) -> np.ndarray:
    """Faces of one closed tube: pole, ``n_rings`` rings of ``segments``, pole.

    Rings advance along the tube axis ``t`` and ring vertex angles increase from the
    frame normal ``n`` towards ``b = t x n``; then ``(k,i), (k,i+1), (k+1,i)`` has an
    outward normal (``e_theta x t = u``).
    """
    S = segments
    start_pole = first_vertex
    ring0 = first_vertex + 1
    end_pole = ring0 + n_rings * S
    idx = ring0 + np.arange(n_rings * S).reshape(n_rings, S)
    a, b = idx[:-1], np.roll(idx[:-1], -1, axis=1)
    c, d = idx[1:], np.roll(idx[1:], -1, axis=1)
    quads = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                            np.stack([b, d, c], -1).reshape(-1, 3)])
    r0, r0n = idx[0], np.roll(idx[0], -1)
    rl, rln = idx[-1], np.roll(idx[-1], -1)
    start = np.stack([np.full(S, start_pole), r0n, r0], -1)
    end = np.stack([rl, rln, np.full(S, end_pole)], -1)
    return np.concatenate([start, quads, end]).astype(np.int64)


# ------------------------------------------------------------------- skinning
def _smoothstep(x: np.ndarray) -> np.ndarray:
    """0 at x <= -1, 1/2 at 0, 1 at x >= 1, C1-smooth in between."""
    u = np.clip((x + 1.0) / 2.0, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _ring_weights(bone: np.ndarray, skel: Skeleton, blend: float) -> np.ndarray:
    """(N, 3) rows ``(p, c, s)`` of bone ``p -> c`` at distance ``s`` from ``p``
    -> (N, J) skinning weights (see module docstring)."""
    parents, pos = skel.parents, skel.rest_positions
    J = len(parents)
    kids = _children(parents)
    has_kids = np.array([len(k) > 0 for k in kids])
    child = np.flatnonzero(parents >= 0)
    length = np.zeros(J)
    length[child] = np.linalg.norm(pos[child] - pos[parents[child]], axis=1)
    # Blend half-width at each joint: a fraction of the shortest bone meeting there,
    # so the two blends of one bone (<= blend * its length each) never overlap.
    shortest = np.array([min([length[k] for k in kids[j]]
                             + ([length[j]] if parents[j] >= 0 else []))
                         for j in range(J)])
    width = blend * shortest
    p = bone[:, 0].astype(np.int64)
    c = bone[:, 1].astype(np.int64)
    s = bone[:, 2]
    L = length[c]
    w_prev = np.where(parents[p] >= 0, 1.0 - _smoothstep(s / width[p]), 0.0)
    w_next = np.where(has_kids[c], 1.0 - _smoothstep((L - s) / width[c]), 0.0)
    w_own = np.clip(1.0 - w_prev - w_next, 0.0, None)
    W = np.zeros((len(bone), J))
    rows = np.arange(len(bone))
    np.add.at(W, (rows, np.maximum(parents[p], 0)), w_prev)
    np.add.at(W, (rows, c), w_next)
    np.add.at(W, (rows, p), w_own)
    return W / W.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------- shape
def _subtree(parents: np.ndarray, j: int) -> np.ndarray:
    """(J,) bool mask of ``j`` and all its descendants."""
    mask = np.zeros(len(parents), dtype=bool)
    mask[j] = True
    for _ in range(len(parents)):
        grown = mask | ((parents >= 0) & mask[np.maximum(parents, 0)])
        if np.array_equal(grown, mask):
            break
        mask = grown
    return mask


def default_bone_groups(skel: Skeleton) -> Dict[str, List[str]]:
    """Bone groups for the bone-length shape directions: the unbranched segments
    between branch points (spine, neck, tail, each leg, ...), with left/right mirror
    segments merged so that one coefficient lengthens both limbs.

    Returns:
        ``{group name: [child joint name of each bone]}``; a group is named after its
        segments' end joints (``'length:tail_6'``, ``'length:knee_L+knee_R'``).
    """
    names, parents = skel.joint_names, skel.parents
    kids = _children(parents)
    segments: List[List[int]] = []
    starts = [j for j in range(len(names)) if len(kids[j]) != 1 or parents[j] < 0]
    for s in starts:
        for c in kids[s]:
            seg = [c]
            while len(kids[seg[-1]]) == 1:
                seg.append(kids[seg[-1]][0])
            segments.append(seg)
    index = {n: i for i, n in enumerate(names)}
    mirror = {}
    for i, n in enumerate(names):
        other = mirror_joint_name(n)
        if other in index:
            mirror[i] = index[other]
    groups: Dict[str, List[str]] = {}
    used = set()
    for k, seg in enumerate(segments):
        if k in used:
            continue
        members = [seg]
        mirrored = sorted(mirror.get(j, -1) for j in seg)
        if all(j in mirror for j in seg):
            for k2 in range(k + 1, len(segments)):
                if k2 not in used and sorted(segments[k2]) == mirrored:
                    members.append(segments[k2])
                    used.add(k2)
                    break
        used.add(k)
        name = 'length:' + '+'.join(names[m[-1]] for m in members)
        groups[name] = [names[j] for m in members for j in m]
    return groups


def _shape_skeleton_dirs(skel: Skeleton, radii: np.ndarray,
                         groups: Mapping[str, Sequence[str]], step: float
                         ) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Shape directions as skeleton changes: names, dP (K, J, 3) and dr (K, J).

    One unit of a coefficient is a relative change of ``step`` (0.1 = 10 %):
    ``size`` scales everything about the root, ``thickness`` the radii, and each
    ``length:*`` group lengthens its bones (moving every joint below them).
    """
    names, parents, pos = skel.joint_names, skel.parents, skel.rest_positions
    index = {n: i for i, n in enumerate(names)}
    root = int(np.flatnonzero(parents < 0)[0])
    dir_names = ['size', 'thickness']
    dP = [step * (pos - pos[root]), np.zeros_like(pos)]
    dr = [step * radii, step * radii]
    for gname, members in groups.items():
        delta = np.zeros_like(pos)
        for m in members:
            if m not in index:
                raise SkeletonError(f'bone group {gname!r} names unknown joint {m!r}')
            c = index[m]
            if parents[c] < 0:
                raise SkeletonError(f'bone group {gname!r}: {m!r} is the root, which '
                                    'ends no bone')
            delta[_subtree(parents, c)] += step * (pos[c] - pos[parents[c]])
        dir_names.append(gname)
        dP.append(delta)
        dr.append(np.zeros_like(radii))
    return dir_names, np.stack(dP), np.stack(dr)


# --------------------------------------------------------------------- radius
def _radii(skel: Skeleton, radius: RadiusSpec, radius_fraction: float) -> np.ndarray:
    """(J,) tube radius per joint, in model units."""
    names, parents, pos = skel.joint_names, skel.parents, skel.rest_positions
    J = len(names)
    child = np.flatnonzero(parents >= 0)
    length = np.linalg.norm(pos[child] - pos[parents[child]], axis=1)
    # Default: a fraction of the mean length of the bones meeting at each joint.
    total = np.zeros(J)
    count = np.zeros(J)
    np.add.at(total, child, length)
    np.add.at(total, parents[child], length)
    np.add.at(count, child, 1)
    np.add.at(count, parents[child], 1)
    default = radius_fraction * total / count
    if radius is None:
        r = default
    elif isinstance(radius, Mapping):
        unknown = sorted(set(radius) - set(names))
        if unknown:
            raise SkeletonError(f'radius given for unknown joint(s) {unknown[:10]}')
        r = default.copy()
        for n, value in radius.items():
            r[names.index(n)] = value
    else:
        r = np.asarray(radius, dtype=np.float64)
        if r.ndim == 0:
            r = np.full(J, float(r))
        elif r.shape != (J,):
            raise SkeletonError(f'radius must be a number, a mapping or one value per '
                                f'joint ({J}), got shape {r.shape}')
    r = np.asarray(r, dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(r) & (r > 0)))
    if bad.size:
        raise SkeletonError(f'radius of joint {names[bad[0]]!r} must be positive and '
                            f'finite, got {r[bad[0]]}')
    return r


def _axis_vector(up_axis: str) -> np.ndarray:
    sign = -1.0 if up_axis.startswith('-') else 1.0
    vec = np.zeros(3)
    vec['xyz'.index(up_axis[-1])] = sign
    return vec


# ---------------------------------------------------------------------- build
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
