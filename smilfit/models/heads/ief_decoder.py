"""Transformer decoder head with iterative error feedback (IEF).

The query tokens encode the *current prediction*: one body token (the body vector
embedded, plus a learned query) and one camera token per canonical view slot (that
slot's camera vector embedded, plus a learned slot query). A transformer decoder lets the
tokens attend to each other and cross-attend over the image tokens of every view (the
``memory``); the body token's output gives a residual for the body vector and each camera
token's output, through its own linear head (one camera head per view slot), a residual
for its camera. Repeating this ``num_iterations`` times conditions every iteration on
the last one (HMR's feedback loop in a transformer, as in HMR 2.0/AniMer's decoders with
IEF); every intermediate prediction is returned so that it can be supervised.

The decoder refuses to run without image tokens: the reference implementation's decoder
silently received no image features from ResNet backbones and regressed the mean.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

from smilfit.registry import MODELS


def check_memory(memory: Optional[torch.Tensor], memory_mask: Optional[torch.Tensor],
                 in_dim: int, owner: str) -> Optional[torch.Tensor]:
    """Check that ``memory`` holds (B, M >= 1, in_dim) tokens; return the mask to use.

    A sample whose tokens are all masked (no valid view) would make attention a softmax
    over nothing, NaN that poisons the whole batch's gradients: its tokens are unmasked
    instead (its data carries no valid view, so no 2D term supervises it). Done on the
    device, without reading the mask back: a host sync per step stalls the GPU and
    breaks ``torch.compile`` graphs.
    """
    if memory is None:
        raise ValueError(f'{owner}: no image tokens (memory is None); the decoder must '
                         'cross-attend over backbone/fused tokens')
    if memory.ndim != 3 or memory.shape[1] == 0 or memory.shape[2] != in_dim:
        raise ValueError(f'{owner}: memory must be (B, M >= 1, {in_dim}) image tokens, got '
                         f'{tuple(memory.shape)}')
    if memory_mask is None:
        return None
    return memory_mask & ~memory_mask.all(1, keepdim=True)


@MODELS.register_module()
class IEFTransformerDecoderHead(nn.Module):
    """Transformer decoder over image tokens with iterative error feedback.

    Args:
        in_dim: size of the memory tokens (set by the regressor).
        body_dim: P_b, the body vector size (set by the regressor).
        camera_dim: P_c, the camera vector size per view (0: cameras are not
            predicted; set by the regressor).
        num_views: C, canonical view slots (set by the regressor).
        dim: decoder width.
        depth: decoder layers.
        num_heads: attention heads.
        mlp_ratio: feed-forward width / dim.
        num_iterations: IEF iterations (>= 1).
        dropout: dropout inside the decoder.
        output_init_std: std of the output layers' initial weights (small: the first
            predictions start near the initial vectors).
    """

    def __init__(self, in_dim: int, body_dim: int, camera_dim: int, num_views: int,
                 dim: int = 256, depth: int = 2, num_heads: int = 8, mlp_ratio: float = 2.0,
                 num_iterations: int = 3, dropout: float = 0.0,
                 output_init_std: float = 1e-3) -> None:
        super().__init__()
        if num_iterations < 1 or depth < 1:
            raise ValueError(f'num_iterations and depth must be >= 1, got {num_iterations}, '
                             f'{depth}')
        if dim % num_heads:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.in_dim, self.body_dim, self.camera_dim = int(in_dim), int(body_dim), \
            int(camera_dim)
        self.num_views, self.num_iterations = int(num_views), int(num_iterations)
        self.memory_proj = nn.Linear(in_dim, dim) if in_dim != dim else nn.Identity()
        self.body_embed = nn.Linear(body_dim, dim)
        self.body_query = nn.Parameter(torch.zeros(1, 1, dim))
        layer = nn.TransformerDecoderLayer(dim, num_heads, int(dim * mlp_ratio), dropout,
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, depth)
        self.norm = nn.LayerNorm(dim)
        self.body_out = nn.Linear(dim, body_dim)
        outs = [self.body_out]
        if self.camera_dim:
            self.camera_embed = nn.Linear(camera_dim, dim)
            self.camera_query = nn.Parameter(torch.zeros(1, num_views, dim))
            self.camera_out = nn.ModuleList(nn.Linear(dim, camera_dim)
                                            for _ in range(num_views))
            outs += list(self.camera_out)
            nn.init.trunc_normal_(self.camera_query, std=0.02)
        nn.init.trunc_normal_(self.body_query, std=0.02)
        for lin in outs:
            nn.init.normal_(lin.weight, std=output_init_std)
            nn.init.zeros_(lin.bias)

    def forward(self, memory: torch.Tensor, memory_mask: Optional[torch.Tensor],
                views: torch.Tensor, fused: torch.Tensor, init_body: torch.Tensor,
                init_cameras: Optional[torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        """Refine the initial vectors.

        Args:
            memory: (B, M, in_dim) image tokens of all views (required, M >= 1).
            memory_mask: (B, M) True = ignore (invalid views), or None (see
                :func:`check_memory` for samples with every token masked).
            views, fused: per-view (B, C, in_dim) and global (B, in_dim) features
                (unused here; part of the head interface).
            init_body: (B, P_b) initial body vector.
            init_cameras: (B, C, P_c) initial camera vectors (None when P_c = 0).

        Returns:
            ``num_iterations`` dicts ``body`` (B, P_b), ``cameras`` (B, C, P_c) or None.
        """
        memory_mask = check_memory(memory, memory_mask, self.in_dim, type(self).__name__)
        mem = self.memory_proj(memory)
        body, cams = init_body, init_cameras
        C = 0
        if self.camera_dim:
            if cams is None or cams.shape[1:] != (self.num_views, self.camera_dim):
                raise ValueError(f'{type(self).__name__}: init_cameras must be (B, '
                                 f'{self.num_views}, {self.camera_dim}), got '
                                 f'{None if cams is None else tuple(cams.shape)}')
            C = self.num_views
        out: List[Dict[str, torch.Tensor]] = []
        for _ in range(self.num_iterations):
            query = self.body_embed(body)[:, None] + self.body_query
            if C:
                query = torch.cat([query, self.camera_embed(cams) + self.camera_query], 1)
            x = self.norm(self.decoder(query, mem, memory_key_padding_mask=memory_mask))
            body = body + self.body_out(x[:, 0])
            if C:
                delta = torch.stack([head(x[:, 1 + c]) for c, head in
                                     enumerate(self.camera_out)], 1)
                cams = cams + delta
            out.append(dict(body=body, cameras=cams if C else None))
        return out


__all__ = ['IEFTransformerDecoderHead', 'check_memory']
