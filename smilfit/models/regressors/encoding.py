"""From images to features: a batch's views (:func:`as_views`) through the backbone and
the optional fusion neck, as the memory the head attends over and the per-view and fused
features (:func:`encode_views`)."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from ..necks.fusion import masked_view_mean, valid_view_mask
from .decoding import view_tensor


def as_views(inputs: torch.Tensor, num_views: int, owner: str) -> torch.Tensor:
    """(B, 3, H, W) or (B, C, 3, H, W) -> (B, C, 3, H, W) with C = ``num_views``;
    ``owner`` names the model in messages."""
    if inputs.ndim == 4:
        inputs = inputs[:, None]
    if inputs.ndim != 5 or inputs.shape[2] != 3:
        raise ValueError(f'{owner}: inputs must be (B, 3, H, W) or (B, C, '
                         f'3, H, W), got {tuple(inputs.shape)}')
    if inputs.shape[1] != num_views:
        raise ValueError(f'{owner}: {inputs.shape[1]} views in the batch, '
                         f'the model has num_views={num_views} view slots (set '
                         'max_views in the dataset to match)')
    return inputs


def encode_views(backbone: nn.Module, neck: Optional[nn.Module], x: torch.Tensor,
                 data_samples: Optional[Mapping[str, Any]] = None) -> Dict[str, torch.Tensor]:
    """Backbone (+ neck) features of every view of ``x`` (B, C, 3, H, W).

    Returns:
        ``memory`` (B, M, D) tokens for the head, ``memory_mask`` (B, M) or None,
        ``views`` (B, C, D) and ``fused`` (B, D) features, ``backbone_views`` (B, C,
        D_b) and ``backbone`` (B, D_b) pooled backbone features, ``backbone_tokens``
        (B, C, N, D_b), ``view_valid`` (B, C).
    """
    B, C = x.shape[:2]
    feats = backbone(x.flatten(0, 1))
    pooled = feats['pooled'].reshape(B, C, -1)
    tokens = feats['tokens'].reshape(B, C, feats['tokens'].shape[1], -1)
    valid = valid_view_mask(view_tensor(data_samples, 'view_valid', B, C, 0), B, C,
                            x.device)
    enc = dict(backbone_views=pooled, backbone=masked_view_mean(pooled, valid),
               view_valid=valid, backbone_tokens=tokens)
    if neck is not None:
        fused = neck(tokens, pooled, valid)
        enc.update(memory=fused['memory'], memory_mask=fused['memory_mask'],
                   views=fused['views'], fused=fused['fused'])
    else:
        N = tokens.shape[2]
        enc.update(memory=tokens.reshape(B, C * N, -1),
                   memory_mask=(~valid)[:, :, None].expand(B, C, N).reshape(B, C * N),
                   views=pooled, fused=enc['backbone'])
    return enc


__all__ = ['as_views', 'encode_views']
