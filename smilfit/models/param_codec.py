"""Prediction layout <-> body-model parameters and cameras.

A regressor head predicts flat vectors, refined by iterative error feedback (each
iteration adds a residual to the current vector). :class:`BodyParamCodec` and
:class:`CameraCodec` define what those vectors mean:

- **body vector** (B, P_b): ``global_orient``, ``body_pose``, ``betas``, ``transl`` and
  optionally per-joint ``log_scale``/``bone_trans`` (direct, (J, 3) each) or their PCA
  weights ``scale_weights``/``trans_weights``. Rotations are 6D (first two matrix
  columns, smilfit's convention) or axis-angle; ``transl`` is stored in units of
  ``length_scale`` (about one camera distance) so that every entry is O(1).
- **camera vector** (B, C, P_c) per view slot: a perspective camera (rotation, translation,
  focal length as a log factor) or a weak-perspective camera (rotation, log scale,
  translation), either from a default pose (``init='default'``: looking along +z at the
  origin from ``distance``) or as a correction of the calibrated camera
  (``init='calibrated'``). Decoding returns OpenCV pinhole cameras ``K, R, t, dist``
  (weak perspective through its long-focal-length stand-in), so every loss and metric
  projects the same way.

The initial vectors (``init_vector``) are what the head refines from: identity rotations,
zero pose and shape, the configured translation and the default or calibrated cameras.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from smilfit.body_models.rotations import (axis_angle_to_matrix, matrix_to_axis_angle,
                                           matrix_to_rotation_6d, rotation_6d_to_matrix)

ROTATIONS = ('6d', 'axis_angle')
PER_JOINT_MODES = (None, 'direct', 'pca')
CAMERA_MODELS = ('perspective', 'weak_perspective')
CAMERA_INITS = ('default', 'calibrated')

_IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f'{name} must be one of {allowed}, got {value!r}')


def upright_orientation(up_axis: str) -> torch.Tensor:
    """(3,) axis-angle turning the model's ``up_axis`` into OpenCV's image up (-y).

    Used as the initial global orientation of a body predicted in a camera frame, so
    that the first guess stands upright in the image.
    """
    sign = -1.0 if up_axis.startswith('-') else 1.0
    up = torch.zeros(3, dtype=torch.float64)
    up['xyz'.index(up_axis.lstrip('+-'))] = sign
    target = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
    axis = torch.linalg.cross(up, target)
    s, c = axis.norm(), (up * target).sum()
    if s < 1e-12:                       # parallel or antiparallel
        return torch.zeros(3, dtype=torch.float64) if c > 0 else \
            torch.tensor([math.pi, 0.0, 0.0], dtype=torch.float64)
    return axis / s * torch.atan2(s, c)


class BodyParamCodec(nn.Module):
    """Flat body vector (B, P_b) <-> body-model parameters.

    Args:
        num_joints: J of the body model (``body_pose`` has J - 1 joints).
        num_betas: shape coefficients to predict.
        rotation: ``'6d'`` or ``'axis_angle'``.
        per_joint_scale: ``None``, ``'direct'`` (``log_scale`` (J, 3)) or ``'pca'``
            (``scale_weights`` (num_scale_weights,)).
        per_joint_trans: ``None``, ``'direct'`` (``bone_trans`` (J, 3)) or ``'pca'``
            (``trans_weights`` (num_trans_weights,)).
        num_scale_weights, num_trans_weights: PCA sizes (the model's ``scaledirs`` /
            ``transdirs`` counts).
        length_scale: model units per unit of the stored ``transl`` (and
            ``bone_trans``); a camera distance keeps predictions O(1).
        init_global_orient: (3,) axis-angle start of ``global_orient``.
        init_transl: (3,) start of ``transl`` in model units.
    """

    def __init__(self, num_joints: int, num_betas: int, rotation: str = '6d',
                 per_joint_scale: Optional[str] = None,
                 per_joint_trans: Optional[str] = None, num_scale_weights: int = 0,
                 num_trans_weights: int = 0, length_scale: float = 1.0,
                 init_global_orient: Optional[Sequence[float]] = None,
                 init_transl: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        super().__init__()
        _check('rotation', rotation, ROTATIONS)
        _check('per_joint_scale', per_joint_scale, PER_JOINT_MODES)
        _check('per_joint_trans', per_joint_trans, PER_JOINT_MODES)
        if num_joints < 1 or num_betas < 0:
            raise ValueError(f'num_joints must be >= 1 and num_betas >= 0, got '
                             f'{num_joints}, {num_betas}')
        if not length_scale > 0:
            raise ValueError(f'length_scale must be > 0, got {length_scale}')
        for mode, n, what in ((per_joint_scale, num_scale_weights, 'scale'),
                              (per_joint_trans, num_trans_weights, 'trans')):
            if mode == 'pca' and n < 1:
                raise ValueError(f"per_joint_{what}='pca' needs num_{what}_weights >= 1 (the "
                                 f"body model has no {what}dirs?)")
        self.num_joints, self.num_betas = int(num_joints), int(num_betas)
        self.rotation = rotation
        self.rot_dim = 6 if rotation == '6d' else 3
        self.length_scale = float(length_scale)
        J = self.num_joints
        layout: 'OrderedDict[str, Tuple[int, ...]]' = OrderedDict()
        layout['global_orient'] = (self.rot_dim,)
        layout['body_pose'] = (J - 1, self.rot_dim)
        layout['betas'] = (self.num_betas,)
        layout['transl'] = (3,)
        if per_joint_scale == 'direct':
            layout['log_scale'] = (J, 3)
        elif per_joint_scale == 'pca':
            layout['scale_weights'] = (int(num_scale_weights),)
        if per_joint_trans == 'direct':
            layout['bone_trans'] = (J, 3)
        elif per_joint_trans == 'pca':
            layout['trans_weights'] = (int(num_trans_weights),)
        self.layout = layout
        self.slices: Dict[str, slice] = {}
        start = 0
        for name, shape in layout.items():
            n = int(math.prod(shape))
            self.slices[name] = slice(start, start + n)
            start += n
        self.dim = start
        go = torch.zeros(3, dtype=torch.float64) if init_global_orient is None else \
            torch.as_tensor(init_global_orient, dtype=torch.float64).reshape(3)
        init = {'global_orient': go,
                'body_pose': torch.zeros(J - 1, 3, dtype=torch.float64),
                'transl': torch.as_tensor(init_transl, dtype=torch.float64).reshape(3)}
        self.register_buffer('init_vector', self.encode(
            {k: v[None] for k, v in init.items()})[0].float(), persistent=False)

    @property
    def param_names(self) -> Tuple[str, ...]:
        return tuple(self.layout)

    def _to_raw_rotation(self, aa_or_matrix: torch.Tensor, batch_ndim: int) -> torch.Tensor:
        if aa_or_matrix.shape[-1] == 3 and aa_or_matrix.ndim == batch_ndim + 1:
            mat = axis_angle_to_matrix(aa_or_matrix)
        else:
            mat = aa_or_matrix
        if self.rotation == '6d':
            return matrix_to_rotation_6d(mat)
        return matrix_to_axis_angle(mat)

    def encode(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Parameters (axis-angle or matrix rotations, model units) -> (B, P_b).

        Missing entries take their neutral value (identity, zero); ``B`` comes from the
        first tensor given.
        """
        given = [v for v in params.values() if isinstance(v, torch.Tensor)]
        if not given:
            raise ValueError('encode: no parameter tensors given')
        B = given[0].shape[0]
        ref = given[0]
        parts = []
        for name, shape in self.layout.items():
            value = params.get(name)
            if name in ('global_orient', 'body_pose'):
                nb = 1 if name == 'global_orient' else 2
                if value is None:
                    value = torch.zeros((B,) + shape[:-1] + (3,), dtype=ref.dtype,
                                        device=ref.device)
                raw = self._to_raw_rotation(value.to(ref.dtype), nb)
            elif value is None:
                raw = torch.zeros((B,) + shape, dtype=ref.dtype, device=ref.device)
            else:
                raw = value.to(ref.dtype)
                if name == 'transl':
                    raw = raw / self.length_scale
                if name == 'betas' and raw.shape[-1] != shape[0]:
                    pad = shape[0] - raw.shape[-1]
                    raw = torch.nn.functional.pad(raw, (0, pad)) if pad > 0 else \
                        raw[..., :shape[0]]
            if tuple(raw.shape[1:]) != shape:
                raise ValueError(f'encode: {name} must be (B, {", ".join(map(str, shape))}) '
                                 f'in this layout, got {tuple(value.shape)}')
            parts.append(raw.reshape(B, -1))
        return torch.cat(parts, dim=1)

    def split(self, vector: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(B, P_b) -> the raw entries, reshaped to ``(B, *shape)``."""
        if vector.ndim != 2 or vector.shape[1] != self.dim:
            raise ValueError(f'body vector must be (B, {self.dim}), got {tuple(vector.shape)}')
        B = vector.shape[0]
        return {name: vector[:, self.slices[name]].reshape((B,) + shape)
                for name, shape in self.layout.items()}

    def decode(self, vector: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(B, P_b) -> body-model parameters; rotations as matrices.

        Returns:
            ``global_orient`` (B, 3, 3), ``body_pose`` (B, J-1, 3, 3), ``betas`` (B, K),
            ``transl`` (B, 3) model units, plus the per-joint entries of the layout.
        """
        raw = self.split(vector)
        out = {}
        for name, value in raw.items():
            if name in ('global_orient', 'body_pose'):
                out[name] = (rotation_6d_to_matrix(value) if self.rotation == '6d'
                             else axis_angle_to_matrix(value))
            elif name == 'transl':
                out[name] = value * self.length_scale
            else:
                out[name] = value
        return out

    def extra_repr(self) -> str:
        return f'dim={self.dim}, rotation={self.rotation!r}, layout={dict(self.layout)}'


class CameraCodec(nn.Module):
    """Per-view camera vectors (B, C, P_c) -> OpenCV pinhole cameras.

    Perspective (``P_c = 10``, or 4 without rotation): ``[r6 (6), x, y, z, log_f]``.
    With ``init='default'``: ``R = R6(r6)``, ``t = distance (x, y, exp(z))``,
    ``f = f0 exp(log_f)`` with ``f0 = min(W, H) / (2 tan(fov / 2))`` and a centred
    principal point. With ``init='calibrated'`` the vector corrects the observed camera:
    ``R = R6(r6) R_cal``, ``t = R6(r6) t_cal + distance (x, y, z)``, ``fx, fy`` times
    ``exp(log_f)``, the calibrated distortion kept.

    Weak perspective (``P_c = 9``, or 3 without rotation): ``[r6 (6), log_s, tx, ty]``,
    ``s = s0 exp(log_s)`` with ``s0 = 2 f0 / (distance W)`` (the same image size as the
    default perspective camera), ``tx, ty`` in units of ``distance``; decoded to its
    pinhole stand-in (``f = weak_focal``, ``t = (tx, ty, 2 f / (s W))``, see
    :func:`smilfit.cameras.weak_perspective_to_pinhole`) after the rotation.

    Args:
        model: ``'perspective'`` or ``'weak_perspective'``.
        init: ``'default'`` or ``'calibrated'`` (perspective only).
        predict: False: cameras are exactly the initial ones (``P_c = 0``).
        predict_rotation: include the rotation (a single-view regressor leaves it to
            the body's global orientation).
        fov_deg: field of view of the default camera, degrees across the shorter side.
        distance: camera distance in model units (default pose and translation unit).
        weak_focal: focal length (pixels) of the weak-perspective stand-in.
    """

    def __init__(self, model: str = 'perspective', init: str = 'default',
                 predict: bool = True, predict_rotation: bool = True, fov_deg: float = 40.0,
                 distance: float = 1.0, weak_focal: float = 5000.0) -> None:
        super().__init__()
        _check('camera model', model, CAMERA_MODELS)
        _check('camera init', init, CAMERA_INITS)
        if model == 'weak_perspective' and init == 'calibrated':
            raise ValueError("a weak-perspective camera cannot start from a calibrated one; "
                             "use model='perspective' with init='calibrated'")
        if not (0 < fov_deg < 180) or not distance > 0:
            raise ValueError(f'need 0 < fov_deg < 180 and distance > 0, got {fov_deg}, '
                             f'{distance}')
        self.model, self.init = model, init
        self.predict, self.predict_rotation = bool(predict), bool(predict_rotation)
        self.fov_deg, self.distance, self.weak_focal = float(fov_deg), float(distance), \
            float(weak_focal)
        rot = 6 if self.predict_rotation else 0
        self.rot_dim = rot
        self.dim = 0 if not self.predict else rot + (4 if model == 'perspective' else 3)
        init_vec = torch.zeros(self.dim)
        if self.dim and rot:
            init_vec[:6] = torch.tensor(_IDENTITY_6D)
        self.register_buffer('init_vector', init_vec, persistent=False)

    @property
    def uses_calibration(self) -> bool:
        return self.init == 'calibrated'

    def default_focal(self, image_size: torch.Tensor) -> torch.Tensor:
        """(...,) focal length in pixels of the default camera for ``image_size`` (..., 2)."""
        S = image_size.min(-1).values
        return S / (2.0 * math.tan(math.radians(self.fov_deg) / 2.0))

    def _rotation(self, vec: torch.Tensor) -> torch.Tensor:
        if not self.rot_dim:
            eye = torch.eye(3, dtype=vec.dtype, device=vec.device)
            return eye.expand(vec.shape[:-1] + (3, 3))
        return rotation_6d_to_matrix(vec[..., :6])

    def decode(self, vector: Optional[torch.Tensor], image_size: torch.Tensor,
               calibration: Optional[Mapping[str, torch.Tensor]] = None,
               batch_shape: Optional[Tuple[int, int]] = None) -> Dict[str, torch.Tensor]:
        """Camera vectors -> ``K`` (B, C, 3, 3), ``R`` (B, C, 3, 3), ``t`` (B, C, 3), ``dist``
        (B, C, 5).

        Args:
            vector: (B, C, P_c), or None when ``P_c = 0``.
            image_size: (B, C, 2) or (2,) ``(W, H)`` pixels.
            calibration: ``K, R, t`` (B, C, ...) and optional ``dist`` (needed with
                ``init='calibrated'``).
            batch_shape: (B, C), needed when ``vector`` is None.
        """
        if vector is None:
            if self.dim:
                raise ValueError(f'camera vector missing; expected (B, C, {self.dim})')
            if batch_shape is None:
                raise ValueError('decode: give batch_shape=(B, C) when there is no vector')
            B, C = batch_shape
            ref = image_size.float() if calibration is None else calibration['K']
            vector = ref.new_zeros(B, C, 0)
        elif vector.ndim != 3 or vector.shape[-1] != self.dim:
            raise ValueError(f'camera vector must be (B, C, {self.dim}), got '
                             f'{tuple(vector.shape)}')
        B, C = vector.shape[:2]
        dtype, device = vector.dtype, vector.device
        size = torch.as_tensor(image_size, device=device).to(dtype).expand(B, C, 2)
        if not self.dim:
            vector = vector.new_zeros(B, C, (6 if self.rot_dim else 0)
                                      + (4 if self.model == 'perspective' else 3))
            if self.rot_dim:
                vector[..., :6] = vector.new_tensor(_IDENTITY_6D)
        Rd = self._rotation(vector)
        rest = vector[..., self.rot_dim:]
        W, H = size[..., 0], size[..., 1]
        zeros = torch.zeros_like(W)
        ones = torch.ones_like(W)
        if self.init == 'calibrated':
            if calibration is None:
                raise ValueError("camera init='calibrated' needs the observed cameras (K, R, "
                                 't) in data_samples')
            Kc = calibration['K'].to(dtype).expand(B, C, 3, 3)
            Rc = calibration['R'].to(dtype).expand(B, C, 3, 3)
            tc = calibration['t'].to(dtype).expand(B, C, 3)
            R = Rd @ Rc
            t = (Rd @ tc[..., None])[..., 0] + self.distance * rest[..., :3]
            e = torch.exp(rest[..., 3])
            scale = torch.stack([torch.stack([e, e, ones], -1), torch.stack([ones, e, ones], -1),
                                 torch.stack([ones, ones, ones], -1)], -2)
            K = Kc * scale
            dist = calibration.get('dist')
            dist = K.new_zeros(B, C, 5) if dist is None else dist.to(dtype).expand(B, C, 5)
            return dict(K=K, R=R, t=t, dist=dist)
        f0 = self.default_focal(size)
        cx, cy = (W - 1.0) / 2.0, (H - 1.0) / 2.0
        if self.model == 'perspective':
            x, y, z, log_f = rest.unbind(-1)
            f = f0 * torch.exp(log_f)
            t = self.distance * torch.stack([x, y, torch.exp(z)], -1)
            fy = f
        else:
            log_s, tx, ty = rest.unbind(-1)
            s = 2.0 * f0 / (self.distance * W) * torch.exp(log_s)
            f = torch.full_like(W, self.weak_focal)
            fy = f * H / W
            t = torch.stack([self.distance * tx, self.distance * ty, 2.0 * f / (s * W)], -1)
        K = torch.stack([torch.stack([f, zeros, cx], -1), torch.stack([zeros, fy, cy], -1),
                         torch.stack([zeros, zeros, ones], -1)], -2)
        return dict(K=K, R=Rd, t=t, dist=K.new_zeros(B, C, 5))

    def extra_repr(self) -> str:
        return (f'model={self.model!r}, init={self.init!r}, dim={self.dim}, '
                f'fov_deg={self.fov_deg}, distance={self.distance:.4g}')


__all__ = ['BodyParamCodec', 'CameraCodec', 'upright_orientation', 'ROTATIONS',
           'PER_JOINT_MODES', 'CAMERA_MODELS', 'CAMERA_INITS']
