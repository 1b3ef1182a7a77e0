"""Keypoint naming, in one place for every user: which model point each data keypoint is.

Model keypoints (``SMILModel.keypoint_names``, or ``joint_names`` for points read from
joints) and data keypoints are matched by *name*, never by position: through a joint
lookup (model name -> data name, :mod:`.joint_lookup`) when given, else by identical
names. Handlers, datasets (ingestion, synthetic animals), the regressors and the
visualisation read the same functions here, as well as the joint that carries each model
point (the frame of joint-local keypoint offsets).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .joint_lookup import check_joint_lookup

#: Where keypoint handlers read model points from.
POINT_SOURCES = ('keypoints', 'joints')


@dataclass
class KeypointMatch:
    """The result of :func:`match_keypoints` (M matched pairs, in model order).

    Attributes:
        model_names: (M,) matched model names.
        data_names: (M,) the data names they matched.
        model_index: (M,) int64 indices into the model's names.
        data_index: (M,) int64 indices into the data's names.
        unmatched_model: model names without a data partner.
        unmatched_data: data names no model name matched.
    """

    model_names: List[str]
    data_names: List[str]
    model_index: torch.Tensor
    data_index: torch.Tensor
    unmatched_model: List[str]
    unmatched_data: List[str]

    def __len__(self) -> int:
        return len(self.model_names)


def _check_unique(names: Sequence[str], what: str) -> List[str]:
    names = [str(n) for n in names]
    seen, dup = set(), []
    for n in names:
        if n in seen:
            dup.append(n)
        seen.add(n)
    if dup:
        raise ValueError(f'{what} are not unique: {sorted(set(dup))}')
    return names


def match_keypoints(model_names: Sequence[str], data_names: Sequence[str],
                    lookup: Optional[Mapping[str, Optional[str]]] = None,
                    subset: Optional[Sequence[str]] = None,
                    what: str = 'keypoints',
                    lookup_names: Optional[Sequence[str]] = None) -> KeypointMatch:
    """Match model names to data names.

    Args:
        model_names: the model's names in tensor order.
        data_names: the data's names in tensor order.
        lookup: optional model name -> data name (``None`` or ``''``: do not match
            that model name). With a lookup only its entries match. Every entry must name
            an existing model point (one of ``lookup_names``) and, unless empty, an
            existing data keypoint: a typo would silently drop the keypoint
            (:func:`smilfit.body_models.joint_lookup.check_joint_lookup`).
        subset: optional model names to keep (every one must exist in the model).
        what: the kind of name, for messages (``'keypoints'``, ``'joints'``).
        lookup_names: every model name a lookup entry may use (default: ``model_names``).
            Handlers pass the body model's joint and keypoint names
            (:func:`lookup_model_names`): one lookup serves handlers reading either, so an
            entry for a joint is skipped by a keypoint handler, not an error.

    Returns:
        :class:`KeypointMatch`.

    Raises:
        ValueError: when nothing matches, or (``JointLookupError``) a lookup entry names
            a point that does not exist (see ``lookup``); the message lists the names at
            fault, the closest existing ones and both name lists.
    """
    model_names = _check_unique(model_names, f'model {what} names')
    data_names = _check_unique(data_names, 'data keypoint names')
    data_pos = {n: i for i, n in enumerate(data_names)}
    if lookup is not None:
        check_joint_lookup(lookup, model_names if lookup_names is None else lookup_names,
                           data_names)
    keep = None
    if subset is not None:
        keep = [str(n) for n in subset]
        unknown = [n for n in keep if n not in model_names]
        if unknown:
            raise KeyError(f'unknown model {what} {unknown} in the handler\'s keypoints '
                           f'subset; model {what}: {model_names}')
        keep = set(keep)
    m_idx: List[int] = []
    d_idx: List[int] = []
    for i, name in enumerate(model_names):
        if keep is not None and name not in keep:
            continue
        target = lookup.get(name) if lookup is not None else name
        if target is None or target == '':
            continue
        j = data_pos.get(str(target))
        if j is not None:
            m_idx.append(i)
            d_idx.append(j)
    if not m_idx:
        via = (f' through joint_lookup {dict(lookup)}' if lookup is not None
               else ' by identical names (pass a joint_lookup to map them)')
        raise ValueError(f'no model {what} matched a data keypoint{via}; model {what}: '
                         f'{model_names}; data keypoints: {data_names}')
    matched_model, matched_data = set(m_idx), set(d_idx)
    return KeypointMatch(
        model_names=[model_names[i] for i in m_idx],
        data_names=[data_names[j] for j in d_idx],
        model_index=torch.as_tensor(m_idx, dtype=torch.long),
        data_index=torch.as_tensor(d_idx, dtype=torch.long),
        unmatched_model=[n for i, n in enumerate(model_names)
                         if i not in matched_model and (keep is None or n in keep)],
        unmatched_data=[n for j, n in enumerate(data_names) if j not in matched_data])


#: The name of the model keypoint a fit placed for a data keypoint its joint lookup left
#: out (:mod:`smilfit.registrants.unmapped_placement`): this prefix and the label's name.
PLACED_PREFIX = 'placed:'


def placed_lookup(model_names: Sequence[str]) -> Dict[str, str]:
    """``{model keypoint: data keypoint}`` of the placed keypoints among ``model_names``."""
    return {n: n[len(PLACED_PREFIX):] for n in model_names if n.startswith(PLACED_PREFIX)}


def lookup_model_names(body_model) -> List[str]:
    """Every model name a joint lookup may use: the joint names, then the keypoint names
    that are not joint names."""
    joints = list(body_model.joint_names)
    known = set(joints)
    return joints + [n for n in (getattr(body_model, 'keypoint_names', None) or [])
                     if n not in known]


def model_point_names(body_model, source: str) -> List[str]:
    """The names of the points a handler reads: keypoint or joint names."""
    if source == 'keypoints':
        return list(getattr(body_model, 'keypoint_names', []) or [])
    if source == 'joints':
        return list(body_model.joint_names)
    raise ValueError(f'source must be one of {POINT_SOURCES}, got {source!r}')


#: Frames of per-point offsets: world axes, or the axes of the joint carrying the point.
OFFSET_FRAMES = ('world', 'joint')


def source_carriers(body_model, source: str) -> torch.Tensor:
    """(N,) the joint that carries each model point of ``source`` (its own joint, or for
    a vertex keypoint the joint with the largest skinning mass): the frame of
    joint-local offsets."""
    pool = body_model.pool_joints
    if source == 'keypoints':
        return pool[body_model.keypoint_source]
    if source == 'joints':
        return pool[:body_model.num_joints]
    raise ValueError(f'source must be one of {POINT_SOURCES}, got {source!r}')


def rotate_offsets(offsets: torch.Tensor, transforms: torch.Tensor,
                   carriers: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) joint-local offsets seen in the world: ``M_j o`` with ``M_j`` the world
    linear map (rotation and scales) of each point's carrying joint.

    Args:
        offsets: (B or 1, N, 3) offsets in the carrying joint's rest frame (model units).
        transforms: (B, J, 4, 4) world transforms of the joints (``joint_transforms``).
        carriers: (N,) carrying joint of each point.
    """
    maps = transforms[..., :3, :3].index_select(1, carriers.to(transforms.device))
    return torch.einsum('bnij,bnj->bni', maps, offsets.to(maps))


