"""Silhouette handler: soft silhouettes of the posed mesh against observed masks."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Union

import torch

from smilfit.registry.build import build_module
from ..registry import HANDLERS, RENDERERS
from .base import BaseHandler, LossSpec
from .views import view_cameras

RendererSpec = Union[dict, Callable]


def build_renderer(renderer: Optional[RendererSpec], handler: str) -> Callable:
    """A ``RENDERERS`` config or a callable -> the renderer, with clear errors."""
    if renderer is None:
        registered = sorted(RENDERERS.module_dict)
        raise ValueError(
            f'handler {handler!r} (SilhouetteHandler) needs a renderer: pass renderer='
            'dict(type=...) built from smilfit.registry.RENDERERS or any callable '
            'renderer(vertices, faces, cameras) -> (B, C, H, W). Registered renderers: '
            f'{registered or "none"} (e.g. dict(type="SoftSilhouetteRenderer", sigma=1.0))')
    if isinstance(renderer, Mapping):
        t = renderer.get('type')
        if t is None:
            raise ValueError(f'handler {handler!r}: renderer config has no "type": '
                             f'{dict(renderer)}')
        if isinstance(t, str) and RENDERERS.get(t) is None:
            registered = sorted(RENDERERS.module_dict)
            raise KeyError(f'handler {handler!r}: renderer {t!r} is not registered in '
                           f'RENDERERS; registered: {registered or "none"} (load a plugin '
                           'with custom_imports, or pass a callable)')
        return build_module(RENDERERS, renderer, 'renderer')
    if not callable(renderer):
        raise TypeError(f'handler {handler!r}: renderer must be a RENDERERS config or a '
                        f'callable, got {type(renderer).__name__}')
    return renderer


@HANDLERS.register_module()
class SilhouetteHandler(BaseHandler):
    """``SilhouetteLoss`` between rendered soft silhouettes and observed masks.

    ``needs_vertices = True``: the registrant skins the mesh for it. The renderer is
    built at :meth:`setup` from ``renderer`` (a ``RENDERERS`` config, or any callable)
    and is called as ``renderer(vertices (B, V, 3), faces (F, 3), cameras)`` with
    ``cameras`` a dict of ``K`` (B|1, C, 3, 3), ``R`` (B|1, C, 3, 3), ``t`` (B|1, C, 3),
    ``dist`` (B|1, C, 5) or ``None`` (fitted ``params['camera_*']`` first, as for 2D
    keypoints) and ``height``/``width`` (ints, the masks' size); it returns (B, C, H, W)
    soft silhouettes in [0, 1]. Masks are ``observations['masks']`` (B, C, H, W)
    (bool or float, NaN = unknown pixel); views count where ``view_valid`` and
    ``mask_valid`` (when given) are true.

    Args:
        name, loss, weight, check_finite: see :class:`~.base.BaseHandler`
            (``loss`` defaults to ``dict(type='SilhouetteLoss')``).
        renderer: a ``RENDERERS`` config dict or a callable (see above).
        key: observation key of the masks.
    """

    needs_vertices = True

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 renderer: Optional[RendererSpec] = None, key: str = 'masks',
                 check_finite: bool = False) -> None:
        super().__init__(name, dict(type='SilhouetteLoss') if loss is None else loss,
                         weight, check_finite)
        self.renderer_spec = renderer
        self.renderer = None
        self.key = key
        self.register_buffer('faces', None, persistent=False)

    def setup(self, body_model, data_info: Optional[Mapping[str, Any]] = None) -> None:
        self.renderer = build_renderer(self.renderer_spec, self.name)
        faces = getattr(body_model, 'faces', None)
        if faces is None or faces.numel() == 0:
            raise ValueError(f'handler {self.name!r}: the body model has no faces to render')
        self.faces = faces
        super().setup(body_model, data_info)

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        verts = output.vertices
        if verts is None:
            raise ValueError(f'handler {self.name!r} needs vertices: call the body model '
                             'with return_vertices=True (needs_vertices is True)')
        masks = observations.get(self.key)
        if masks is None:
            raise KeyError(f'handler {self.name!r}: observations have no {self.key!r} '
                           f'(keys: {sorted(observations)})')
        if masks.ndim == 3:  # squeezed single view
            masks = masks[:, None]
        if masks.ndim != 4 or masks.shape[0] != verts.shape[0]:
            raise ValueError(f'handler {self.name!r}: masks must be (B, C, H, W) with B = '
                             f'{verts.shape[0]}, got {tuple(masks.shape)}')
        B, C, H, W = masks.shape
        cams = view_cameras(observations, params, C, verts.dtype, verts.device, self.name,
                            squeezed=observations[self.key].ndim == 3)
        cams.update(height=int(H), width=int(W))
        rendered = self.renderer(verts, self.faces.to(verts.device), cams)
        if tuple(rendered.shape) != (B, C, H, W):
            raise ValueError(f'handler {self.name!r}: the renderer returned '
                             f'{tuple(rendered.shape)}, the masks are {(B, C, H, W)}')
        valid = None
        for k in ('view_valid', 'mask_valid'):
            v = observations.get(k)
            if v is not None:
                v = v.to(device=verts.device, dtype=torch.bool).reshape(B, C)
                valid = v if valid is None else valid & v
        return self.loss(rendered, masks.to(device=verts.device, dtype=rendered.dtype),
                         valid=valid)


__all__ = ['SilhouetteHandler', 'build_renderer']
