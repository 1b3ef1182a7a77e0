"""Shape directions as changes of the skeleton.

The mesh is linear in the skeleton (see :mod:`.build`), so a shape direction is a change
``(dP, dr)`` of the rest joint positions and joint radii: ``size`` (everything about the
root), ``thickness`` (the radii) and one ``length:*`` direction per bone group
(:func:`default_bone_groups`: the unbranched segments, mirrored limbs merged).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .skeleton import Skeleton, SkeletonError, _children, _subtree
from .symmetry import mirror_joint_name

__all__ = ['default_bone_groups']


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
