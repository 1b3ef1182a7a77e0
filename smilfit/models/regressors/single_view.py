"""Single-view regressor: one image per sample, a camera predicted with it (HMR-style)."""
from __future__ import annotations

from typing import Optional

from smilfit.registry import MODELS

from .base import BodyRegressor


@MODELS.register_module()
class SingleViewRegressor(BodyRegressor):
    """:class:`~.base.BodyRegressor` with one view slot.

    Inputs (B, 3, H, W) (or (B, 1, 3, H, W)); data samples as packed for single view
    (``keypoints_2d`` (B, N, 2), ``K`` (B, 3, 3), ...; squeezed or not). By default the
    camera is a perspective camera predicted without rotation (the body's global
    orientation is relative to the camera), from a 40 degree field of view.

    Args: see :class:`~.base.BodyRegressor` (``num_views`` is 1).
    """

    def __init__(self, *args, camera: Optional[dict] = None, **kwargs) -> None:
        if kwargs.pop('num_views', 1) != 1:
            raise ValueError('SingleViewRegressor has exactly one view slot; use '
                             'MultiViewRegressor for several views')
        camera = dict(dict(model='perspective', init='default', predict_rotation=False),
                      **(camera or {}))
        super().__init__(*args, num_views=1, camera=camera, **kwargs)


__all__ = ['SingleViewRegressor']
