"""Skinning weights of the grown mesh.

SMPL convention: a bone ``p -> c`` moves with joint ``p``. The vertices of bone
``p -> c`` belong to ``p``, blended smoothly (smoothstep) with ``parent(p)`` around joint
``p`` and with ``c`` around joint ``c`` (50/50 exactly at a joint), so each vertex has at
most two non-zero weights. Leaf joints get no weight.
"""
from __future__ import annotations

import numpy as np

from .skeleton import Skeleton, _children


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
