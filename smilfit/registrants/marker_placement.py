"""Placing a fit's labels as markers on the body, between stages.

A stage with ``place_markers=True`` (it fits the per-animal ``keypoint_offsets``) first
makes the labels markers (:mod:`smilfit.body_models.markers`): where each label sits on
the animals' rest bodies (the looked-up joint plus the offsets fitted so far) becomes a
rest point skinned between its joint's weights and those of the skin around that joint,
as far towards the skin as it lies (:func:`place_markers`), and each animal's offset
carries the rest. Where the labels sit does not change; how they move with the pose
does: a label on the back bends with the spine joints that bend the skin under it. A
label keeps its marker only where, the poses refitted, the marker follows it
significantly better than its joint.

The markers are placed once per registrant (the first animals it fits; later calls keep
them, as their offsets are in the markers' frames) and travel with the skeleton
(:func:`keypoint_definitions_text`, :func:`apply_keypoint_definitions`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from smilfit.body_models.keypoint_naming import placed_lookup, source_carriers
from smilfit.body_models.markers import (definitions_from_text, definitions_to_text,
                                         marker_definitions, marker_skinning, skin_around,
                                         surface_places)
from smilfit.body_models.parameters import MODEL_INPUTS, REST_BODY_PARAMS
from smilfit.handlers.offset_estimate import SIGNIFICANCE
from smilfit.handlers.residual_scale import by_group

Tensor = torch.Tensor

__all__ = ['check_marker_stages', 'place_markers', 'label_errors', 'significantly_smaller',
           'anchor_joint', 'redefine', 'keypoint_definitions_text', 'apply_keypoint_definitions',
           'placed_points', 'KEYPOINT_DEFINITIONS']

#: The key of the body model's keypoint definitions (JSON text) in skeleton files and
#: the attribute in fit results.
KEYPOINT_DEFINITIONS = 'keypoint_definitions'


def check_marker_stages(stages: Sequence[Any], shared: Sequence[str]) -> None:
    """Every stage that places markers or the labels the lookup leaves out
    (``place_unmapped``) fits shared (per-animal) ``keypoint_offsets``."""
    for stage in stages:
        for flag in ('place_markers', 'place_unmapped'):
            if getattr(stage, flag, False) and not (
                    'keypoint_offsets' in stage.fit and 'keypoint_offsets' in shared):
                raise ValueError(f"stage {stage.name!r}: {flag} needs a stage fitting "
                                 "'keypoint_offsets' shared per animal (registrant.shared="
                                 "dict(keypoint_offsets=True)): each animal's offsets carry "
                                 'its labels from the points placed')


def _rest_params(params: Mapping[str, Tensor], shared: Sequence[str], groups: Tensor,
                 num_groups: int) -> Dict[str, Tensor]:
    """(G, ...) rest-body parameters: shared ones as they are, per-sample ones averaged
    over each group's samples."""
    out = {}
    counts = torch.bincount(groups, minlength=num_groups).clamp_min(1)
    for name in REST_BODY_PARAMS:
        value = params.get(name)
        if value is None:
            continue
        if name in shared:
            out[name] = value
        else:
            total = torch.zeros((num_groups,) + tuple(value.shape[1:]), dtype=value.dtype,
                                device=value.device).index_add_(0, groups, value)
            out[name] = total / counts.view(-1, *([1] * (value.dim() - 1))).to(value)
    return out


def _rest_output(model, rest: Mapping[str, Tensor], num_groups: int, vertices: bool):
    inputs = {k: v for k, v in rest.items() if k in MODEL_INPUTS}
    inputs['global_orient'] = torch.zeros(num_groups, 3, dtype=model.dtype, device=model.device)
    return model(**inputs, return_vertices=vertices)


