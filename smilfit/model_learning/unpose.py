"""Inverse linear blend skinning: bring posed registrations back to the rest pose.

A registration (a mesh in correspondence with a body model, fitted with some pose,
shape and per-joint scale) is posed; a shape space is learned from rest-pose meshes.
LBS maps every rest vertex with its own blended affine map
``y_v = M_v [x_v + p_v(theta); 1]``, ``M_v = sum_j w_vj A_j`` (``p_v`` the pose
blendshapes), so each vertex is unposed exactly by inverting its 3x3 blended map:
``x_v = M_v[:, :3]^-1 (y_v - M_v[:, 3]) - p_v(theta)``.

Shapes: B registrations, V vertices, J joints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

import torch

from ..body_models.lbs import pca_joint_scale_trans, pose_feature, skinning_transforms

Tensor = torch.Tensor

#: Parameters of :class:`~smilfit.body_models.SMILModel` that define a registration's pose.
POSE_PARAM_KEYS = ('global_orient', 'body_pose', 'betas', 'transl', 'log_scale', 'bone_trans',
                   'scale_weights', 'trans_weights')


@dataclass
class SkinningState:
    """What LBS did to the rest mesh of each sample.

    Attributes:
        maps: (B, J, 3, 4) per-joint affine maps of rest points (``transl`` included).
        rest_joints: (B, J, 3) rest-pose joints the maps pivot about.
        pose_offsets: (B, V, 3) pose-blendshape offsets added before skinning, or ``None``.
    """

    maps: Tensor
    rest_joints: Tensor
    pose_offsets: Optional[Tensor]


def _check_model(model) -> None:
    if getattr(model, 'reference_compat', False):
        raise ValueError('unposing and model learning use smilfit\'s conventions; build the '
                         'body model with reference_compat=False')


def skinning_state(model, params: Mapping[str, Tensor]) -> SkinningState:
    """Per-sample LBS maps of ``model`` under ``params`` (SMILModel keyword arguments).

    Args:
        model: a :class:`~smilfit.body_models.SMILModel`.
        params: any of :data:`POSE_PARAM_KEYS`, each (B, ...).
    """
    _check_model(model)
    unknown = set(params) - set(POSE_PARAM_KEYS)
    if unknown:
        raise ValueError(f'unknown pose parameter(s) {sorted(unknown)}; allowed: '
                         f'{POSE_PARAM_KEYS}')
    out = model(**params, return_vertices=False, return_keypoints=False)
    B, J = out.rot_mats.shape[:2]
    rest = model.rest_joints.expand(B, J, 3)
    betas = params.get('betas')
    if betas is not None and betas.shape[1]:
        betas = torch.as_tensor(betas).to(model.rest_joints)
        rest = rest + torch.einsum('jck,bk->bjc', model.rest_joint_dirs[..., :betas.shape[1]],
                                   betas)
    maps = skinning_transforms(out.joint_transforms, rest)
    transl = params.get('transl')
    if transl is not None:
        transl = torch.as_tensor(transl).to(maps)
        maps = torch.cat([maps[..., :3], (maps[..., 3] + transl[:, None])[..., None]], -1)
    pose_offsets = None
    if model.posedirs.shape[2]:
        pf = pose_feature(out.rot_mats, model.levels.non_root)
        pose_offsets = torch.einsum('vcp,bp->bvc', model.posedirs, pf)
    return SkinningState(maps=maps, rest_joints=rest, pose_offsets=pose_offsets)


def unpose_vertices(vertices: Tensor, maps: Tensor, weights: Tensor,
                    pose_offsets: Optional[Tensor] = None) -> Tensor:
    """Inverse LBS of posed vertices.

    Args:
        vertices: (B, V, 3) posed vertices (the model's topology).
        maps: (B, J, 3, 4) skinning maps (see :func:`skinning_state`).
        weights: (V, J) skinning weights.
        pose_offsets: (B, V, 3) pose-blendshape offsets to remove, or ``None``.

    Returns:
        (B, V, 3) rest-pose vertices (before pose blendshapes).

    Raises:
        ValueError: a vertex's blended map is singular (e.g. a joint scaled to 0);
            the message names the first one.
    """
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f'vertices must be (B, V, 3), got {tuple(vertices.shape)}')
    if weights.shape[0] != vertices.shape[1]:
        raise ValueError(f'vertices have {vertices.shape[1]} vertices, the skinning weights '
                         f'{weights.shape[0]}')
    blended = torch.einsum('vj,bjcd->bvcd', weights.to(maps), maps)  # (B, V, 3, 4)
    lin, t = blended[..., :3], blended[..., 3]
    det = torch.linalg.det(lin)
    bad = det.abs() < 1e-12
    if bool(bad.any()):
        b, v = (int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(f'sample {b}, vertex {v}: blended skinning map is singular '
                         f'(det {float(det[b, v]):.3g}); cannot unpose')
    rest = torch.linalg.solve(lin, (vertices.to(maps) - t)[..., None])[..., 0]
    if pose_offsets is not None:
        rest = rest - pose_offsets
    return rest


def unpose_registrations(model, vertices: Tensor, params: Mapping[str, Tensor],
                         batch_size: int = 256, progress: bool = False
                         ) -> Tuple[Tensor, Tensor]:
    """Unpose (N, V, 3) registrations fitted with ``params`` (each (N, ...)), in batches.

    Returns:
        ``(rest_vertices (N, V, 3), rest_joints (N, J, 3))``: the rest-pose meshes (in
        the model's unscaled rest frame: per-joint scale and bone translation are undone
        too) and the rest joints the fit pivoted about.
    """
    from tqdm import tqdm
    N = vertices.shape[0]
    for k, v in params.items():
        if v is not None and v.shape[0] != N:
            raise ValueError(f'params[{k!r}] has {v.shape[0]} rows for {N} registrations')
    rest, joints = [], []
    starts = range(0, N, batch_size)
    for s in tqdm(starts, desc='unposing', disable=not progress):
        p = {k: v[s:s + batch_size] for k, v in params.items() if v is not None}
        state = skinning_state(model, p)
        rest.append(unpose_vertices(vertices[s:s + batch_size], state.maps, model.lbs_weights,
                                    state.pose_offsets))
        joints.append(state.rest_joints)
    return torch.cat(rest), torch.cat(joints)


def effective_scale_trans(model, params: Mapping[str, Tensor]
                          ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """Per-joint ``(log_scale, bone_trans)`` (B, J, 3) a fit used, PCA drivers included.

    ``None`` where the fit used neither the direct parameter nor its PCA driver.
    """
    log_scale, bone_trans = params.get('log_scale'), params.get('bone_trans')
    sw, tw = params.get('scale_weights'), params.get('trans_weights')
    if sw is not None or tw is not None:
        ps, pt = pca_joint_scale_trans(sw, tw, model.scaledirs, model.transdirs,
                                       model.trans_factor)
        if ps is not None:
            log_scale = ps if log_scale is None else log_scale + ps
        if pt is not None:
            bone_trans = pt if bone_trans is None else bone_trans + pt
    return log_scale, bone_trans


__all__ = ['SkinningState', 'skinning_state', 'unpose_vertices', 'unpose_registrations',
           'effective_scale_trans', 'POSE_PARAM_KEYS']
