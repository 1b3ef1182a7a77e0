"""An embedding neck as in AniMer-based pipelines: one vector per animal instance.

:class:`FeatureFusionNeck` combines named feature vectors (the backbone's pooled
feature, the feature of a body-part crop such as the head, the predicted body
parameters, ...) into one embedding for retrieval, re-identification or behaviour
analysis: each input is layer-normalised and projected to ``hidden``, the projections
are concatenated and mapped by a two-layer MLP to ``out_dim``, optionally L2-normalised.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from smilfit.registry import MODELS


@MODELS.register_module()
class FeatureFusionNeck(nn.Module):
    """Fuse named features into one embedding.

    Args:
        in_dims: ``{name: size}`` of the inputs, e.g.
            ``dict(backbone=512, part=512, params=170)``.
        out_dim: embedding size.
        hidden: projection width per input and of the MLP.
        normalize: L2-normalise the embedding (cosine retrieval).
    """

    def __init__(self, in_dims: Mapping[str, int], out_dim: int = 256, hidden: int = 256,
                 normalize: bool = True) -> None:
        super().__init__()
        if not in_dims:
            raise ValueError('FeatureFusionNeck needs at least one input in in_dims')
        self.in_dims = {str(k): int(v) for k, v in in_dims.items()}
        self.out_dim = int(out_dim)
        self.normalize = bool(normalize)
        self.proj = nn.ModuleDict({k: nn.Sequential(nn.LayerNorm(v), nn.Linear(v, hidden))
                                   for k, v in self.in_dims.items()})
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(hidden * len(self.in_dims), hidden),
                                 nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{name: (B, in_dims[name])}`` -> (B, out_dim) embedding."""
        missing = [k for k in self.in_dims if k not in features]
        if missing:
            raise KeyError(f'FeatureFusionNeck: missing inputs {missing} (got '
                           f'{sorted(features)})')
        parts = []
        for name, dim in self.in_dims.items():
            x = features[name]
            if x.ndim != 2 or x.shape[1] != dim:
                raise ValueError(f'FeatureFusionNeck: {name} must be (B, {dim}), got '
                                 f'{tuple(x.shape)}')
            parts.append(self.proj[name](x))
        out = self.mlp(torch.cat(parts, 1))
        return F.normalize(out, dim=-1) if self.normalize else out


__all__ = ['FeatureFusionNeck']
