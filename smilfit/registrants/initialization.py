"""Initial global pose for fitting: rigid alignment of the rest-pose model to 3D points.

The observed 3D points are either given (3D keypoints) or triangulated from the 2D
keypoints of calibrated views. The model's rest-pose keypoints (zero pose, zero shape)
are aligned to them by weighted Kabsch, which yields ``global_orient`` and ``transl``.
From one view nothing can be triangulated: :func:`heading_hypotheses` places the rest
pose in front of the camera under several orientations instead (the registrant's
``multi_start`` fits them all and keeps the best). :func:`place_on_points` aligns a posed
body the same way (a network's pose placed where its keypoints are).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from smilfit.body_models.parameters import MODEL_INPUTS
from smilfit.body_models.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from smilfit.cameras.triangulation import triangulate_observations
from smilfit.ops.alignment import similarity_align


def rigid_align(source: torch.Tensor, target: torch.Tensor,
                weights: Optional[torch.Tensor] = None, with_scale: bool = False):
    """Weighted Kabsch: the rotation and translation with ``target ~ R source + t``
    (Umeyama's ``target ~ s R source + t`` with ``with_scale``).

    Args:
        source: (B, N, 3) points (finite).
        target: (B, N, 3) points; NaN entries are ignored.
        weights: (B, N) non-negative weights or None.

    Returns:
        R (B, 3, 3) proper rotations and t (B, 3) (and s (B,) with ``with_scale``). With
        fewer than 3 usable points the rotation is the identity, the scale 1 and ``t``
        matches the centroids; with none, ``t`` is 0.
    """
    R, t, scale, _ = similarity_align(source, target, weights, with_scale)
    return (R, t, scale) if with_scale else (R, t)


def observed_points(observations: Dict[str, torch.Tensor], triangulate: bool = True
                    ) -> Optional[torch.Tensor]:
    """(B, K, 3) the samples' 3D keypoints where the observations give any, else (with
    ``triangulate``) their 2D keypoints triangulated through the views' cameras (``K``,
    ``R``, ``t``), else None."""
    if 'keypoints_3d' in observations and torch.isfinite(observations['keypoints_3d']).any():
        return observations['keypoints_3d']
    if triangulate and {'keypoints_2d', 'K', 'R', 't'} <= set(observations):
        return triangulate_observations(dict(observations))
    return None


def global_pose_from_points(rest_points: torch.Tensor, rest_root: torch.Tensor,
                            observed: torch.Tensor, weights: Optional[torch.Tensor] = None,
                            with_scale: bool = False):
    """``global_orient`` (axis-angle) and ``transl`` aligning rest-pose points to observed ones.

    The model rotates about its root joint ``J0``: ``x' = R (x - J0) + J0 + transl``, so
    ``transl = t + R J0 - J0`` for the Kabsch solution ``x' = R x + t``.

    Args:
        rest_points: (B, N, 3) model points in the rest pose (no translation).
        rest_root: (B, 3) the rest-pose root joint.
        observed: (B, N, 3) matching observations (NaN where missing).
        weights: (B, N) or None.

    With ``with_scale`` the model is also scaled about the origin
    (``global_log_scale``): ``x' = s (R (x - J0) + J0) + transl``, so ``transl = t + s R J0
    - s J0`` for Umeyama's ``x' = s R x + t``.

    Returns:
        global_orient (B, 3) and transl (B, 3) (and global_log_scale (B, 1) with
        ``with_scale``).
    """
    if not with_scale:
        R, t = rigid_align(rest_points, observed, weights)
        transl = t + (R @ rest_root[..., None]).squeeze(-1) - rest_root
        return matrix_to_axis_angle(R), transl
    R, t, s = rigid_align(rest_points, observed, weights, with_scale=True)
    transl = t + s[:, None] * ((R @ rest_root[..., None]).squeeze(-1) - rest_root)
    return matrix_to_axis_angle(R), transl, s.log()[:, None]


def place_on_points(body_model, handler, params: Dict[str, torch.Tensor],
                    points: torch.Tensor, with_scale: bool) -> Dict[str, torch.Tensor]:
    """The global pose that best aligns the model, posed by the other parameters of
    ``params`` (body pose, skeleton, keypoint offsets), to ``points``.

    The model is posed with ``global_orient`` and ``transl`` at zero (and
    ``global_log_scale`` with ``with_scale``; else the given scale is kept and the
    alignment is rigid), and its keypoint handler's matched points are aligned to the
    matching ``points`` (Kabsch, or Umeyama's similarity) about the root joint, as
    :func:`global_pose_from_points` aligns the rest pose.

    Args:
        body_model: the :class:`~smilfit.body_models.SMILModel`.
        handler: a handler matching model points to data keypoints by name
            (``model_index``, ``data_index``, ``matched_points``).
        params: (B, ...) per-sample parameters (shared ones expanded), with
            ``global_orient`` and ``transl`` (and ``global_log_scale`` with
            ``with_scale``).
        points: (B, K, 3) points in the data's keypoint order, world units (NaN where
            missing).
        with_scale: fit ``global_log_scale`` too.

    Returns:
        ``{name: (B, ...)}`` the placed ``global_orient``, ``transl`` (and
        ``global_log_scale``); samples with fewer than 3 matched points keep theirs.
    """
    names = ('global_orient', 'transl') + (('global_log_scale',) if with_scale else ())
    observed = points.to(params['transl']).index_select(
        1, handler.data_index.to(params['transl'].device))
    unplaced = dict(params, **{name: torch.zeros_like(params[name]) for name in names})
    with torch.no_grad():
        posed = body_model(**{k: v for k, v in unplaced.items() if k in MODEL_INPUTS},
                           return_vertices=False)
        model_points = handler.matched_points(posed, unplaced)
        root = posed.joints_kin[:, body_model.levels.root]
        aligned = global_pose_from_points(model_points, root, observed,
                                          with_scale=with_scale)
    found = torch.isfinite(observed).all(-1).sum(-1) >= 3
    return {name: torch.where(found.view(-1, *([1] * (value.dim() - 1))),
                              value.to(params[name]), params[name])
            for name, value in zip(names, aligned)}


def heading_hypotheses(keypoints_2d: torch.Tensor, visible: torch.Tensor, K: torch.Tensor,
                       R: torch.Tensor, t: torch.Tensor, orientations: torch.Tensor,
                       rest_joints: torch.Tensor, root: int, body_extent: float
                       ) -> Dict[str, torch.Tensor]:
    """Rest-pose starts in front of one camera: every orientation, placed on the ray
    through the keypoints' centroid at the depth where ``body_extent`` spans their extent.

    Args:
        keypoints_2d: (B, M, 2) pixels of one view (NaN where missing).
        visible: (B, M) bool.
        K, R, t: (B, 3, 3), (B, 3, 3), (B, 3) that view's camera (world -> camera).
        orientations: (Y, 3) axis-angle orientations of the model in the *camera* frame
            (e.g. :func:`smilfit.body_models.quadruped.camera_facing_orientations`).
        rest_joints: (J, 3) the rest pose's joints (model units).
        root: the root joint (``global_orient`` pivots about it).
        body_extent: the body's size in world units (spans the keypoints' extent).

    Returns:
        ``global_orient`` and ``transl``, (B * Y, 3) each, sample-major (sample ``b``'s
        hypotheses are rows ``b * Y ... b * Y + Y - 1``).
    """
    vis = visible & torch.isfinite(keypoints_2d).all(-1)
    w = vis.to(keypoints_2d.dtype)
    centroid = (torch.nan_to_num(keypoints_2d) * w[..., None]).sum(1) / w.sum(
        1, keepdim=True).clamp_min(1)
    inf = torch.full_like(keypoints_2d, float('inf'))
    extent = (torch.where(vis[..., None], keypoints_2d, -inf).amax(1)
              - torch.where(vis[..., None], keypoints_2d, inf).amin(1)).amax(-1)
    extent = torch.nan_to_num(extent, nan=8.0, posinf=8.0, neginf=8.0).clamp_min(8.0)
    depth = K[:, 0, 0] * body_extent / extent                             # (B,)
    ray = torch.linalg.solve(K, torch.cat([centroid, torch.ones_like(centroid[:, :1])],
                                          -1)[..., None])[..., 0]         # (B, 3), z = 1
    centre_cam = ray * depth[:, None]
    # camera -> world: x_w = R^T (x_c - t)
    Rt = R.transpose(-1, -2)
    centre = (Rt @ (centre_cam - t)[..., None])[..., 0]                  # (B, 3)
    R_orient = Rt[:, None] @ axis_angle_to_matrix(orientations.to(R))[None]  # (B, Y, 3, 3)
    rest_root = rest_joints[root].to(R)
    # the joints' centroid lands at R_o (c - root) + root + transl
    offset = (R_orient @ (rest_joints.mean(0).to(R) - rest_root)[..., None])[..., 0] + rest_root
    transl = centre[:, None] - offset                                      # (B, Y, 3)
    return dict(global_orient=matrix_to_axis_angle(R_orient.flatten(0, 1)),
                transl=transl.flatten(0, 1))


__all__ = ['rigid_align', 'triangulate_observations', 'observed_points', 'global_pose_from_points',
           'place_on_points', 'heading_hypotheses']
