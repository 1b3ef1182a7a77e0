"""MultiBin heading head: which of K headings the body faces (Mousavian et al. 2017).

Regressing a uniform 360-degree heading directly stalls: the L2 optimum of an unresolved
heading is the mean rotation (docs/regression.md). :class:`MultiBinHeadingHead` classifies
the heading into K bins instead: bin ``k`` is the initial global orientation turned by
``2 pi k / K`` about the camera's vertical (y) axis, and the regressor's IEF head starts from
that bin's orientation, so it only regresses a residual of at most ``pi / K``. Frames: the
body vector's (the calibrated reference camera's, or the predicted camera's), y down.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional

import torch
from torch import nn

from smilfit.body_models.rotations import axis_angle_to_matrix
from smilfit.registry import MODELS

#: What the classifier reads.
HEADING_FEATURES = ('fused', 'grid')


def heading_bin_rotations(init_orient: torch.Tensor, num_bins: int) -> torch.Tensor:
    """(K, 3, 3) bin starts: ``init_orient`` (3, 3) turned by ``2 pi k / K`` about y."""
    angles = torch.arange(num_bins, dtype=init_orient.dtype) * (2 * math.pi / num_bins)
    zeros = torch.zeros_like(angles)
    return axis_angle_to_matrix(torch.stack([zeros, angles, zeros], -1)) @ init_orient


@MODELS.register_module()
class MultiBinHeadingHead(nn.Module):
    """A K-way heading classifier and the geometry of its bins.

    The classifier is zero-initialised (uniform logits at the start). Its parameters are
    this module's own, laid out as the classifier it replaced was, so that checkpoints load
    unchanged: ``weight`` (K, D) and ``bias`` (K,) of a linear layer for ``'fused'``; a
    LayerNorm-MLP ``0`` (LayerNorm), ``1`` (Linear), ``2`` (GELU), ``3`` (Linear) for
    ``'grid'``. The bin geometry is in non-persistent buffers.

    Args:
        in_dim: D, the fused feature size (filled in by the regressor).
        num_bins: K >= 1.
        init_orient: (3, 3) the initial global orientation (rotation matrix, body vector's
            frame); bin 0 starts from it (filled in by the regressor).
        features: ``'fused'`` (the fused (B, D) feature vector, through a linear layer) or
            ``'grid'`` (every view slot's backbone feature map average-pooled to ``grid`` x
            ``grid`` cells and concatenated, through a LayerNorm-MLP: where the head is in
            the image is kept, which is what the heading is).
        grid: cells per side of the ``'grid'`` features.
        num_views: C, view slots (``'grid'``; filled in by the regressor).
        token_dim: D_b, backbone channels (``'grid'``; filled in by the regressor).
        hidden_dim: hidden width of the ``'grid'`` MLP.
    """

    def __init__(self, in_dim: int, num_bins: int, init_orient: torch.Tensor,
                 features: str = 'fused', grid: int = 2, num_views: int = 1,
                 token_dim: Optional[int] = None, hidden_dim: int = 256) -> None:
        super().__init__()
        if num_bins < 1:
            raise ValueError(f'num_bins must be >= 1, got {num_bins}')
        if features not in HEADING_FEATURES or grid < 1:
            raise ValueError(f"heading features must be one of {HEADING_FEATURES} and grid "
                             f'>= 1, got {features!r}, {grid}')
        self.num_bins, self.features, self.grid = int(num_bins), features, int(grid)
        if features == 'fused':
            linear = nn.Linear(int(in_dim), self.num_bins)
            self.weight, self.bias = linear.weight, linear.bias
        else:
            if token_dim is None:
                raise ValueError("heading features 'grid' need token_dim (backbone channels)")
            n_in = int(num_views) * self.grid * self.grid * int(token_dim)
            for i, layer in enumerate((nn.LayerNorm(n_in), nn.Linear(n_in, hidden_dim),
                                       nn.GELU(), nn.Linear(hidden_dim, self.num_bins))):
                self.add_module(str(i), layer)
        nn.init.zeros_(self.logit_layer.weight)
        nn.init.zeros_(self.logit_layer.bias)
        init_R = torch.as_tensor(init_orient, dtype=torch.float64).reshape(3, 3)
        # A model direction orthogonal to the up axis: its turn about y is the heading.
        up = init_R.T @ torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
        ref = torch.eye(3, dtype=torch.float64)[int(torch.argmin(up.abs()))]
        ref = ref - up * (ref @ up)
        ref = ref / ref.norm()
        self.register_buffer('bin_R', heading_bin_rotations(init_R, self.num_bins).float(),
                             persistent=False)
        self.register_buffer('ref', (init_R @ ref).float(), persistent=False)
        self.register_buffer('model_ref', ref.float(), persistent=False)

    @property
    def logit_layer(self) -> nn.Module:
        """The layer whose ``weight`` and ``bias`` give the logits (this module for
        ``'fused'``)."""
        return self if self.features == 'fused' else self._modules['3']

    def inputs(self, enc: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, F) what the classifier reads from the regressor's features: ``fused``
        (B, D), or ``backbone_tokens`` (B, C, N, D_b) (N a square grid) pooled per valid
        (``view_valid`` (B, C)) view."""
        if self.features == 'fused':
            return enc['fused']
        tokens = enc['backbone_tokens']                           # (B, C, N, D)
        B, C, N, D = tokens.shape
        side = int(round(math.sqrt(N)))
        if side * side != N:
            raise ValueError(f"heading_features='grid' needs a square token grid, got "
                             f'{N} tokens per view')
        x = tokens.reshape(B * C, side, side, D).permute(0, 3, 1, 2)
        x = torch.nn.functional.adaptive_avg_pool2d(x, self.grid)
        valid = enc['view_valid'].to(x.dtype).reshape(B * C, 1, 1, 1)
        return (x * valid).reshape(B, -1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) classifier inputs -> (B, K) logits."""
        if self.features == 'fused':
            return torch.nn.functional.linear(x, self.weight, self.bias)
        for i in range(4):
            x = self._modules[str(i)](x)
        return x

    def forward(self, enc: Mapping[str, torch.Tensor],
                target: Optional[torch.Tensor] = None) -> Dict[str, Optional[torch.Tensor]]:
        """Classify the heading.

        Args:
            enc: the regressor's features (see :meth:`inputs`).
            target: (B,) long ground-truth bins or None (:meth:`targets`).

        Returns:
            ``heading_logits`` (B, K), ``heading_target`` (``target``) and
            ``heading_bin`` (B,) long: the bin the IEF head starts from, the target in
            training when known (teacher forcing), else the classifier's choice.
        """
        logits = self.logits(self.inputs(enc))
        bins = target if (self.training and target is not None) else \
            logits.detach().argmax(-1)
        return dict(heading_logits=logits, heading_target=target, heading_bin=bins)

    def targets(self, global_orient: torch.Tensor,
                reference_R: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B,) long: the bin of each ground-truth heading.

        Args:
            global_orient: (B, 3) ground-truth global orientation, axis-angle (world).
            reference_R: (B, 3, 3) world -> body-vector frame rotation (the calibrated
                reference camera's; None: the frames coincide).
        """
        R = axis_angle_to_matrix(global_orient.to(self.bin_R))
        if reference_R is not None:
            R = reference_R.to(R) @ R
        v = R @ self.model_ref                                # (B, 3) camera frame
        a = self.ref
        angle = torch.atan2(a[2] * v[:, 0] - a[0] * v[:, 2], a[0] * v[:, 0] + a[2] * v[:, 2])
        width = 2 * math.pi / self.num_bins
        return torch.remainder(torch.round(angle / width), self.num_bins).long()

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar cross-entropy of (B, K) ``logits`` against (B,) ``target`` bins (batch
        mean, unweighted)."""
        return torch.nn.functional.cross_entropy(logits, target)

    def extra_repr(self) -> str:
        return f'num_bins={self.num_bins}, features={self.features!r}, grid={self.grid}'


__all__ = ['MultiBinHeadingHead', 'heading_bin_rotations', 'HEADING_FEATURES']
