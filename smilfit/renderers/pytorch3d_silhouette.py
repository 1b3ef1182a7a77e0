"""``PyTorch3DSilhouetteRenderer``: the same interface on pytorch3d's rasterizer (optional).

Used only where pytorch3d is importable (``pip install -e ".[pytorch3d]"``); building the
renderer without it raises an ``ImportError`` that says so. smilfit never needs it:
:class:`~smilfit.renderers.SoftSilhouetteRenderer` is the default and is much faster on
CPU (pytorch3d's CPU backward pass is the bottleneck there).

How it matches the plain-torch renderer: vertices are projected by smilfit (so every
camera model and OpenCV distortion work identically), converted to pytorch3d's NDC
(+x left, +y up, the shorter image side spanning [-1, 1]:
``x_ndc = (W - 1 - 2u) / S``, ``y_ndc = (H - 1 - 2v) / S``, ``S = min(H, W)``) with
camera depth as ``z``, and rasterized by ``rasterize_meshes`` with
``blur_radius = log(1 / cutoff - 1) sigma_ndc`` and ``sigma_ndc = sigma (2 / S)^2``.
The silhouette is pytorch3d's ``sigmoid_alpha_blend`` rule,
``1 - prod_k (1 - sigmoid(-dist_k / sigma_ndc))`` over the ``faces_per_pixel`` nearest
faces (``dist`` is pytorch3d's signed squared distance, negative inside). The two
renderers agree up to that truncation to K faces (only where more than K faces reach a
pixel, i.e. deep inside the silhouette where both are ~1) and float32 round-off.
"""
from __future__ import annotations

import importlib
import math
from typing import Optional, Sequence

import torch
from torch import nn

from ..registry import RENDERERS
from .screen import non_finite_views, screen_vertices, visible_faces
from .soft_rasterizer import cutoff_logit
from .soft_silhouette import CameraInput, check_faces


def pytorch3d_available() -> bool:
    """Whether pytorch3d's mesh rasterizer can be imported."""
    try:
        for module in ('pytorch3d.renderer.mesh.rasterize_meshes', 'pytorch3d.structures'):
            importlib.import_module(module)
    except ImportError:
        return False
    return True


def pixels_to_pytorch3d_ndc(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 2) OpenCV pixels ``(u, v)`` -> pytorch3d NDC ``(x, y)`` (+x left, +y up)."""
    S = float(min(height, width))
    u, v = points.unbind(-1)
    return torch.stack([(width - 1.0 - 2.0 * u) / S, (height - 1.0 - 2.0 * v) / S], dim=-1)


@RENDERERS.register_module()
class PyTorch3DSilhouetteRenderer(nn.Module):
    """Soft silhouettes through pytorch3d's ``rasterize_meshes`` (same call as
    :class:`~smilfit.renderers.SoftSilhouetteRenderer`).

    Args:
        sigma, gamma, cutoff, near, image_size: as for ``SoftSilhouetteRenderer``
            (``sigma`` in squared pixels; converted to pytorch3d's NDC units per image).
        faces_per_pixel: pytorch3d's K, the nearest faces blended per pixel.
        bin_size, max_faces_per_bin: pytorch3d's coarse-to-fine settings (None: its
            heuristics; ``bin_size=0`` is its naive rasterizer).

    Raises:
        ImportError: pytorch3d is not installed.
    """

    def __init__(self, sigma: float = 1.0, gamma: float = 1e-4, cutoff: float = 1e-4,
                 near: float = 1e-6, faces_per_pixel: int = 50, bin_size: Optional[int] = None,
                 max_faces_per_bin: Optional[int] = None,
                 image_size: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if not pytorch3d_available():
            raise ImportError('PyTorch3DSilhouetteRenderer needs pytorch3d (pip install -e '
                              '".[pytorch3d]"); use SoftSilhouetteRenderer otherwise')
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f'sigma must be a positive number (squared pixels), got {sigma!r}')
        cutoff_logit(cutoff)
        self.sigma = float(sigma)
        self.gamma = float(gamma)
        self.cutoff = float(cutoff)
        self.near = float(near)
        self.faces_per_pixel = int(faces_per_pixel)
        self.bin_size = bin_size
        self.max_faces_per_bin = max_faces_per_bin
        self.image_size = None if image_size is None else tuple(int(v) for v in image_size)

    def forward(self, vertices: torch.Tensor, faces: torch.Tensor,
                cameras: CameraInput) -> torch.Tensor:
        """Render (B, C, H, W) soft silhouettes."""
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
        from pytorch3d.structures import Meshes

        faces = check_faces(faces, vertices.shape[-2]).to(vertices.device)
        screen = screen_vertices(vertices, cameras, self.image_size)
        B, C, V, _ = screen.points.shape
        H, W = screen.height, screen.width
        valid = visible_faces(screen, faces, self.near).reshape(B * C, -1)
        points = torch.where(torch.isfinite(screen.points), screen.points,
                             torch.zeros_like(screen.points)).reshape(B * C, V, 2)
        ndc = pixels_to_pytorch3d_ndc(points, H, W)
        if screen.depth is None:  # weak perspective: any positive depth works for K nearest
            z = torch.ones_like(ndc[..., :1])
        else:
            z = screen.depth.reshape(B * C, V, 1)
            z = torch.where(torch.isfinite(z), z, torch.ones_like(z))
        verts = torch.cat([ndc, z], dim=-1).float()
        # pytorch3d has no per-face mask: give each image its own face list.
        meshes = Meshes(verts=list(verts.unbind(0)),
                        faces=[faces[valid[n]] for n in range(B * C)])
        S = min(H, W)
        sigma_ndc = self.sigma * (2.0 / S) ** 2
        pix_to_face, _, _, dists = rasterize_meshes(
            meshes, image_size=(H, W), blur_radius=-cutoff_logit(self.cutoff) * sigma_ndc,
            faces_per_pixel=self.faces_per_pixel, bin_size=self.bin_size,
            max_faces_per_bin=self.max_faces_per_bin, perspective_correct=False,
            clip_barycentric_coords=False, cull_backfaces=False)
        # sigmoid_alpha_blend: prob = sigmoid(-dist / sigma), silhouette = 1 - prod(1 - prob)
        # over the faces that reach the pixel; computed as a log-sum for stability.
        reach = pix_to_face >= 0
        log_miss = nn.functional.logsigmoid(dists / sigma_ndc)  # log(1 - sigmoid(-d / s))
        log_miss = torch.where(reach, log_miss, torch.zeros_like(log_miss))
        silhouettes = -torch.expm1(log_miss.sum(-1)).to(vertices.dtype)
        silhouettes = silhouettes.view(B, C, H, W)
        bad = non_finite_views(screen, self.near)
        return torch.where(bad[..., None, None], torch.full_like(silhouettes, float('nan')),
                           silhouettes)

    def extra_repr(self) -> str:
        return (f'sigma={self.sigma} px^2, cutoff={self.cutoff}, near={self.near}, '
                f'faces_per_pixel={self.faces_per_pixel}')


__all__ = ['PyTorch3DSilhouetteRenderer', 'pytorch3d_available', 'pixels_to_pytorch3d_ndc']
