"""MLP regression head with iterative error feedback on pooled features (HMR-style)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from smilfit.registry import MODELS


def _mlp(in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float,
         output_init_std: float) -> nn.Sequential:
    layers: List[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.GELU(), nn.Dropout(dropout)]
        d = h
    last = nn.Linear(d, out_dim)
    nn.init.normal_(last.weight, std=output_init_std)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


@MODELS.register_module()
class MLPHead(nn.Module):
    """Residual MLPs on pooled features, iterated (IEF).

    The body MLP reads the global feature and the current body and camera vectors; one
    camera MLP per view slot reads that view's feature, the body vector and its camera.

    Args:
        in_dim: feature size (set by the regressor).
        body_dim, camera_dim, num_views: vector sizes and view slots (set by the
            regressor).
        hidden: hidden layer widths.
        num_iterations: IEF iterations (>= 1).
        dropout: dropout after hidden layers.
        output_init_std: std of the last layers' initial weights.
    """

    def __init__(self, in_dim: int, body_dim: int, camera_dim: int, num_views: int,
                 hidden: Sequence[int] = (512, 512), num_iterations: int = 3,
                 dropout: float = 0.0, output_init_std: float = 1e-3) -> None:
        super().__init__()
        if num_iterations < 1:
            raise ValueError(f'num_iterations must be >= 1, got {num_iterations}')
        self.in_dim, self.body_dim, self.camera_dim = int(in_dim), int(body_dim), \
            int(camera_dim)
        self.num_views, self.num_iterations = int(num_views), int(num_iterations)
        cams_total = self.camera_dim * self.num_views
        self.body_mlp = _mlp(in_dim + body_dim + cams_total, hidden, body_dim, dropout,
                             output_init_std)
        if self.camera_dim:
            self.camera_mlps = nn.ModuleList(
                _mlp(in_dim + body_dim + camera_dim, hidden, camera_dim, dropout,
                     output_init_std) for _ in range(num_views))

    def forward(self, memory: Optional[torch.Tensor], memory_mask: Optional[torch.Tensor],
                views: torch.Tensor, fused: torch.Tensor, init_body: torch.Tensor,
                init_cameras: Optional[torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        """See :class:`~smilfit.models.heads.IEFTransformerDecoderHead` (``memory`` is
        unused; ``views`` (B, C, in_dim) and ``fused`` (B, in_dim) are required)."""
        if fused is None or fused.ndim != 2 or fused.shape[1] != self.in_dim:
            raise ValueError(f'MLPHead: fused features must be (B, {self.in_dim}), got '
                             f'{None if fused is None else tuple(fused.shape)}')
        body, cams = init_body, init_cameras
        out: List[Dict[str, torch.Tensor]] = []
        B = body.shape[0]
        for _ in range(self.num_iterations):
            cam_flat = cams.reshape(B, -1) if self.camera_dim else body.new_zeros(B, 0)
            new_body = body + self.body_mlp(torch.cat([fused, body, cam_flat], 1))
            if self.camera_dim:
                delta = torch.stack([mlp(torch.cat([views[:, c], body, cams[:, c]], 1))
                                     for c, mlp in enumerate(self.camera_mlps)], 1)
                cams = cams + delta
            body = new_body
            out.append(dict(body=body, cameras=cams if self.camera_dim else None))
        return out


__all__ = ['MLPHead']
