"""Handlers for 3D surface data (scans) and for free-form per-vertex offsets.

- :class:`SurfaceHandler`: the posed model mesh against scan point clouds (chamfer,
  point-to-surface, normal consistency); reads ``output.vertices`` (which include any
  per-vertex offsets the body model applied).
- :class:`OffsetRegularizerHandler`: smoothness / edge / normal regularisers on
  ``params['vertex_offsets']`` (B, V, 3), so a registration can go from pose and shape
  to fine per-vertex detail in stages (raise the offset weights' freedom stage by stage).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..registry import HANDLERS
from .base import BaseHandler, LossSpec, get_param, zeros_like_batch

#: Where :class:`OffsetRegularizerHandler` takes the mesh the offsets are added to.
OFFSET_BASES = ('shaped', 'template')


@HANDLERS.register_module()
class SurfaceHandler(BaseHandler):
    """Posed model vertices against observed scan points.

    Reads ``observations[points_key]``: padded (B, P, 3) points in model units (NaN =
    missing) or a list of B (P_i, 3) tensors; optional ``observations[mask_key]``
    (B, P) validity (padding) and ``observations[normals_key]`` (B, P, 3) scan normals.
    The loss (``ChamferLoss`` by default; ``PointToSurfaceLoss``,
    ``NormalConsistencyLoss`` or a plugin with the same call signature) is called as
    ``loss(vertices, points, faces=..., points_mask=..., points_normals=...,
    vertex_mask=...)`` with the body model's faces.

    Args:
        name, loss, weight, check_finite: see :class:`~.base.BaseHandler`.
        points_key, mask_key, normals_key: observation keys (a missing mask or
            normals entry is simply not used).
        vertex_mask: model vertices that take part (indices or a (V,) bool array),
            e.g. the part of the body a partial scan covers; ``None``: all.
    """

    needs_vertices = True

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 points_key: str = 'scan_points', mask_key: Optional[str] = 'scan_mask',
                 normals_key: Optional[str] = 'scan_normals',
                 vertex_mask: Optional[Union[Sequence[int], np.ndarray]] = None,
                 check_finite: bool = False) -> None:
        super().__init__(name, dict(type='ChamferLoss') if loss is None else loss, weight,
                         check_finite)
        self.points_key = points_key
        self.mask_key = mask_key
        self.normals_key = normals_key
        self._vertex_mask_spec = vertex_mask
        self.register_buffer('faces', None, persistent=False)
        self.register_buffer('vertex_mask', None, persistent=False)

    def setup(self, body_model, data_info: Optional[Mapping[str, Any]] = None) -> None:
        self.faces = body_model.faces.detach().clone()
        V = int(body_model.num_vertices)
        spec = self._vertex_mask_spec
        if spec is not None:
            arr = np.asarray(spec)
            if arr.dtype == bool:
                if arr.shape != (V,):
                    raise ValueError(f'handler {self.name!r}: vertex_mask has shape '
                                     f'{arr.shape}, the model has {V} vertices')
                mask = arr
            else:
                if arr.ndim != 1 or arr.dtype.kind not in 'iu' or (
                        arr.size and (arr.min() < 0 or arr.max() >= V)):
                    raise ValueError(f'handler {self.name!r}: vertex_mask must be a bool '
                                     f'(V,) array or vertex ids in [0, {V})')
                mask = np.zeros(V, dtype=bool)
                mask[arr] = True
            self.vertex_mask = torch.as_tensor(mask, device=self.faces.device)
        super().setup(body_model, data_info)

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        if output.vertices is None:
            raise ValueError(f'handler {self.name!r}: the body model output has no vertices '
                             '(call the model with return_vertices=True)')
        points = observations.get(self.points_key)
        if points is None:
            raise KeyError(f'handler {self.name!r}: observations have no '
                           f'{self.points_key!r} (keys: {sorted(observations)})')
        mask = observations.get(self.mask_key) if self.mask_key else None
        normals = observations.get(self.normals_key) if self.normals_key else None
        verts = output.vertices
        if isinstance(points, torch.Tensor):
            points = points.to(device=verts.device, dtype=verts.dtype)
        else:
            points = [torch.as_tensor(p, device=verts.device, dtype=verts.dtype)
                      for p in points]
        if isinstance(normals, torch.Tensor):
            normals = normals.to(device=verts.device, dtype=verts.dtype)
        if mask is not None:
            mask = torch.as_tensor(mask, device=verts.device)
        return self.loss(verts, points, faces=self.faces, points_mask=mask,
                         points_normals=normals, vertex_mask=self.vertex_mask)


@HANDLERS.register_module()
class OffsetRegularizerHandler(BaseHandler):
    """A mesh regulariser on the fitted per-vertex offsets ``params[param]`` (B, V, 3).

    The loss (``LaplacianRegularizer`` by default; ``EdgeLengthRegularizer``,
    ``MeshNormalConsistencyRegularizer``) gets the model's faces at :meth:`setup`
    (through ``model_data``, unless its config sets ``faces`` or ``model_data``) and is
    called as ``loss(offsets, base_vertices=x)``, with ``x`` the mesh the offsets are
    added to: the shaped rest mesh ``output.v_shaped`` when the model returned it
    (``base='shaped'``), else the model's template. Absent offsets (not fitted yet)
    score 0.

    Args:
        name, loss, weight, check_finite: see :class:`~.base.BaseHandler`.
        param: the params key of the offsets.
        base: ``'shaped'`` (``output.v_shaped`` when present, else the template) or
            ``'template'``.
    """

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 param: str = 'vertex_offsets', base: str = 'shaped',
                 check_finite: bool = False) -> None:
        loss = dict(type='LaplacianRegularizer') if loss is None else loss
        super().__init__(name, loss if isinstance(loss, nn.Module) else None, weight,
                         check_finite)
        if base not in OFFSET_BASES:
            raise ValueError(f'handler {name!r}: base must be one of {OFFSET_BASES}, '
                             f'got {base!r}')
        self.loss_cfg = None if isinstance(loss, nn.Module) else copy.deepcopy(dict(loss))
        self.param = param
        self.base = base
        self.register_buffer('template', None, persistent=False)

    def setup(self, body_model, data_info: Optional[Mapping[str, Any]] = None) -> None:
        if self.loss_cfg is not None:
            self.loss = self._model_loss(self.loss_cfg, body_model, blockers=('faces',))
        self.template = body_model.v_template.detach().clone()
        self.num_vertices = int(body_model.num_vertices)
        super().setup(body_model, data_info)

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        offsets = get_param(params, self.param)
        if offsets is None:
            return zeros_like_batch(output)
        B = output.joints.shape[0]
        if offsets.ndim != 3 or offsets.shape[1:] != (self.num_vertices, 3) or \
                offsets.shape[0] not in (1, B):
            raise ValueError(f'handler {self.name!r}: params[{self.param!r}] must be '
                             f'({B}, {self.num_vertices}, 3), got {tuple(offsets.shape)}')
        offsets = offsets.expand(B, -1, -1)
        base = output.v_shaped if (self.base == 'shaped' and output.v_shaped is not None) \
            else self.template.to(offsets)
        return self.loss(offsets, base_vertices=base)


__all__ = ['SurfaceHandler', 'OffsetRegularizerHandler', 'OFFSET_BASES']