def place_markers(registrant, params: Dict[str, Tensor], observations: Mapping[str, Any],
                  groups: Tensor, refit: Optional[Callable[[Dict[str, Tensor]],
                                                           Dict[str, Tensor]]] = None
                  ) -> Dict[str, Tensor]:
    """``params`` with the keypoint handler's matched joint keypoints made markers where
    the labels' motion says so (the registrant's body model redefined, its handlers set
    up again) and the per-animal ``keypoint_offsets`` (G, Kp, 3) carried over to them.

    Each label's marker sits where the label sits now on the animals' rest bodies (the
    model point plus its offset), skinned with weights interpolated between its joint's
    and those of the skin around that joint nearest to it
    (:func:`~smilfit.body_models.markers.skin_around`) by its depth ``t = d_joint /
    (d_joint + d_skin)`` (the animals' medians): a label at its joint (a joint labelled as
    a joint) still moves as the joint, a label on the skin as the skin there, one in
    between partly as each. A label keeps its marker only where the marker follows it
    better: with the frames' poses fitted again with every label a marker (``refit``,
    e.g. the registrant's last pose stage; without it the poses as they are) and each
    label's offsets re-estimated (:func:`label_errors`), its reprojection errors are
    smaller than with its joint in significantly more of its frames and views than not
    (:func:`significantly_smaller`); elsewhere it stays on its joint, as the skin's
    weights of a body model are not always how a labelled point moves (the skin of a
    mouse model's neck is moved by the thoracic spine). A model's own surface keypoints
    (vertex keypoints) are left as they are.

    Raises:
        ValueError: no keypoint handler with joint-frame offsets, or a model without
            a surface.
    """
    model = registrant.body_model
    handler = registrant.keypoint_handler()
    if handler is None or getattr(handler, 'source', None) != 'keypoints' \
            or getattr(handler, 'offsets_frame', None) != 'joint' \
            or handler.offsets_key != 'keypoint_offsets' \
            or not hasattr(handler, 'offset_residuals'):
        raise ValueError("place_markers needs a 2D keypoint handler with "
                         "source='keypoints' and offsets_frame='joint' (labels carried by "
                         'joints)')
    if model.faces is None or not model.faces.numel():
        raise ValueError('place_markers needs a body model with a surface (faces)')
    G = int(params['keypoint_offsets'].shape[0])
    definitions = dict(model.keypoint_definitions)
    rows = [(m, i) for m, i in enumerate(handler.model_index.tolist())
            if anchor_joint(model, definitions[model.keypoint_names[i]]) is not None]
    if not rows:
        return params
    picked = torch.as_tensor([m for m, _ in rows], device=handler.model_index.device)
    names = [model.keypoint_names[i] for _, i in rows]
    joints = torch.as_tensor([anchor_joint(model, definitions[n]) for n in names],
                             device=picked.device)
    with torch.no_grad():
        rest = _rest_params(params, registrant.shared, groups, G)
        before = _rest_output(model, rest, G, vertices=True)
        labels = handler.matched_points(before, rest)[:, picked]           # (G, M, 3)
        skins = [skin_around(model.lbs_weights, model.faces, model.parents, j)
                 for j in joints.tolist()]
        corners, weights, surface = surface_places(labels, before.vertices, model.faces,
                                                   skins)
        to_joint = (labels - before.joints_kin[:, joints]).norm(dim=-1).median(0).values
        to_skin = (labels - surface).norm(dim=-1).median(0).values
        geometric = to_joint / (to_joint + to_skin).clamp_min(torch.finfo(labels.dtype).tiny)
        place = _Placement(registrant, handler, definitions, names, picked, joints, corners,
                           weights, labels, rest, params)
        joint_errors, valid = label_errors(registrant, handler, params, observations, groups)
        trial = place(geometric)
    if refit is not None:   # the frames' poses fitted again with every label a marker
        trial = refit(trial)
    with torch.no_grad():
        errors, _ = label_errors(registrant, handler, trial, observations, groups)
        better = significantly_smaller(errors, joint_errors, valid)[picked]
        return place(torch.where(better, geometric, torch.zeros_like(geometric)))


