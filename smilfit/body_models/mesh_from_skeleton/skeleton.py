"""The builder's input: a validated joint tree.

:func:`validate_skeleton` checks raw joint names, parents (names or indices) and rest
positions and returns a :class:`Skeleton`; every error is a :class:`SkeletonError` naming
the offending joint. ``_children`` and ``_subtree`` walk the tree for the other modules.
"""
from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ['SkeletonError', 'Skeleton', 'ParentSpec', 'validate_skeleton']

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


# ------------------------------------------------------------------- tree walks
def _children(parents: np.ndarray) -> List[List[int]]:
    kids: List[List[int]] = [[] for _ in range(len(parents))]
    for j, p in enumerate(parents):
        if p >= 0:
            kids[p].append(j)
    return kids


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
