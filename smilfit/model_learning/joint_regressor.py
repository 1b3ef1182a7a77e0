"""Re-fit a joint regressor to a learned shape space.

A regressed-joint model places its rest joints at ``J = R x`` for a shaped rest mesh
``x``. After learning a new shape space the regressor must put the joints where the
registrations had them. Each row is fitted in closed form as the smallest change to
the previous row (ridge towards it) that reproduces the target joints of every
registration, restricted to vertices near the joint, with the row summing to 1 so that
translating the mesh translates the joint.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def joint_support(weights: np.ndarray, parents: np.ndarray,
                  prior_regressor: Optional[np.ndarray] = None,
                  min_weight: float = 1e-6) -> np.ndarray:
    """(J, V) bool: vertices a joint's regressor row may use.

    The vertices skinned to the joint or to its parent (the two segments the joint
    connects), plus wherever the prior regressor row is non-zero.
    """
    w = np.asarray(weights) > min_weight  # (V, J)
    par = np.asarray(parents)
    own = w.T
    parent = np.where(par[:, None] >= 0, w.T[np.clip(par, 0, None)], False)
    support = own | parent
    if prior_regressor is not None:
        support |= np.abs(np.asarray(prior_regressor)) > 0
    return support


def refit_joint_regressor(meshes: np.ndarray, joints: np.ndarray, support: np.ndarray,
                          prior_regressor: Optional[np.ndarray] = None,
                          ridge: float = 1e-6) -> np.ndarray:
    """Per joint ``r = argmin sum_n |r X_n - j_n|^2 + lam |r - r0|^2`` s.t. ``sum r = 1``.

    ``r`` is restricted to the joint's ``support``; ``lam = ridge * mean(diag(A^T A))``
    where ``A`` stacks the support coordinates of every mesh. Solved in the smaller of
    the primal (support size) and dual (3N) forms.

    Args:
        meshes: (N, V, 3) shaped rest meshes.
        joints: (N, J, 3) their target rest joints.
        support: (J, V) bool from :func:`joint_support`.
        prior_regressor: (J, V) starting regressor ``r0`` (uniform over the support
            when ``None``).
        ridge: relative ridge strength (> 0).

    Returns:
        (J, V) float64 regressor, rows summing to 1.
    """
    X = np.asarray(meshes, dtype=np.float64)
    T = np.asarray(joints, dtype=np.float64)
    N, V, _ = X.shape
    J = T.shape[1]
    if T.shape != (N, J, 3) or support.shape != (J, V):
        raise ValueError(f'refit_joint_regressor: meshes {X.shape}, joints {T.shape} and '
                         f'support {support.shape} do not fit together')
    if not ridge > 0:
        raise ValueError(f'ridge must be > 0, got {ridge}')
    out = np.zeros((J, V))
    for j in range(J):
        S = np.flatnonzero(support[j])
        if S.size == 0:
            raise ValueError(f'joint {j}: empty regressor support (no vertex is skinned to '
                             'it or its parent)')
        if prior_regressor is None:
            r0 = np.full(S.size, 1.0 / S.size)
        else:
            r0 = np.asarray(prior_regressor[j, S], dtype=np.float64)
        A = X[:, S, :].transpose(0, 2, 1).reshape(3 * N, S.size)  # rows (n, c)
        e = T[:, j, :].reshape(3 * N) - A @ r0
        c = 1.0 - r0.sum()
        lam = ridge * max(float((A * A).sum()) / S.size, 1e-300)
        ones = np.ones(S.size)
        if S.size <= 3 * N:
            kkt = np.zeros((S.size + 1, S.size + 1))
            kkt[:S.size, :S.size] = A.T @ A + lam * np.eye(S.size)
            kkt[:S.size, S.size] = 1.0
            kkt[S.size, :S.size] = 1.0
            sol = np.linalg.solve(kkt, np.concatenate([A.T @ e, [c]]))
            delta = sol[:S.size]
        else:
            # (A^T A + lam I)^-1 v = (v - A^T G^-1 A v) / lam with G = A A^T + lam I.
            G = A @ A.T + lam * np.eye(3 * N)
            h_e = A.T @ np.linalg.solve(G, e)                       # (A^T A + lam)^-1 A^T e
            h_1 = (ones - A.T @ np.linalg.solve(G, A @ ones)) / lam  # (A^T A + lam)^-1 1
            mu = (h_e.sum() - c) / h_1.sum()
            delta = h_e - mu * h_1
        out[j, S] = r0 + delta
    return out


__all__ = ['joint_support', 'refit_joint_regressor']
