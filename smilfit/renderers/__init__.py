"""Renderers: differentiable soft silhouettes of posed meshes and the z-buffer rasteriser
(see ``docs/rendering.md``).

- :mod:`.soft_rasterizer`: the SoftRas-style soft silhouette of screen-space triangles,
  plain PyTorch, chunked over (face, pixel) pairs with a memory-bounded backward pass.
- :mod:`.screen`: world vertices -> pixels through a camera dict or any smilfit camera
  module (pinhole with distortion, camera groups, FoV and weak perspective).
- :class:`SoftSilhouetteRenderer` (registered in ``RENDERERS``): the renderer the
  silhouette handler calls, ``renderer(vertices, faces, cameras) -> (B, C, H, W)``.
- :class:`PyTorch3DSilhouetteRenderer` (registered): the same interface on pytorch3d's
  rasterizer, usable only where pytorch3d is installed.
- :mod:`.zbuffer`: :func:`rasterize`, the hard-edged z-buffer triangle rasteriser (not
  differentiable; face index, depth and barycentrics per pixel, near-plane clipping, lens
  distortion) behind the synthetic data and the fit visuals.
"""
from .pytorch3d_silhouette import (PyTorch3DSilhouetteRenderer, pixels_to_pytorch3d_ndc,
                                   pytorch3d_available)
from .screen import (ScreenVertices, camera_image_size, non_finite_views, screen_vertices,
                     visible_faces)
from .soft_rasterizer import (cutoff_logit, cutoff_margin, rasterize_soft_silhouettes,
                              soft_silhouette_logsum)
from .soft_silhouette import SoftSilhouetteRenderer, check_faces
from .zbuffer import Rasterization, distortion_fold_radius2, rasterize

__all__ = [
    'SoftSilhouetteRenderer', 'PyTorch3DSilhouetteRenderer', 'pytorch3d_available',
    'pixels_to_pytorch3d_ndc', 'rasterize_soft_silhouettes', 'soft_silhouette_logsum',
    'cutoff_logit', 'cutoff_margin', 'ScreenVertices', 'screen_vertices', 'visible_faces',
    'non_finite_views', 'camera_image_size', 'check_faces',
    'rasterize', 'Rasterization', 'distortion_fold_radius2',
]