class _Placement:
    """Markers for the labels at given depths: the body model redefined, the handlers
    set up again and the parameters with each animal's offsets carried over."""

    def __init__(self, registrant, handler, definitions, names, picked, joints, corners,
                 weights, labels, rest, params) -> None:
        self.registrant, self.handler, self.definitions = registrant, handler, definitions
        self.names, self.picked, self.joints = names, picked, joints
        self.corners, self.weights, self.labels = corners, weights, labels
        self.rest, self.params = rest, params

    def __call__(self, depth: Tensor) -> Dict[str, Tensor]:
        model = self.registrant.body_model
        G = self.labels.shape[0]
        moved = torch.nonzero(depth > 0).flatten()   # (depth 0: the joint, as it was)
        names = [self.names[i] for i in moved.tolist()]
        pick = lambda t: t[moved]                                   # noqa: E731

        def define(positions: Tensor) -> Dict[str, Dict[str, Any]]:
            return marker_definitions(self.definitions, names, pick(self.corners),
                                      pick(self.weights), pick(depth), pick(self.joints),
                                      positions, model.joint_names)

        index = self.handler.model_index[self.picked]
        if names:
            # The readout at a rest pose is affine in the marker's rest point, x = B_a r +
            # x0_a (B_a the joints' blended world maps): each animal's label gives r; the
            # animals' mean is the marker's and their offsets keep the rest.
            unplaced = define(self.labels.new_zeros(len(names), 3))
            model.set_keypoints(unplaced)
            zero = _rest_output(model, self.rest, G, vertices=False)
            blend = torch.as_tensor(np.stack([
                marker_skinning(unplaced[n]['marker'], j, model.data.weights)
                for n, j in zip(names, pick(self.joints).tolist())])).to(self.labels)
            maps = torch.einsum('mj,gjab->gmab', blend, zero.joint_transforms[..., :3, :3])
            x0 = zero.keypoints[:, index[moved]]
            position = torch.linalg.solve(maps, (self.labels[:, moved] - x0)[..., None])
            redefine(self.registrant, define(position[..., 0].mean(0)))
        else:
            redefine(self.registrant, self.definitions)
        after = _rest_output(model, self.rest, G, vertices=False)
        carriers = source_carriers(model, 'keypoints')[index]
        frames = after.joint_transforms[:, carriers, :3, :3]                # (G, M, 3, 3)
        local = torch.linalg.solve(frames, (self.labels - after.keypoints[:, index])[..., None])
        offsets = self.params['keypoint_offsets'].clone()
        offsets[:, index] = local[..., 0].to(offsets)
        return {**self.params, 'keypoint_offsets': offsets}


def label_errors(registrant, handler, params: Mapping[str, Tensor],
                 observations: Mapping[str, Any], groups: Tensor) -> Tuple[Tensor, Tensor]:
    """How well each matched label's model point can follow it: the reprojection errors
    (B, C, M) (pixels) after the offset per (animal, label) that explains its residuals
    best (iteratively reweighted least squares, the frames' poses as they are), and the
    (B, C, M) elements that count."""
    G = int(groups.max()) + 1 if groups.numel() else 1
    expanded = {k: (v[groups] if k in registrant.shared else v) for k, v in params.items()}
    output = registrant.body_model(**{k: expanded[k] for k in MODEL_INPUTS if k in expanded},
                                   return_vertices=False)
    residuals, jac, valid = handler.offset_residuals(output, observations, expanded)
    # elements that do not count may hold anything (a point behind a camera): zero them
    valid = valid & torch.isfinite(jac).flatten(-2).all(-1)
    jac = torch.where(valid[..., None, None], jac, torch.zeros_like(jac))
    residuals = torch.where(valid[..., None], residuals, torch.zeros_like(residuals))
    weight = valid.to(residuals.dtype)
    for _ in range(3):   # reweighted: a swapped or outlying point barely counts
        wj = weight[..., None, None] * jac
        normal = torch.zeros((G,) + jac.shape[2:3] + (3, 3), dtype=jac.dtype,
                             device=jac.device).index_add_(
            0, groups, torch.einsum('bcmki,bcmkj->bmij', wj, jac))
        rhs = torch.zeros((G,) + jac.shape[2:3] + (3,), dtype=jac.dtype,
                          device=jac.device).index_add_(
            0, groups, torch.einsum('bcmki,bcmk->bmi', wj, residuals))
        step = -(torch.linalg.pinv(normal) @ rhs[..., None])[..., 0]        # (G, M, 3)
        errors = (residuals + torch.einsum('bcmki,bmi->bcmk', jac, step[groups])).norm(dim=-1)
        spread = _group_median(errors, valid, groups, G)    # (G, M), NaN: never seen
        scale = 1.4826 * spread[groups][:, None].clamp_min(torch.finfo(errors.dtype).tiny)
        weight = torch.where(valid, 1.0 / (1.0 + (errors / (3.0 * scale)) ** 2),
                             torch.zeros_like(errors))
    return errors, valid


