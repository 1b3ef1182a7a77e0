"""Labels as markers on the body.

A label on the skin of the trunk moves with every joint that bends the skin under it. A
model point carried by one joint (a joint keypoint plus an offset in that joint's frame)
follows only that joint, so the choice of joint in the lookup decides how well the label
can be fitted. A *marker* (after MoSh, Loper, Mahmood and Black 2014) is a point of the
rest body skinned with weights interpolated from its joint's (depth 0) to those of a
surface point, a barycentric point of one triangle (depth 1): a label on the skin moves
as the skin there, a label at its joint as the joint. :func:`surface_places` finds, for
points on the animals' rest bodies, the triangle and barycentric place;
:func:`marker_definitions` writes markers as keypoint definitions of the model (the
``marker`` kind, :func:`~smilfit.body_models.model_data.validate_keypoint`, which
:meth:`~smilfit.body_models.SMILModel.set_keypoints` takes) and :func:`marker_moments`
is their readout.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from smilfit.ops.point_mesh import closest_point_on_triangle, point_to_surface_sq

Tensor = torch.Tensor

__all__ = ['barycentric', 'surface_places', 'skin_around', 'surface_definitions',
           'marker_definitions', 'marker_skinning', 'marker_moments',
           'definitions_to_text', 'definitions_from_text']


def barycentric(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """(..., 3) barycentric coordinates of ``p`` in the plane of triangle ``(a, b, c)``
    (all (..., 3)); a degenerate triangle gives its first vertex."""
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
    d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
    den = d00 * d11 - d01 * d01
    ok = den.abs() > 1e-30
    den = torch.where(ok, den, torch.ones_like(den))
    v = torch.where(ok, (d11 * d20 - d01 * d21) / den, torch.zeros_like(den))
    w = torch.where(ok, (d00 * d21 - d01 * d20) / den, torch.zeros_like(den))
    return torch.stack([1.0 - v - w, v, w], dim=-1)


def surface_places(points: Tensor, vertices: Tensor, faces: Tensor,
                   allowed: Optional[Sequence[Tensor]] = None
                   ) -> Tuple[Tensor, Tensor, Tensor]:
    """Where on the surface each point's marker sits, one place for all animals.

    Each animal proposes the closest point of its own rest surface to its point; the
    proposal (triangle and barycentric place) kept is the one nearest to the points of
    all animals together (the summed distance, each animal's surface posed by its own
    shape), so one marker serves every animal and each animal's offset holds the rest.

    Args:
        points: (A, M, 3) the points on each animal's rest body (model units).
        vertices: (A, V, 3) each animal's rest surface.
        faces: (F, 3) long.
        allowed: optional M (F_m,) long tensors, the faces each point may sit on (e.g.
            the skin around its joint); default: all.

    Returns:
        ``(corners (M, 3) long, weights (M, 3), surface (A, M, 3))``: the triangle's
        vertices, the barycentric weights (each row sums to 1, all >= 0) and the
        marker's place on every animal's surface.
    """
    A, M = points.shape[:2]
    if allowed is None:
        _, face = point_to_surface_sq(points, vertices, faces)        # (A, M)
        corners = faces[face]                                          # (A, M, 3)
    else:   # one search per point over its own faces (placed once per fit)
        corners = torch.stack([
            faces[subset][point_to_surface_sq(points[:, m:m + 1], vertices,
                                              faces[subset])[1][:, 0]]
            for m, subset in enumerate(allowed)], dim=1)
    animal = torch.arange(A, device=points.device)[:, None, None]
    tri = vertices[animal, corners]                                    # (A, M, 3, 3)
    closest = closest_point_on_triangle(points, tri[..., 0, :], tri[..., 1, :],
                                        tri[..., 2, :])
    weights = barycentric(closest, tri[..., 0, :], tri[..., 1, :], tri[..., 2, :])
    weights = weights.clamp_min(0.0)
    weights = weights / weights.sum(-1, keepdim=True)                  # (A, M, 3)
    # proposal q (from animal q) on animal b's surface: (Q=A, B=A, M, 3)
    on = torch.einsum('qmc,bqmcd->qbmd', weights, vertices[:, corners])
    cost = (on - points[None]).norm(dim=-1).sum(1)                     # (Q, M)
    best = cost.argmin(0)                                              # (M,)
    m = torch.arange(M, device=points.device)
    return corners[best, m], weights[best, m], on[best, :, m].transpose(0, 1)


def skin_around(lbs_weights: Tensor, faces: Tensor, parents: Tensor, joint: int) -> Tensor:
    """(F',) long: the faces of the skin around ``joint``, those mostly moved by it, its
    parent or one of its children (the bones that meet there). A label near a joint sits
    on that skin, not on another part of the body that the rest pose brings close (a
    hind foot tucked under the haunch)."""
    moved_by = lbs_weights[faces].sum(1).argmax(-1)                   # (F,)
    near = torch.nonzero(parents == joint).flatten().tolist() + [joint]
    if int(parents[joint]) >= 0:
        near.append(int(parents[joint]))
    return torch.nonzero(torch.isin(moved_by, torch.as_tensor(near, device=faces.device))
                         ).flatten()


def surface_definitions(definitions: Mapping[str, Mapping[str, Any]], names: Sequence[str],
                        corners: Tensor, weights: Tensor) -> Dict[str, Dict[str, Any]]:
    """``definitions`` (a model's keypoint definitions) with ``names`` (M,) redefined as
    points of the surface: the triangles ``corners`` (M, 3) at barycentric ``weights``
    (M, 3)."""
    out = {k: dict(v) for k, v in definitions.items()}
    for name, ids, w in zip(names, corners.tolist(), weights.tolist()):
        if name not in out:
            raise KeyError(f'surface_definitions: {name!r} is not a keypoint of the model')
        out[name] = dict(vertices=[int(i) for i in ids], weights=[float(x) for x in w])
    return out


def marker_definitions(definitions: Mapping[str, Mapping[str, Any]], names: Sequence[str],
                       corners: Tensor, weights: Tensor, depth: Tensor, joints: Tensor,
                       positions: Tensor, joint_names: Sequence[str]
                       ) -> Dict[str, Dict[str, Any]]:
    """``definitions`` with ``names`` (M,) redefined as markers
    (:func:`~smilfit.body_models.model_data.validate_keypoint`): rest points
    ``positions`` (M, 3) skinned with the weights of ``joints`` (M,) interpolated by
    ``depth`` (M,) to those of the surface points ``corners`` (M, 3) / ``weights``
    (M, 3)."""
    out = {k: dict(v) for k, v in definitions.items()}
    for name, ids, w, t, j, p in zip(names, corners.tolist(), weights.tolist(),
                                     depth.tolist(), joints.tolist(), positions.tolist()):
        if name not in out:
            raise KeyError(f'marker_definitions: {name!r} is not a keypoint of the model')
        out[name] = dict(marker=dict(position=[float(x) for x in p],
                                     joint=str(joint_names[int(j)]),
                                     vertices=[int(i) for i in ids],
                                     weights=[float(x) for x in w],
                                     depth=min(max(float(t), 0.0), 1.0)))
    return out


def definitions_to_text(definitions: Mapping[str, Mapping[str, Any]]) -> str:
    """Keypoint definitions as JSON text (what fit results and skeleton files store)."""
    return json.dumps({k: dict(v) for k, v in definitions.items()})


def definitions_from_text(text: str) -> Dict[str, Dict[str, Any]]:
    """Keypoint definitions from :func:`definitions_to_text`'s JSON (data, never code)."""
    value = json.loads(str(text))
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError('keypoint definitions must be a JSON object of objects')
    return value


def marker_skinning(marker: Mapping[str, Any], joint: int, lbs_weights: np.ndarray
                    ) -> np.ndarray:
    """(J,) float64 the skinning weights of a ``marker`` keypoint (its fields; ``joint``
    its joint's index, ``lbs_weights`` (V, J)): its joint's, interpolated by its depth to
    those of its surface point."""
    t = float(marker['depth'])
    ids = np.asarray(marker['vertices'], dtype=np.int64)
    skin = np.asarray(marker['weights'], dtype=np.float64) @ np.asarray(
        lbs_weights, np.float64)[ids]
    return (1.0 - t) * np.eye(skin.shape[0])[joint] + t * skin / skin.sum()


def marker_moments(marker: Mapping[str, Any], joint: int, lbs_weights: np.ndarray,
                   shapedirs: np.ndarray, posedirs: np.ndarray, joint_dirs: np.ndarray
                   ) -> tuple:
    """The readout moments of a ``marker`` keypoint (its rest point skinned with its
    joint's weights interpolated to the surface point's by its depth; its shape motion
    likewise): mass (J,), moment0 (J, 3), shape (J, 3, K), pose (J, 3, P), float64.

    Args:
        marker: the keypoint's ``marker`` fields; ``joint`` its joint's index.
        lbs_weights: (V, J) skinning weights; shapedirs: (V, 3, K); posedirs: (V, 3, P).
        joint_dirs: (J, 3, K') the rest joints' shape directions (K' >= K).
    """
    t = float(marker['depth'])
    ids = np.asarray(marker['vertices'], dtype=np.int64)
    bary = np.asarray(marker['weights'], dtype=np.float64)
    weights = marker_skinning(marker, joint, lbs_weights)
    shape = ((1.0 - t) * joint_dirs[joint, :, :shapedirs.shape[2]]
             + t * np.einsum('v,vck->ck', bary, shapedirs[ids]))
    pose = t * np.einsum('v,vcp->cp', bary, np.asarray(posedirs)[ids])
    position = np.asarray(marker['position'], dtype=np.float64)
    return (weights, weights[:, None] * position, weights[:, None, None] * shape,
            weights[:, None, None] * pose)
