"""Skeleton edges between keypoints, from the kinematic tree of the joints carrying them.

Data without a skeleton of its own (synthetic renders, a labels file without edges) still
has one in the body model: each keypoint is a joint or hangs on one, and the joints form a
tree. A joint keypoint is linked to the keypoint on the nearest ancestor joint that carries
one, so the edges follow the body (nose - head - neck - spine ...). A surface keypoint (a
vertex or vertex set: an ear tip, a claw) is linked to the nearest joint keypoint in the
rest pose among those on its carrying joint's subtree: skinning puts a tip's vertices on
the bone that ends there, whose joint is one level above the tip's natural neighbour.
Where the joint the pieces meet at carries no keypoint (a bare root between the haunches,
the tail and the trunk), the pieces are joined by the pairs of points whose joints are
fewest bones apart, so the points form one tree.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['kinematic_point_edges', 'model_point_edges']


def _ancestor_point(parents: Sequence[int], joint: int, first_on: dict) -> int:
    """The first point on the nearest strict ancestor of ``joint`` carrying one, or -1."""
    ancestor, seen = parents[joint], {joint}
    while ancestor >= 0:
        if ancestor in seen:   # a malformed (cyclic) table: stop rather than loop
            raise ValueError(f'parents form a cycle through joint {ancestor}')
        if ancestor in first_on:
            return first_on[ancestor]
        seen.add(ancestor)
        ancestor = parents[ancestor]
    return -1


def _subtree(parents: Sequence[int], root: int) -> set:
    children: dict = {}
    for j, p in enumerate(parents):
        children.setdefault(p, []).append(j)
    out, stack = set(), [root]
    while stack:
        j = stack.pop()
        if j not in out:
            out.add(j)
            stack.extend(children.get(j, ()))
    return out


def _depths(parents: Sequence[int]) -> List[int]:
    depth = [-1] * len(parents)
    for j in range(len(parents)):
        chain, k = [], j
        while k >= 0 and depth[k] < 0:
            if k in chain:   # a malformed (cyclic) table: stop rather than loop
                raise ValueError(f'parents form a cycle through joint {k}')
            chain.append(k)
            k = parents[k]
        d = depth[k] if k >= 0 else -1
        for k in reversed(chain):
            d += 1
            depth[k] = d
    return depth


def _bones_apart(parents: Sequence[int], depth: Sequence[int], a: int, b: int) -> int:
    """Number of bones on the tree path between joints ``a`` and ``b``."""
    steps = 0
    while a != b:
        if depth[a] >= depth[b]:
            a = parents[a]
        else:
            b = parents[b]
        steps += 1
    return steps


def _join_pieces(parents: Sequence[int], carriers: Sequence[int],
                 rest_points: Optional[np.ndarray], edges: set) -> None:
    """Add to ``edges`` the links that make its pieces one tree: Kruskal's choice of the
    pairs of points in different pieces whose joints are fewest bones apart (then the
    nearest at rest, then the first), the point on the shallower joint first."""
    depth = _depths(parents)
    piece = list(range(len(carriers)))

    def find(i: int) -> int:
        while piece[i] != i:
            piece[i] = piece[piece[i]]
            i = piece[i]
        return i

    for a, b in edges:
        piece[find(a)] = find(b)
    points = [i for i, c in enumerate(carriers) if c >= 0]
    if len({find(i) for i in points}) < 2:
        return
    rest = None if rest_points is None else np.asarray(rest_points, np.float64)
    pairs = []
    for x, i in enumerate(points):
        for k in points[x + 1:]:
            if find(i) == find(k):
                continue
            gap = 0.0 if rest is None else float(np.linalg.norm(rest[i] - rest[k]))
            pairs.append((_bones_apart(parents, depth, carriers[i], carriers[k]), gap, i, k))
    for _, _, i, k in sorted(pairs):
        if find(i) != find(k):
            piece[find(i)] = find(k)
            edges.add((i, k) if depth[carriers[i]] <= depth[carriers[k]] else (k, i))


def kinematic_point_edges(parents: Sequence[int], carriers: Sequence[int],
                          is_joint: Optional[Sequence[bool]] = None,
                          rest_points: Optional[np.ndarray] = None
                          ) -> List[Tuple[int, int]]:
    """Edges between points from the kinematic tree of their carrying joints.

    Args:
        parents: (J,) each joint's parent index, -1 for the root.
        carriers: (N,) the joint each point is (a joint keypoint) or hangs on (a surface
            keypoint: the joint with the largest skinning mass); negative marks a point
            with no joint, which gets no edge.
        is_joint: (N,) whether each point is its carrier joint itself (default: all).
        rest_points: (N, 3) the points in the rest pose, any length unit; with it a surface
            point is linked to the nearest joint point on its carrier's subtree.

    Returns:
        ``(parent point, point)`` index pairs, sorted, none repeated. A joint point is
        linked to the first joint point on the nearest strict ancestor of its joint that
        carries one; further joint points on the same joint to the first one on it. A
        surface point is linked as described above where ``rest_points`` is given and its
        carrier's subtree holds a joint point, else like a joint point on its carrier
        (to a joint point on that joint, or on its nearest ancestor). Pieces left apart
        (their common ancestor joint carries no point) are then joined by the pairs whose
        joints are fewest bones apart: the points with a joint form one tree.
    """
    parents = [int(p) for p in parents]
    carriers = [int(c) for c in carriers]
    joint = [True] * len(carriers) if is_joint is None else [bool(x) for x in is_joint]
    first_on: dict = {}
    for i, j in enumerate(carriers):
        if j >= 0 and joint[i]:
            first_on.setdefault(j, i)
    edges = set()
    for i, j in enumerate(carriers):
        if j < 0:
            continue
        if joint[i]:
            other = first_on[j] if first_on[j] != i else _ancestor_point(parents, j, first_on)
        else:
            other = -1
            if rest_points is not None:
                below = _subtree(parents, j)
                candidates = [k for k, c in enumerate(carriers)
                              if joint[k] and c in below and k != i]
                if candidates:
                    d = np.linalg.norm(np.asarray(rest_points)[candidates]
                                       - np.asarray(rest_points)[i], axis=-1)
                    other = candidates[int(np.argmin(d))]
            if other < 0:
                other = first_on.get(j, -1)
                if other < 0:
                    other = _ancestor_point(parents, j, first_on)
        if other >= 0:
            edges.add((other, i))
    _join_pieces(parents, carriers, rest_points, edges)
    return sorted(edges)


def model_point_edges(model, source: str, model_index: Sequence[int],
                      data_index: Sequence[int], num_points: int) -> List[Tuple[int, int]]:
    """:func:`kinematic_point_edges` of ``num_points`` data points matched to a body
    model's points.

    Args:
        model: a :class:`~smilfit.body_models.SMILModel`.
        source: ``'keypoints'`` or ``'joints'``, the model points the data is matched to.
        model_index, data_index: (M,) the matched pairs (model point, data point).
        num_points: the data's point count (unmatched points get no edge).
    """
    import torch

    from .keypoint_naming import source_carriers
    carriers = source_carriers(model, source).cpu()
    is_joint = torch.ones(len(carriers), dtype=torch.bool)
    rest = None
    if source == 'keypoints':
        # A keypoint defined as a joint is that joint (a regressed joint's carrier is the
        # joint with most skinning mass under it: the knee's is the thigh).
        points = model.keypoint_source.cpu()
        is_joint = points < model.num_joints
        carriers = torch.where(is_joint, points, carriers)
        if not bool(is_joint.all()):
            with torch.no_grad():
                rest = model(return_vertices=False).keypoints[0].cpu().double().numpy()
    data_carriers, data_is_joint = [-1] * num_points, [True] * num_points
    data_rest = np.zeros((num_points, 3))
    for m, d in zip(list(map(int, model_index)), list(map(int, data_index))):
        data_carriers[d], data_is_joint[d] = int(carriers[m]), bool(is_joint[m])
        if rest is not None:
            data_rest[d] = rest[m]
    return kinematic_point_edges(model.parents.tolist(), data_carriers, data_is_joint,
                                 data_rest if rest is not None else None)
