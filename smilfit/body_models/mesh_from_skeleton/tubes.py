"""The mesh: one closed tube per path of the skeleton, as a generator linear in the skeleton.

Mesh layout: the tree is split into paths (the longest straight-ish chains; the root
path may run through the root, e.g. tail tip -> pelvis -> nose). Each path is one
closed tube (rings of ``segments`` vertices, ``rings`` intervals per bone, rounded
end caps with ``cap_rings`` rings and a pole vertex), so the mesh is a union of
watertight, outward-oriented components that share no vertices.

Each ring is recorded (:class:`_Rings`) as interpolation weights of its centre between
two joints and of its radius between two joint radii, its frame and its bone coordinate
(for skinning); :func:`~.build.build_model_from_skeleton` turns them into vertices. The
tube radius per joint comes from :func:`_radii`.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from .skeleton import Skeleton, SkeletonError, _children

__all__ = ['RadiusSpec']

RadiusSpec = Union[None, float, Sequence[float], np.ndarray, Mapping[str, float]]


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


# -------------------------------------------------------------------- paths
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


# ------------------------------------------------------------------- radius
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


# -------------------------------------------------------------------- rings
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
