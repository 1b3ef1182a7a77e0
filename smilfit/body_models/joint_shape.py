"""Shape that moves the joints of a static-joint model.

A static-joint model (``static_joint_locs``: its rest joints are the stored ``J``) has
shape blendshapes that change the skin but never the skeleton, so keypoints on joints
cannot inform the shape coefficients: fitting them leaves ``betas`` at 0. The regressor
here makes each joint follow the skin around it: ``J(b) = J + R (S b)`` with ``S`` the
shape directions and ``R`` (J, V) a convex regressor over the vertices near each joint
that its skinning ties to it, so the stored joints are reproduced exactly at ``b = 0``.
"""
from __future__ import annotations

import numpy as np

#: Vertices each joint follows.
NEIGHBOURS = 16


def skin_joint_regressor(v_template: np.ndarray, weights: np.ndarray, parents: np.ndarray,
                         joints: np.ndarray, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """(J, V) rows summing to 1: each joint's ``neighbours`` nearest rest vertices among
    those skinned to it or to its parent (all vertices when fewer are), weighted by
    inverse distance.

    Args:
        v_template: (V, 3) rest vertices.
        weights: (V, J) skinning weights.
        parents: (J,) parent indices (-1 for the root).
        joints: (J, 3) the stored rest joints.
        neighbours: vertices per joint (>= 1).
    """
    V, J = weights.shape
    k = max(1, min(int(neighbours), V))
    out = np.zeros((J, V))
    for j in range(J):           # once per model, at load: J is tens of joints
        tied = weights[:, j] > 0
        if parents[j] >= 0:
            tied |= weights[:, parents[j]] > 0
        candidates = np.flatnonzero(tied) if tied.sum() >= k else np.arange(V)
        d = np.linalg.norm(v_template[candidates] - joints[j], axis=1)
        near = np.argsort(d, kind='stable')[:k]
        w = 1.0 / (d[near] + 1e-6 * max(float(d[near].max()), 1e-12))
        out[j, candidates[near]] = w / w.sum()
    return out


def static_joint_shape_dirs(v_template: np.ndarray, weights: np.ndarray, parents: np.ndarray,
                            joints: np.ndarray, shapedirs: np.ndarray,
                            neighbours: int = NEIGHBOURS) -> np.ndarray:
    """(J, 3, K) how the joints move per shape coefficient (see the module docstring).

    Args:
        shapedirs: (V, 3, K) shape directions; the others as in
            :func:`skin_joint_regressor`.
    """
    R = skin_joint_regressor(v_template, weights, parents, joints, neighbours)
    return np.einsum('jv,vck->jck', R, shapedirs)


__all__ = ['skin_joint_regressor', 'static_joint_shape_dirs', 'NEIGHBOURS']
