"""Placing the labels a joint lookup leaves out.

A user unsure which model joint a label is (a point on the back between two spine
joints, the base of the tail) may leave its lookup row out. A stage with
``place_unmapped`` (it fits the per-animal ``keypoint_offsets``) first places every such
label on the body (:func:`place_unmapped`): the label's position triangulated in each
frame, the model point nearest to it over the frames (a joint, for a label at a joint's
centre, or a vertex of the surface, for a label on the skin; by the median distance, so
that swapped or outlying frames do not decide) becomes a new model keypoint named
``placed:<label>`` (:data:`~smilfit.body_models.keypoint_naming.PLACED_PREFIX`),
matched to the label, and each animal's offset carries the rest. The poses at that
point come from the stages before (at least the rigid alignment), so every frame's body
sits where its mapped labels put it.

Labels are placed once per registrant (the first animals it fits); the definitions travel
with the skeleton (:func:`~.marker_placement.keypoint_definitions_text`), and a model
given them back matches each ``placed:`` keypoint to its label again
(:func:`~smilfit.body_models.keypoint_naming.placed_lookup`).
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from smilfit.body_models.keypoint_naming import PLACED_PREFIX, lookup_model_names
from smilfit.body_models.parameters import MODEL_INPUTS

from .initialization import observed_points
from .marker_placement import redefine

Tensor = torch.Tensor

#: A label whose nearest model point is further than this (a fraction of the body's
#: extent) is placed with a warning: a label of something else, or a bad calibration.
FAR = 0.25

__all__ = ['labels_to_place', 'nearest_model_points',
           'place_unmapped', 'extend_lookup', 'match_placed']


def labels_to_place(handler, data_names: Sequence[str],
                    lookup: Optional[Mapping[str, Optional[str]]],
                    requested: Union[bool, Sequence[str]]) -> List[str]:
    """The data keypoints to place: those the keypoint handler matches to no model point
    and no lookup entry names (an entry may map a label to a joint that another handler
    reads), all of them (``requested=True``) or the ones listed.

    Raises:
        ValueError: a listed name is no data keypoint, or one the lookup maps already.
    """
    named = {str(v) for v in (lookup or {}).values() if v}
    free = [n for n in handler.match.unmatched_data if n not in named]
    if requested is True:
        return free
    requested = [str(n) for n in requested]
    unknown = [n for n in requested if n not in data_names]
    if unknown:
        raise ValueError(f'place_unmapped names {unknown}, which are not data keypoints '
                         f'({list(data_names)})')
    mapped = [n for n in requested if n not in free]
    if mapped:
        raise ValueError(f'place_unmapped names {mapped}, which the joint lookup maps to '
                         'model points already: leave them out of one or the other')
    return requested


def nearest_model_points(labels: Tensor, joints: Tensor, vertices: Optional[Tensor]
                         ) -> Tuple[Tensor, Tensor, Tensor]:
    """For each label, the model point nearest to it over the frames.

    Args:
        labels: (B, N, 3) the labels' positions per frame (NaN where unknown).
        joints: (B, J, 3) the posed joints.
        vertices: (B, V, 3) the posed surface, or None.

    Returns:
        ``(index (N,) long, distance (N,), frames (N,) long)``: the point with the
        smallest median distance to the label over the frames where it is known (an
        index < J is a joint, else vertex ``index - J``), that median distance (world
        units; NaN where the label is known in no frame) and the number of frames.
    """
    points = joints if vertices is None else torch.cat([joints, vertices], dim=1)
    known = torch.isfinite(labels).all(-1)                                   # (B, N)
    index, distance = [], []
    for n in range(labels.shape[1]):   # a few labels: (B, J + V) distances each
        rows = known[:, n]
        d = (points[rows] - labels[rows, n, None]).norm(dim=-1)             # (b, P)
        if d.shape[0] == 0:
            index.append(0)
            distance.append(float('nan'))
            continue
        median = d.median(0).values
        best = int(median.argmin())
        index.append(best)
        distance.append(float(median[best]))
    return (torch.as_tensor(index, dtype=torch.long),
            torch.as_tensor(distance, dtype=labels.dtype), known.sum(0))


def extend_lookup(lookup: Optional[Mapping[str, Optional[str]]], model, data_names:
                  Sequence[str], placed: Mapping[str, str]) -> Dict[str, Optional[str]]:
    """``lookup`` with the ``placed`` entries added; with no lookup (names matched as they
    are), every model name found among the data names maps to itself, so the lookup still
    matches what the names did (with a lookup, only its entries match)."""
    if lookup is None:
        data = set(map(str, data_names))
        lookup = {n: n for n in lookup_model_names(model) if n in data}
    return {**dict(lookup), **dict(placed)}


def _lookup_of(registrant, handler) -> Optional[Dict[str, Optional[str]]]:
    own = getattr(handler, 'joint_lookup', None)
    return own if own is not None else registrant.data_info.get('joint_lookup')


def match_placed(registrant, placed: Mapping[str, str]) -> None:
    """The registrant's lookups given the entries ``placed`` (``{placed:<label>:
    label}``): the keypoint handler's (its own, else the data's), and those of other
    handlers with lookups of their own; a handler restricted to some keypoints keeps the
    placed ones too. Idempotent; the handlers are set up by the caller."""
    handler = registrant.keypoint_handler()
    if handler is None or not placed:
        return
    info = registrant.data_info
    extended = extend_lookup(_lookup_of(registrant, handler), registrant.body_model,
                             info['keypoint_names'], placed)
    if getattr(handler, 'joint_lookup', None) is not None:
        handler.joint_lookup = extended
    else:
        info['joint_lookup'] = extended
    for other in registrant.handlers.values():
        if other is not handler and getattr(other, 'joint_lookup', None) is not None:
            other.joint_lookup = {**other.joint_lookup, **placed}
    subset = getattr(handler, 'keypoint_subset', None)
    if subset is not None:
        handler.keypoint_subset = subset + [n for n in placed if n not in subset]


def place_unmapped(registrant, params: Dict[str, Tensor], observations: Mapping[str, Any],
                   groups: Tensor, requested: Union[bool, Sequence[str]] = True
                   ) -> Dict[str, Tensor]:
    """``params`` with the labels the joint lookup leaves out placed on the body (the
    registrant's body model given a ``placed:<label>`` keypoint per label, its lookup the
    entries matching them, its handlers set up again) and the per-animal
    ``keypoint_offsets`` (G, K, 3) grown by a zero row per new keypoint. A label seen in
    fewer than two views in every frame is left out, with a warning.

    Raises:
        ValueError: no keypoint handler matching model keypoints, observations with
            neither 3D keypoints nor calibrated views, or a model keypoint that is
            already called ``placed:<label>``.
    """
    model = registrant.body_model
    handler = registrant.keypoint_handler()
    if handler is None or getattr(handler, 'source', None) != 'keypoints':
        raise ValueError("place_unmapped needs a keypoint handler with source='keypoints' "
                         '(the placed labels become model keypoints)')
    data_names = list(registrant.data_info['keypoint_names'])
    lookup = _lookup_of(registrant, handler)
    names = labels_to_place(handler, data_names, lookup, requested)
    if not names:
        return params
    points = observed_points(observations)
    if points is None:
        raise ValueError('place_unmapped needs 3D keypoints or calibrated views (K, R, t) '
                         'to find where the labels the lookup leaves out sit')
    columns = torch.as_tensor([data_names.index(n) for n in names], device=points.device)
    expanded = {k: (v[groups] if k in registrant.shared else v) for k, v in params.items()}
    with torch.no_grad():
        output = model(**{k: expanded[k] for k in MODEL_INPUTS if k in expanded},
                       return_vertices=model.faces is not None and bool(model.faces.numel()))
        index, distance, frames = nearest_model_points(points.index_select(1, columns).to(
            output.joints), output.joints, output.vertices)
        extent = (output.joints.amax(1) - output.joints.amin(1)).amax(-1).median()
    far = [f'{n} ({float(d / extent):.0%})' for n, d in zip(names, distance)
           if bool(d > FAR * extent)]
    if far:
        warnings.warn(f'place_unmapped: {far} sit that far (in body lengths) from the nearest '
                      'point of the body; they are placed there, but check that they are '
                      "labels of this animal and the cameras' calibration", stacklevel=2)
    unseen = [n for n, f in zip(names, frames.tolist()) if f == 0]
    if unseen:
        warnings.warn(f'place_unmapped: {unseen} are seen in fewer than two views in every '
                      'frame of the first animals fitted, so they are not placed (and not '
                      'fitted)', stacklevel=2)
    J = model.num_joints
    definitions = dict(model.keypoint_definitions)
    placed = {}
    for name, i, f in zip(names, index.tolist(), frames.tolist()):
        if f == 0:
            continue
        key = PLACED_PREFIX + name
        if key in definitions or key in model.joint_names:
            raise ValueError(f'place_unmapped: the body model already has a point {key!r}')
        definitions[key] = ({'joint': model.joint_names[i]} if i < J else {'vertex': i - J})
        placed[key] = name
    if not placed:
        return params
    match_placed(registrant, placed)
    redefine(registrant, definitions)
    offsets = params.get('keypoint_offsets')
    if offsets is not None:
        grown = offsets.new_zeros(offsets.shape[0], len(placed), 3)
        params = {**params, 'keypoint_offsets': torch.cat([offsets, grown], dim=1)}
    return params
