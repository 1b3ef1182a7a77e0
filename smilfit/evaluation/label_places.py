"""Where each label sits on the fitted body: the joint that moves the skin under it and how
far it is from the skin.

A data keypoint is fitted as a model point (a joint, or a keypoint of the model) plus,
where the fit estimates them, each animal's offset in the carrying joint's frame. Placed
on each animal's rest body (its fitted bones, no pose), that point is somewhere on, under
or off the surface. The fit report lists, per keypoint: the model point the lookup names,
the joint that moves the surface nearest to where the label now sits (the one whose
skinning weight dominates the closest surface triangle: a label on the thigh is moved by
the hip) and the distance from the surface in percent of the body length (the rest joints'
largest extent, the unit of the skeleton prior). A label far off the surface, or on skin
that a joint other than its carrier moves (a label on the back carried by a shoulder
joint), is worth a look at the joint lookup.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from smilfit.body_models.keypoint_naming import PLACED_PREFIX
from smilfit.body_models.parameters import MODEL_INPUTS, REST_BODY_PARAMS
from smilfit.losses.skeleton_priors import body_length
from smilfit.ops.point_mesh import point_to_surface_sq

__all__ = ['label_places', 'format_label_places', 'label_places_markdown']


def label_places(body_model, handler, data_names: Sequence[str],
                 skeleton: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, Any]:
    """Each matched data keypoint's place on every animal's rest body.

    Args:
        body_model: the fit's :class:`~smilfit.body_models.SMILModel` (with faces).
        handler: the fit's keypoint handler (``matched_points``, ``model_index``,
            ``data_index``, ``source``).
        data_names: the dataset's keypoint names.
        skeleton: the fit's per-animal parameters, ``param_<name>`` (A, ...) as the
            results file's ``animals/`` group holds them (``fitted`` (A,) bool marks
            the animals that were fitted); None: the model's own rest body (A = 1).

    Returns:
        ``dict(body_length, keypoints={name: dict(model_point, marker_depth, moved_by,
        off_surface, off_surface_per_animal)})``: ``off_surface`` the animals' median
        distance from the surface in body lengths; ``moved_by`` the joint that moves the
        nearest surface, for most animals; ``marker_depth`` where the fit placed the label
        as a marker (:mod:`smilfit.registrants.marker_placement`), how far its skinning
        goes from its joint's (0) to the skin's (1), else None. Empty ``keypoints`` where
        the model has no surface.
    """
    faces = getattr(body_model, 'faces', None)
    if faces is None or not faces.numel():
        return dict(body_length=None, keypoints={})
    dtype, device = body_model.dtype, body_model.device
    params: Dict[str, torch.Tensor] = {}
    keep = None
    if skeleton is not None:
        for name in REST_BODY_PARAMS:
            value = skeleton.get(f'param_{name}')
            if value is not None:
                params[name] = torch.as_tensor(np.asarray(value), dtype=dtype, device=device)
        if skeleton.get('fitted') is not None:
            keep = torch.as_tensor(np.asarray(skeleton['fitted'], bool), device=device)
    animals = next((v.shape[0] for v in params.values()), 1)
    if keep is not None and bool(keep.any()):
        params = {k: v[keep] for k, v in params.items()}
        animals = int(keep.sum())
    with torch.no_grad():
        inputs = {k: v for k, v in params.items() if k in MODEL_INPUTS}
        inputs.setdefault('global_orient', torch.zeros(animals, 3, dtype=dtype, device=device))
        output = body_model(**inputs, return_vertices=True)
        points = handler.matched_points(output, params)                    # (A, M, 3)
        dist_sq, face = point_to_surface_sq(points, output.vertices, faces)  # (A, M)
        weights = body_model.lbs_weights.to(dtype)[faces[face]].sum(-2)  # (A, M, J)
        moved_by = weights.argmax(-1)
        length = torch.tensor([body_length(j) for j in output.joints_kin], dtype=dtype)
    off = (dist_sq.sqrt().cpu() / length[:, None]).numpy()
    moved_by = moved_by.cpu().numpy()
    joint_names = list(body_model.joint_names)
    model_names = (joint_names if handler.source == 'joints'
                   else list(body_model.keypoint_names))
    rows: Dict[str, Any] = {}
    for m, (model_i, data_i) in enumerate(zip(handler.model_index.tolist(),
                                              handler.data_index.tolist())):
        joints, counts = np.unique(moved_by[:, m], return_counts=True)
        definition = (body_model.keypoint_definitions.get(model_names[model_i], {})
                      if handler.source == 'keypoints' else {})
        marker = definition.get('marker')
        rows[str(data_names[data_i])] = dict(
            model_point=model_names[model_i],
            marker_depth=None if marker is None else float(marker['depth']),
            moved_by=joint_names[int(joints[counts.argmax()])],
            off_surface=float(np.median(off[:, m])),
            off_surface_per_animal=[float(v) for v in off[:, m]])
    return dict(body_length=float(length.median()), keypoints=rows)


def format_label_places(places: Mapping[str, Any]) -> str:
    """The report's table of :func:`label_places` (empty without a surface)."""
    rows = places.get('keypoints') or {}
    if not rows:
        return ''
    lines: List[str] = [
        'Where each label sits on the rest body (the animals\' median): the joint that moves '
        'the skin nearest to it, its distance from the skin in % of the body length (a '
        'marker: moved t of the way from its joint\'s skinning to the skin\'s)',
        f'  {"keypoint":<24}{"model point":<24}{"marker t":>9}  {"skin moved by":<24}'
        f'{"off surface %":>14}']
    for name, row in rows.items():
        point, depth, moved_by, off = _cells(row)
        lines.append(f'  {name:<24}{point:<24}{depth:>9}  {moved_by:<24}{off:>14}')
    return '\n'.join(lines + _placed_note(rows, '  '))


def _placed_note(rows: Mapping[str, Any], indent: str = '') -> List[str]:
    """A line saying what a ``placed:`` model point is, where the table has one."""
    if not any(str(r['model_point']).startswith(PLACED_PREFIX) for r in rows.values()):
        return []
    return [f'{indent}{PLACED_PREFIX}<label>: a label the joint lookup left out, placed by '
            'the fit at the joint or skin point nearest to where it was triangulated']


def label_places_markdown(places: Mapping[str, Any]) -> str:
    """:func:`label_places` as a Markdown table (the viewer's panel; empty without a
    surface)."""
    rows = places.get('keypoints') or {}
    if not rows:
        return ''
    lines = ['| keypoint | model point | marker t | skin moved by | off surface % |',
             '|---|---|---|---|---|']
    for name, row in rows.items():
        lines.append('| ' + ' | '.join((name,) + _cells(row)) + ' |')
    note = _placed_note(rows)
    return '\n'.join(lines + ([''] + note if note else []))


def _cells(row: Mapping[str, Any]) -> Tuple[str, str, str, str]:
    """A label's model point, marker depth (``-``: not a marker), the joint moving the
    skin there and its distance from the skin (% of the body length), as text."""
    depth = row.get('marker_depth')
    return (str(row['model_point']), '-' if depth is None else f'{depth:.2f}',
            str(row['moved_by']), f'{100 * row["off_surface"]:.1f}')
