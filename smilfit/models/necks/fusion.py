"""Multi-view fusion: cross-view attention over every view's tokens.

:class:`CrossViewFusion` projects each view's backbone tokens to the model width, adds a
learned *view embedding* (one per canonical view slot) and a learned *token position*
embedding, prepends one summary token per view (its pooled feature) and runs a
transformer encoder over the tokens of all views together, so every token attends to
every other view. Tokens of invalid views (``view_valid`` False: padding) are masked out
as keys. Outputs are what a decoder head cross-attends over (``memory``) plus per-view
and global fused features for export.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from smilfit.registry import MODELS


def valid_view_mask(view_valid: Optional[torch.Tensor], B: int, C: int,
                    device) -> torch.Tensor:
    """(B, C) bool view validity; a sample without any valid view keeps view 0 (so that
    attention and means stay defined; its losses are masked by the data anyway)."""
    if view_valid is None:
        return torch.ones(B, C, dtype=torch.bool, device=device)
    valid = view_valid.to(device=device, dtype=torch.bool).reshape(B, C).clone()
    none = ~valid.any(1)
    valid[:, 0] = valid[:, 0] | none
    return valid


def masked_view_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of (B, C, D) over the valid views (B, C) -> (B, D)."""
    w = valid.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


@MODELS.register_module()
class CrossViewFusion(nn.Module):
    """Cross-view attention fusion of per-view tokens.

    Args:
        in_dim: backbone feature size D_in.
        dim: model width D.
        depth: transformer encoder layers (0: only projection and embeddings).
        num_heads: attention heads.
        mlp_ratio: feed-forward width / D.
        max_views: number of canonical view slots (view embeddings).
        max_tokens: most tokens per view (position embeddings).
        dropout: dropout in the encoder.
    """

    def __init__(self, in_dim: int, dim: int = 256, depth: int = 2, num_heads: int = 8,
                 mlp_ratio: float = 2.0, max_views: int = 8, max_tokens: int = 256,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.in_dim, self.out_dim = int(in_dim), int(dim)
        self.max_views, self.max_tokens = int(max_views), int(max_tokens)
        self.token_proj = nn.Linear(in_dim, dim)
        self.pooled_proj = nn.Linear(in_dim, dim)
        self.view_embed = nn.Parameter(torch.zeros(max_views, dim))
        self.pos_embed = nn.Parameter(torch.zeros(max_tokens + 1, dim))
        nn.init.trunc_normal_(self.view_embed, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, num_heads, int(dim * mlp_ratio), dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False) \
            if depth > 0 else None
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor,
                view_valid: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Fuse C views.

        Args:
            tokens: (B, C, N, D_in) backbone tokens per view.
            pooled: (B, C, D_in) pooled backbone features per view.
            view_valid: (B, C) bool, or None (all valid).

        Returns:
            ``memory`` (B, C * (N + 1), D) fused tokens (each view's summary token
            first), ``memory_mask`` (B, C * (N + 1)) True = ignore (invalid views),
            ``views`` (B, C, D) fused per-view features, ``fused`` (B, D) their mean over
            valid views, ``view_valid`` (B, C) the validity used.
        """
        if tokens.ndim != 4 or pooled.ndim != 3:
            raise ValueError(f'CrossViewFusion: tokens must be (B, C, N, D) and pooled '
                             f'(B, C, D), got {tuple(tokens.shape)}, {tuple(pooled.shape)}')
        B, C, N, _ = tokens.shape
        if C > self.max_views:
            raise ValueError(f'CrossViewFusion: {C} views but max_views={self.max_views}')
        if N > self.max_tokens:
            raise ValueError(f'CrossViewFusion: {N} tokens per view but max_tokens='
                             f'{self.max_tokens}; raise max_tokens')
        valid = valid_view_mask(view_valid, B, C, tokens.device)
        x = torch.cat([self.pooled_proj(pooled)[:, :, None], self.token_proj(tokens)], 2)
        x = x + self.pos_embed[:N + 1] + self.view_embed[:C, None]
        x = x.reshape(B, C * (N + 1), self.out_dim)
        mask = (~valid)[:, :, None].expand(B, C, N + 1).reshape(B, C * (N + 1))
        if self.encoder is not None:
            x = self.encoder(x, src_key_padding_mask=mask)
        x = self.norm(x)
        views = x.reshape(B, C, N + 1, self.out_dim)[:, :, 0]
        return dict(memory=x, memory_mask=mask, views=views,
                    fused=masked_view_mean(views, valid), view_valid=valid)


__all__ = ['CrossViewFusion', 'valid_view_mask', 'masked_view_mean']
