"""Left/right symmetry from joint names (``hip_L`` / ``hip_R``, ``l_ear`` / ``r_ear``,
``left_paw`` / ``right_paw``): the model's symmetric joint pairs and the mirrored bone
groups of its shape directions."""
from __future__ import annotations

import re
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ['mirror_joint_name', 'find_symmetric_pairs']

# Side markers: (left pattern, right pattern, left text, right text), tried in order.
# Separators keep 'l_' / '_r' from matching inside words like 'tail_1' or 'lumbar'.
_SIDE_RULES: Tuple[Tuple[str, str, str, str], ...] = (
    (r'(?<=[_.\-])L$', r'(?<=[_.\-])R$', 'L', 'R'),
    (r'(?<=[_.\-])l$', r'(?<=[_.\-])r$', 'l', 'r'),
    (r'^L(?=[_.\-])', r'^R(?=[_.\-])', 'L', 'R'),
    (r'^l(?=[_.\-])', r'^r(?=[_.\-])', 'l', 'r'),
    (r'(?<=[_.\-])L(?=[_.\-])', r'(?<=[_.\-])R(?=[_.\-])', 'L', 'R'),   # Ear_L_tip
    (r'(?<=[_.\-])l(?=[_.\-])', r'(?<=[_.\-])r(?=[_.\-])', 'l', 'r'),
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
    ``r_ear``, ``ear_L_tip`` <-> ``ear_R_tip``, ``left_paw`` <-> ``right_paw``), or
    ``None`` without a side marker."""
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
