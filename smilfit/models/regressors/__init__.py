"""Regressors (mmengine ``BaseModel``s): single-view, multi-view and temporal."""
from .base import (DEFAULT_PARAM_WEIGHTS, BodyRegressor, rest_body_length,
                   rotation_geodesic_sq, triangulation_consistency)
from .multi_view import MultiViewRegressor
from .single_view import SingleViewRegressor
from .temporal import (DEFAULT_TEMPORAL_LOSSES, TemporalEncoder, TemporalRegressor,
                       adapt_to_video, flatten_clip)

__all__ = ['BodyRegressor', 'SingleViewRegressor', 'MultiViewRegressor', 'TemporalRegressor',
           'TemporalEncoder', 'adapt_to_video', 'flatten_clip', 'triangulation_consistency',
           'rotation_geodesic_sq', 'rest_body_length', 'DEFAULT_PARAM_WEIGHTS',
           'DEFAULT_TEMPORAL_LOSSES']
