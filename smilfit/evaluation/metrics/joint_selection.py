"""Joint names, ignored joints and per-joint weights of a metric, resolved from config."""
from __future__ import annotations

from typing import Mapping, Sequence, Union

import numpy as np

JointRef = Union[int, str]


def default_joint_names(num_joints: int) -> list:
    """``['joint0', 'joint1', ...]``, used when neither config nor dataset names joints."""
    return [f'joint{i}' for i in range(num_joints)]


def resolve_joint_index(joint: JointRef, joint_names: Sequence[str], what: str = 'joint') -> int:
    """Index of ``joint`` (a name in ``joint_names`` or an index, negative allowed).

    Raises:
        ValueError / IndexError naming ``joint`` and listing the known names.
    """
    num_joints = len(joint_names)
    if isinstance(joint, (int, np.integer)) and not isinstance(joint, bool):
        if not -num_joints <= int(joint) < num_joints:
            raise IndexError(f'{what} index {int(joint)} is out of range for {num_joints} '
                             f'joints')
        return int(joint) % num_joints
    if isinstance(joint, str):
        names = list(joint_names)
        if joint not in names:
            raise ValueError(f'{what} {joint!r} is not a joint name; known names: {names}')
        return names.index(joint)
    raise TypeError(f'{what} must be a joint name or index, got {type(joint).__name__}')


def resolve_joint_weights(joint_names: Sequence[str], ignore_joints: Sequence[JointRef] = (),
                          joint_weights: Union[None, Sequence[float], Mapping[str, float]] = None
                          ) -> np.ndarray:
    """Per-joint weights ``(N,)`` float64: ``joint_weights`` with ``ignore_joints`` set to 0.

    Args:
        joint_names: the N joint names (sets N).
        ignore_joints: names or indices of joints left out of every statistic.
        joint_weights: None (all 1), a sequence of N weights, or a mapping
            ``{name: weight}`` (joints not named keep weight 1). A weight of 0 is the same
            as ignoring the joint; weights scale a joint's share of means and PCK.

    Raises:
        ValueError: wrong number of weights, negative or non-finite weights, unknown names,
            or every joint ignored.
    """
    num_joints = len(joint_names)
    if joint_weights is None:
        weights = np.ones(num_joints)
    elif isinstance(joint_weights, Mapping):
        weights = np.ones(num_joints)
        for name, value in joint_weights.items():
            weights[resolve_joint_index(name, joint_names, 'joint_weights key')] = float(value)
    else:
        weights = np.asarray(joint_weights, dtype=np.float64).reshape(-1)
        if weights.size != num_joints:
            raise ValueError(f'joint_weights has {weights.size} values for {num_joints} joints')
        weights = weights.copy()
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(f'joint_weights must be finite and >= 0, got {weights.tolist()}')
    for joint in ignore_joints:
        weights[resolve_joint_index(joint, joint_names, 'ignore_joints entry')] = 0.0
    if not np.any(weights > 0):
        raise ValueError('every joint is ignored or has weight 0; nothing left to evaluate')
    return weights
