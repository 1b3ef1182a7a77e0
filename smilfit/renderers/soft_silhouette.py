"""``SoftSilhouetteRenderer``: differentiable soft silhouettes of meshes, plain PyTorch.

See :mod:`smilfit.renderers.soft_rasterizer` for the model (SoftRas' probabilistic
silhouette with sigmoid of the signed squared distance) and
:mod:`smilfit.renderers.screen` for the camera inputs and the distortion approximation.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..registry import RENDERERS
from .screen import non_finite_views, screen_vertices, visible_faces
from .soft_rasterizer import cutoff_logit, rasterize_soft_silhouettes

CameraInput = Union[Mapping[str, Any], nn.Module]


#: Default (face, pixel) pairs per chunk on the CPU and on CUDA (see ``max_pairs``).
CPU_MAX_PAIRS = 1 << 16
CUDA_MAX_PAIRS = 1 << 20


def check_faces(faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """Validate (F, 3) integer faces against ``num_vertices``; returns them as long."""
    if not torch.is_tensor(faces) or faces.ndim != 2 or faces.shape[-1] != 3:
        shape = tuple(faces.shape) if torch.is_tensor(faces) else type(faces).__name__
        raise ValueError(f'faces must be an (F, 3) tensor of vertex indices, got {shape}')
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise TypeError(f'faces must be an integer tensor, got {faces.dtype}')
    faces = faces.long()
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= num_vertices):
        raise ValueError(f'faces index vertices {int(faces.min())}..{int(faces.max())}, '
                         f'but there are {num_vertices} vertices')
    return faces


@RENDERERS.register_module()
class SoftSilhouetteRenderer(nn.Module):
    """Soft silhouettes ``1 - prod_f (1 - sigmoid(s_f d_f^2 / sigma))`` of B meshes in C views.

    Called as ``renderer(vertices (B, V, 3), faces (F, 3), cameras)`` (the contract of
    :class:`~smilfit.handlers.SilhouetteHandler`); ``cameras`` is the handler's dict of
    ``K`` (B|1, C, 3, 3), ``R`` (B|1, C, 3, 3), ``t`` (B|1, C, 3), ``dist`` (B|1, C, 5) or
    None, ``height``, ``width``, or any smilfit camera module (see
    :mod:`smilfit.renderers.screen`). Returns (B, C, H, W) soft silhouettes in [0, 1],
    differentiable w.r.t. the vertices and the cameras. Pixel ``(row i, column j)`` is the
    silhouette at image point ``(u, v) = (j, i)`` (OpenCV: pixel centres at integers).

    Views whose projected vertices are NaN/inf (NaN vertices or cameras; not vertices
    behind the camera, which are culled) come back as NaN images, so a diverging fit
    sees a non-finite loss instead of a silently empty silhouette.

    Args:
        sigma: sharpness in **squared pixels** (> 0): the probability of a face at a
            pixel ``d`` pixels outside it is ``sigmoid(-d^2 / sigma)``. Larger is blurrier
            and gives gradients from farther away. SoftRas/pytorch3d's ``sigma`` is in
            squared NDC units: ``sigma_px = sigma_ndc (min(H, W) / 2)^2`` (their default
            1e-4 is 1.64 px^2 at 256 x 256).
        gamma: depth-blending temperature of SoftRas' RGB aggregation. Silhouettes do not
            depend on depth order, so it is accepted for API parity with RGB renderers and
            unused.
        cutoff: a face's probability below which a pixel is skipped (SoftRas/pytorch3d's
            ``blur_radius = log(1 / cutoff - 1) sigma``); bounds each face's reach to
            ``sqrt(sigma log(1 / cutoff - 1))`` pixels beyond its edges.
        near: faces with a vertex at camera depth ``<= near`` (world units) are skipped
            (no clipping). Cameras without depth (weak perspective) cull nothing.
        max_pairs: (face, pixel) pairs processed at once; bounds the peak memory of the
            forward and backward passes (about 100 bytes per pair in float32) independently
            of mesh and image size. None: :data:`CPU_MAX_PAIRS` (2^16, some 7 MB) on the
            CPU, :data:`CUDA_MAX_PAIRS` (2^20, some 100 MB) on CUDA, where larger chunks
            amortise kernel launches (measured on an H100, forward + backward of the mouse
            at 512 px: 654 ms with 2^16, 58 ms with 2^20).
        image_size: optional ``(W, H)`` for camera modules without an image size.
    """

    def __init__(self, sigma: float = 1.0, gamma: float = 1e-4, cutoff: float = 1e-4,
                 near: float = 1e-6, max_pairs: Optional[int] = None,
                 image_size: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f'sigma must be a positive number (squared pixels), got {sigma!r}')
        cutoff_logit(cutoff)  # validates
        if max_pairs is not None and int(max_pairs) < 1:
            raise ValueError(f'max_pairs must be >= 1, got {max_pairs!r}')
        self.sigma = float(sigma)
        self.gamma = float(gamma)
        self.cutoff = float(cutoff)
        self.near = float(near)
        self.max_pairs = None if max_pairs is None else int(max_pairs)
        self.image_size = None if image_size is None else tuple(int(v) for v in image_size)

    def forward(self, vertices: torch.Tensor, faces: torch.Tensor,
                cameras: CameraInput) -> torch.Tensor:
        """Render (B, C, H, W) soft silhouettes; see the class docs."""
        faces = check_faces(faces, vertices.shape[-2]).to(vertices.device)
        screen = screen_vertices(vertices, cameras, self.image_size)
        B, C, V, _ = screen.points.shape
        valid = visible_faces(screen, faces, self.near)
        # Projections of culled vertices may be inf/NaN: make them harmless numbers so
        # that neither the kernels nor their gradients see them (their faces are skipped).
        points = torch.where(torch.isfinite(screen.points), screen.points,
                             torch.zeros_like(screen.points))
        silhouettes = rasterize_soft_silhouettes(
            points.reshape(B * C, V, 2), faces, screen.height, screen.width, self.sigma,
            self.cutoff, valid.reshape(B * C, -1), self.pairs_per_chunk(points.device))
        silhouettes = silhouettes.view(B, C, screen.height, screen.width)
        bad = non_finite_views(screen, self.near)
        return torch.where(bad[..., None, None], torch.full_like(silhouettes, float('nan')),
                           silhouettes)

    def pairs_per_chunk(self, device: torch.device) -> int:
        """``max_pairs``, or its default for ``device``."""
        if self.max_pairs is not None:
            return self.max_pairs
        return CUDA_MAX_PAIRS if device.type == 'cuda' else CPU_MAX_PAIRS

    def extra_repr(self) -> str:
        return (f'sigma={self.sigma} px^2, gamma={self.gamma} (unused), cutoff={self.cutoff}, '
                f'near={self.near}, max_pairs={self.max_pairs or "auto"}')


__all__ = ['SoftSilhouetteRenderer', 'check_faces']
