"""Where the IEF head starts: the codecs' initial body and camera vectors
(:func:`initial_vectors`), or with MultiBin heading (Mousavian et al. 2017) the orientation
of each sample's heading bin. The classifier and the start vector of each bin are built for
the regressor's codec and features (:func:`build_heading`); in training the ground truth's
bin (:func:`heading_targets`) is where the head starts when it is known (teacher forcing),
else the classifier's.

MultiBin heading: the classifier (:class:`~smilfit.models.MultiBinHeadingHead`) picks one
of K headings and the head refines from that bin's orientation, a residual of at most
``pi / K``; ``heading_features='grid'`` pools every view slot's backbone feature map to
``heading_grid`` x ``heading_grid`` cells, through a LayerNorm-MLP: where the head is in the
image is kept, which is what the heading is.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from smilfit.registry import MODELS

from ..heads.heading import HEADING_FEATURES, heading_bin_rotations
from .decoding import view_tensor
from .options import build_part


def check_heading_options(bins: int, features: str, grid: int) -> None:
    """``heading_bins`` >= 0, ``heading_features`` one of ``HEADING_FEATURES``,
    ``heading_grid`` >= 1."""
    if bins < 0:
        raise ValueError(f'heading_bins must be >= 0, got {bins}')
    if features not in HEADING_FEATURES or grid < 1:
        raise ValueError(f"heading_features must be 'fused' or 'grid' and heading_grid "
                         f'>= 1, got {features!r}, {grid}')


def build_heading(bins: int, features: str, grid: int, body_codec, feature_dim: int,
                  num_views: int, token_dim: int) -> Tuple[nn.Module, torch.Tensor]:
    """The classifier (:class:`~smilfit.models.MultiBinHeadingHead`) of ``bins`` > 0
    headings and the start vectors of its bins (K, P_rot): the global orientation's slice
    of the body vector, the codec's initial orientation turned by each bin's heading."""
    init_R = body_codec.decode(body_codec.init_vector[None].double())['global_orient'][0]
    classifier = build_part(
        MODELS, dict(type='MultiBinHeadingHead', num_bins=bins, features=features,
                     grid=grid), 'heading classifier', in_dim=feature_dim,
        num_views=num_views, token_dim=token_dim, init_orient=init_R)
    raw = body_codec.encode(dict(global_orient=heading_bin_rotations(init_R, bins)))
    return classifier, raw[:, body_codec.slices['global_orient']].float()


def heading_targets(classifier: nn.Module, data_samples: Optional[Mapping[str, Any]], B: int,
                    uses_calibration: bool, num_views: int) -> Optional[torch.Tensor]:
    """(B,) the ground truth's heading bin in the body vector's frame, or None without
    ground-truth ``global_orient`` (or calibration, for calibrated cameras)."""
    gt = (data_samples or {}).get('params') or {}
    if gt.get('global_orient') is None:
        return None
    ref = None
    if uses_calibration:
        cal_R = view_tensor(data_samples, 'R', B, num_views, 2)
        if cal_R is None:
            return None
        ref = cal_R[:, 0]
    return classifier.targets(gt['global_orient'], ref)


def initial_vectors(body_codec, camera_codec, B: int, num_views: int, device, dtype,
                    bin_vectors: Optional[torch.Tensor] = None,
                    heading_bins: Optional[torch.Tensor] = None
                    ) -> Dict[str, Optional[torch.Tensor]]:
    """The vectors the head starts from: ``body`` (B, P_b), ``cameras`` (B, C, P_c) (None
    when the camera codec has nothing to predict); with ``heading_bins`` (B,) long each
    sample starts from its bin's orientation (``bin_vectors`` of :func:`build_heading`)."""
    body = body_codec.init_vector.to(device=device, dtype=dtype).expand(B, -1)
    if heading_bins is not None:
        sl = body_codec.slices['global_orient']
        body = body.clone()
        body[:, sl] = bin_vectors.to(device=device, dtype=dtype)[heading_bins.to(device)]
    cams = None
    if camera_codec.dim:
        cams = camera_codec.init_vector.to(device=device, dtype=dtype).expand(
            B, num_views, -1)
    return dict(body=body, cameras=cams)


__all__ = ['check_heading_options', 'build_heading', 'heading_targets', 'initial_vectors']
