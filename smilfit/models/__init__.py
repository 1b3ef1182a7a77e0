"""Neural regression of body-model parameters and cameras from images.

Registered in :data:`smilfit.registry.MODELS`:

- :mod:`.backbones`: :class:`TimmBackbone` (any timm model; local weights only).
- :mod:`.necks`: :class:`CrossViewFusion` (multi-view attention fusion),
  :class:`FeatureFusionNeck` (AniMer-style embedding of backbone, part-crop and parameter
  features).
- :mod:`.heads`: :class:`MLPHead`, :class:`IEFTransformerDecoderHead` (iterative error
  feedback; every iteration supervised), :class:`MultiBinHeadingHead` (heading bins).
- :mod:`.regressors`: :class:`SingleViewRegressor`, :class:`MultiViewRegressor`,
  :class:`TemporalRegressor` (+ :class:`TemporalEncoder`) and :func:`adapt_to_video`.
- :mod:`.data_preprocessor`: :class:`RegressionDataPreprocessor`.
- :mod:`.param_codec`: :class:`BodyParamCodec`, :class:`CameraCodec` (prediction layout
  <-> parameters and cameras).
- The regression metric lives with every ``METRICS`` entry in
  :mod:`smilfit.evaluation.metrics`.

Predictions (``mode='predict'``) are one dict per sample: ``pred_params`` (world frame,
axis-angle rotations), ``pred_keypoints_2d`` (C, N, 2) pixels and ``pred_keypoints_3d``
(N, 3) in the data's keypoint order (NaN where no model keypoint matches),
``pred_cameras`` (``K``, ``R``, ``t``, ``dist`` per view), ``features`` (``backbone``,
``fused``, ``params``, ... (D,) each), the ground truth passed through
(``gt_keypoints_2d`` (C, N, 2), ``visible`` (C, N), ``confidence``, ``view_valid`` (C,),
``gt_keypoints_3d`` (N, 3), ``gt_params``), ``image_size`` (C, 2), ``keypoint_names`` and
the metadata keys. See ``docs/regression.md``.
"""
from .backbones import TimmBackbone, count_trainable
from .data_preprocessor import RegressionDataPreprocessor
from .heads import IEFTransformerDecoderHead, MLPHead, MultiBinHeadingHead
from .necks import CrossViewFusion, FeatureFusionNeck
from .param_codec import BodyParamCodec, CameraCodec, upright_orientation
from .regressors import (BodyRegressor, MultiViewRegressor, SingleViewRegressor,
                         TemporalEncoder, TemporalRegressor, adapt_to_video,
                         triangulation_consistency)

__all__ = [
    'TimmBackbone', 'count_trainable', 'RegressionDataPreprocessor', 'MLPHead',
    'IEFTransformerDecoderHead', 'MultiBinHeadingHead', 'CrossViewFusion', 'FeatureFusionNeck', 'BodyParamCodec',
    'CameraCodec', 'upright_orientation', 'BodyRegressor', 'SingleViewRegressor',
    'MultiViewRegressor', 'TemporalRegressor', 'TemporalEncoder', 'adapt_to_video',
    'triangulation_consistency',
]
