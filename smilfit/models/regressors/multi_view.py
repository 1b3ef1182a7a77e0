"""Multi-view regressor: shared backbone per view, cross-view fusion, one decoder."""
from __future__ import annotations

from typing import Optional

from smilfit.registry import MODELS

from .base import BodyRegressor


@MODELS.register_module()
class MultiViewRegressor(BodyRegressor):
    """:class:`~.base.BodyRegressor` over C canonical view slots.

    Every view goes through the same backbone; the fusion neck (default
    :class:`~smilfit.models.CrossViewFusion`) adds view embeddings and lets the tokens of
    all views attend to each other; the head's decoder cross-attends over all views'
    tokens and has one camera head per view slot. Cameras default to the calibrated ones
    of the batch (``camera=dict(init='calibrated', predict=False)``: the body is predicted
    in view slot 0's camera frame and returned in the world frame); with
    ``predict=True`` they are refined, and with ``init='default'`` predicted outright.

    Inputs (B, C, 3, H, W) with C = ``num_views`` (a dataset's ``max_views``); invalid
    (padding) views (``view_valid`` False) are masked out of attention and losses.

    Args: see :class:`~.base.BodyRegressor`; ``neck=None`` keeps the default fusion,
        ``neck=False`` disables it (the head then attends over raw backbone tokens).
    """

    def __init__(self, *args, num_views: int = 4, neck=None,
                 camera: Optional[dict] = None, **kwargs) -> None:
        if neck is None:
            neck = dict(type='CrossViewFusion', dim=256, depth=2, num_heads=8)
        elif neck is False:
            neck = None
        camera = dict(dict(model='perspective', init='calibrated', predict=False),
                      **(camera or {}))
        super().__init__(*args, num_views=num_views, neck=neck, camera=camera, **kwargs)


__all__ = ['MultiViewRegressor']