def left_right_pairs(keypoint_names: Sequence[str],
                     symmetries: Sequence[Tuple[int, int]] = ()):
    """(P, 2) int64 numpy left/right keypoint index pairs: the dataset's stored skeleton
    symmetries, or else the pairs found by name (``_L``/``_R``, ``left``/``right``...)."""
    import numpy as np

    from .mesh_from_skeleton.symmetry import find_symmetric_pairs
    if len(symmetries):
        return np.asarray(symmetries, np.int64).reshape(-1, 2)
    found = find_symmetric_pairs(list(keypoint_names))
    return np.zeros((0, 2), np.int64) if found is None else found


def left_right_order(num_keypoints: int, pairs):
    """(K,) int64 numpy permutation that exchanges each of ``pairs`` ((P, 2) indices, e.g.
    :func:`left_right_pairs`) and keeps every other keypoint: ``values[..., order, :]`` are
    ``values`` with left and right exchanged."""
    import numpy as np

    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= num_keypoints):
        raise ValueError(f'left/right pairs {pairs.tolist()} index outside {num_keypoints} '
                         'keypoints')
    order = np.arange(num_keypoints)
    order[pairs[:, 0]], order[pairs[:, 1]] = pairs[:, 1], pairs[:, 0]
    return order


__all__ = ['POINT_SOURCES', 'OFFSET_FRAMES', 'KeypointMatch', 'match_keypoints',
           'lookup_model_names', 'model_point_names', 'source_carriers', 'rotate_offsets',
           'left_right_pairs', 'left_right_order', 'PLACED_PREFIX', 'placed_lookup']