def significantly_smaller(errors: Tensor, reference: Tensor, valid: Tensor) -> Tensor:
    """(M,) bool: where ``errors`` (B, C, M) are smaller than ``reference`` in
    significantly more of the valid elements than not (a one-sided sign test over the
    frames and views, ties left out, at :data:`~smilfit.handlers.offset_estimate.
    SIGNIFICANCE`, the offsets' own test)."""
    from scipy.stats import binom
    smaller = ((errors < reference) & valid).flatten(0, 1).sum(0)
    larger = ((errors > reference) & valid).flatten(0, 1).sum(0)
    n = (smaller + larger).cpu().numpy()
    chance = binom.sf(smaller.cpu().numpy() - 1, n, 0.5)      # P(at least this many)
    return torch.as_tensor((chance < SIGNIFICANCE) & (n > 0), device=errors.device)


def _group_median(errors: Tensor, valid: Tensor, groups: Tensor, G: int) -> Tensor:
    """(G, M) median of the valid (B, C, M) errors over each group's samples and views."""
    masked = torch.where(valid, errors, torch.full_like(errors, float('nan')))
    per_group = by_group(masked, groups, G, float('nan'))                   # (G, S, C, M)
    return per_group.flatten(1, 2).nanmedian(1).values


def anchor_joint(model, definition: Mapping[str, Any]) -> Optional[int]:
    """The joint a keypoint definition starts from (a joint keypoint's joint, a marker's
    joint), or ``None`` for a point of the surface (a vertex keypoint)."""
    joint = definition.get('joint', definition.get('marker', {}).get('joint'))
    return None if joint is None else model.joint_index(joint)


def redefine(registrant, definitions: Mapping[str, Mapping[str, Any]]) -> None:
    """The registrant's body model's keypoints defined as ``definitions`` and its
    handlers set up again (their carrying joints follow the new definitions)."""
    registrant.body_model.set_keypoints(dict(definitions))
    for h in registrant.handlers.values():
        h.setup(registrant.body_model, registrant.data_info)


def placed_points(model) -> bool:
    """Whether a fit placed points on ``model``: labels made markers, or labels its lookup
    left out given keypoints (so the skeleton's offsets are in those points' frames)."""
    return (any('marker' in d for d in model.keypoint_definitions.values())
            or bool(placed_lookup(model.keypoint_names)))


def keypoint_definitions_text(registrant) -> np.ndarray:
    """The registrant's body model's keypoint definitions as a 0-d string array (what a
    skeleton file stores beside the per-animal parameters)."""
    return np.asarray(definitions_to_text(registrant.body_model.keypoint_definitions))


def apply_keypoint_definitions(registrant, text: Any) -> None:
    """Define the registrant's body model's keypoints from a skeleton file's
    :func:`keypoint_definitions_text` and set its handlers up again; keypoints the fit
    placed for labels its lookup left out (:mod:`.unmapped_placement`) are matched to
    their labels again.

    Raises:
        ValueError: the definitions name other keypoints than the model's (and the
            placed ones).
    """
    from .unmapped_placement import match_placed   # (it imports this module)
    definitions = definitions_from_text(str(np.asarray(text)))
    model = registrant.body_model
    own = [n for n in model.keypoint_names if n not in placed_lookup(model.keypoint_names)]
    placed = placed_lookup(definitions)
    if [n for n in definitions if n not in placed] != own:
        raise ValueError(f'the stored keypoint definitions name {list(definitions)[:4]}..., '
                         f'the body model has {list(model.keypoint_names)[:4]}...')
    if definitions != model.keypoint_definitions:
        match_placed(registrant, placed)
        redefine(registrant, definitions)
