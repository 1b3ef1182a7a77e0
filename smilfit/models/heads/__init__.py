"""Regression heads: MLP and transformer decoder, both with iterative error feedback.

Interface (the regressor passes ``in_dim``, ``body_dim``, ``camera_dim`` and
``num_views``): ``head(memory, memory_mask, views, fused, init_body, init_cameras)`` ->
a list (one per iteration) of ``dict(body=(B, P_b), cameras=(B, C, P_c) or None)``.

:class:`MultiBinHeadingHead` (:mod:`.heading`) classifies the heading into K bins that the
IEF head starts from (a regressor's ``heading_bins``).
"""
from .heading import MultiBinHeadingHead, heading_bin_rotations
from .ief_decoder import IEFTransformerDecoderHead, check_memory
from .mlp import MLPHead

__all__ = ['IEFTransformerDecoderHead', 'MLPHead', 'MultiBinHeadingHead', 'check_memory',
           'heading_bin_rotations']
