"""Prior on an animal's skeleton corrections (bone translations, keypoint offsets) in
body units, with left/right symmetry, counted once per animal."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import torch

from ..body_models.mesh_from_skeleton.symmetry import find_symmetric_pairs
from ..losses.skeleton_priors import (body_length, midline_points, sagittal_plane,
                                      skeleton_prior_operator)
from ..registry import HANDLERS
from .base import BaseHandler, get_param, zeros_like_batch

Tensor = torch.Tensor


@HANDLERS.register_module()
class SkeletonPriorHandler(BaseHandler):
    """Gaussian prior on ``bone_trans`` (J, 3) and joint-frame ``keypoint_offsets``
    (N, 3), in fractions of the body length (:mod:`smilfit.losses.skeleton_priors`).

    ``loss = |A_b vec(bone_trans)|^2 + |A_o vec(keypoint_offsets)|^2``: magnitude of every
    correction, left/right symmetry across the sagittal plane and no sideways move of
    midline points. Left/right pairs come from the model's ``sym_joint_pairs`` or, where
    it has none, from joint and keypoint names (``_L``/``_R``, ``left``/``right``, ...);
    the plane from the pairs' rest positions. Without pairs only the magnitude terms
    remain. The body length ``L`` is the rest pose's largest extent (model units, as
    the parameters).

    With the data in noise units (``Keypoint2DHandler(scale_from_residuals=True)``) and
    weight 1 this is a negative log prior against a negative log-likelihood. Its
    parameters are shared per animal, so the registrant counts it once per animal
    (:meth:`~smilfit.registrants.SMILRegistrant.counted_per_group`): with a few frames it
    holds the skeleton near the template, with many the data decide.

    Config::

        dict(type='SkeletonPriorHandler', name='skeleton_prior',
             bone_scale=0.05, offset_scale=0.1, symmetry_scale=0.02)

    Args:
        name, weight, check_finite: see :class:`~.base.BaseHandler`.
        bone_scale: prior scale of a bone translation (fraction of L, per axis), or
            ``None`` for no prior on ``bone_trans``.
        offset_scale: prior scale of a keypoint offset (fraction of L), or ``None``.
        symmetry_scale: tolerated left/right asymmetry and sideways move of midline
            points (fraction of L).
        bone_trans_key, offsets_key: params keys.
    """

    residual_kind = 'params'

    def __init__(self, name: str, weight: float = 1.0, bone_scale: Optional[float] = 0.05,
                 offset_scale: Optional[float] = 0.1, symmetry_scale: float = 0.02,
                 bone_trans_key: str = 'bone_trans', offsets_key: str = 'keypoint_offsets',
                 check_finite: bool = False) -> None:
        super().__init__(name, None, weight, check_finite)
        if bone_scale is None and offset_scale is None:
            raise ValueError(f'handler {name!r}: bone_scale and offset_scale are both None')
        for label, value in (('bone_scale', bone_scale), ('offset_scale', offset_scale),
                             ('symmetry_scale', symmetry_scale)):
            if value is not None and not float(value) > 0:
                raise ValueError(f'handler {name!r}: {label} must be > 0, got {value!r}')
        self.scales = {bone_trans_key: bone_scale, offsets_key: offset_scale}
        self.symmetry_scale = float(symmetry_scale)
        self.keys = [k for k, v in self.scales.items() if v is not None]
        self.operators: Dict[str, Tensor] = {}
        self.body_length: Optional[float] = None

    @property
    def residual_params(self) -> Sequence[str]:
        return tuple(self.keys)

    @property
    def affine_param_residuals(self) -> bool:
        return True

    def setup(self, body_model, data_info: Optional[Mapping[str, Any]] = None) -> None:
        with torch.no_grad():
            rest = body_model(return_vertices=False)
        joints = rest.joints[0].double().cpu()
        length = body_length(joints)
        pairs = body_model.data.sym_joint_pairs
        pairs = (torch.as_tensor(pairs, dtype=torch.long) if pairs is not None
                 else _named_pairs(body_model.joint_names))
        normal = centre = None
        if pairs is not None and pairs.numel():
            normal, centre = sagittal_plane(joints, pairs)
        operators = {}
        for key in self.keys:
            if key == 'keypoint_offsets':
                points = (rest.keypoints[0].double().cpu() if rest.keypoints is not None
                          else joints)
                point_pairs = _named_pairs(getattr(body_model, 'keypoint_names', None) or
                                           body_model.joint_names)
            else:
                points, point_pairs = joints, pairs
            midline = (None if normal is None
                       else midline_points(points, point_pairs, normal, centre, length))
            operators[key] = skeleton_prior_operator(
                points.shape[0], length, float(self.scales[key]), self.symmetry_scale,
                point_pairs if normal is not None else None, normal, midline)
        self.operators = operators
        self.body_length = length
        super().setup(body_model, data_info)

    def param_residuals(self, params: Mapping[str, Any],
                        observations: Mapping[str, Any]) -> Tensor:
        self._require_setup()
        parts = []
        for key in self.keys:
            value = get_param(params, key)
            if value is None:
                continue
            A = self.operators[key]
            if value.shape[-2] * 3 != A.shape[1]:
                raise ValueError(f'handler {self.name!r}: params[{key!r}] has '
                                 f'{value.shape[-2]} points, the model {A.shape[1] // 3}')
            parts.append(value.reshape(value.shape[0], -1) @ A.to(value).T)
        if not parts:
            return torch.zeros(0)
        return torch.cat(parts, 1)

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> Tensor:
        r = self.param_residuals(params, observations)
        if r.numel() == 0:
            return zeros_like_batch(output)
        return (r * r).sum(1).expand(output.joints.shape[0])


def _named_pairs(names: Optional[Sequence[str]]) -> Optional[Tensor]:
    """(P, 2) left/right pairs found by name, or ``None``."""
    if not names:
        return None
    pairs = find_symmetric_pairs(list(names))
    return None if pairs is None else torch.as_tensor(pairs, dtype=torch.long)


__all__ = ['SkeletonPriorHandler']
