"""Regressors (mmengine ``BaseModel``s): single-view, multi-view and temporal.

:class:`BodyRegressor` (:mod:`.base`) orchestrates; :mod:`.options`, :mod:`.encoding`,
:mod:`.head_start`, :mod:`.decoding`, :mod:`.loss_terms`, :mod:`.packing`, :mod:`.keypoints`
and :mod:`.embedding` hold its parts.
"""
from smilfit.losses.param_supervision import DEFAULT_PARAM_WEIGHTS, rotation_geodesic_sq
from smilfit.losses.triangulation import triangulation_consistency

from .base import BodyRegressor
from .decoding import rest_body_length
from .multi_view import MultiViewRegressor
from .single_view import SingleViewRegressor
from .temporal import (DEFAULT_TEMPORAL_LOSSES, TemporalEncoder, TemporalRegressor,
                       adapt_to_video, flatten_clip)

__all__ = ['BodyRegressor', 'SingleViewRegressor', 'MultiViewRegressor', 'TemporalRegressor',
           'TemporalEncoder', 'adapt_to_video', 'flatten_clip', 'triangulation_consistency',
           'rotation_geodesic_sq', 'rest_body_length', 'DEFAULT_PARAM_WEIGHTS',
           'DEFAULT_TEMPORAL_LOSSES']
