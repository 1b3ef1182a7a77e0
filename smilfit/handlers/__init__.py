"""Loss handlers (registered in :data:`smilfit.registry.HANDLERS`): observation/prior -> loss.

A handler is an ``nn.Module`` built from config with a ``name``, a ``loss`` (a
:data:`~smilfit.registry.LOSSES` config or module) and a mutable ``weight``; after
``setup(body_model, data_info)`` (names resolved once, by name, never by position)
``handler(output, observations, params)`` returns the weighted per-sample loss (B,).
See ``docs/handlers.md`` for the contract and each handler.

- :mod:`.base`: :class:`BaseHandler` (the contract), :func:`build_loss`.
- :mod:`.matching`: :class:`KeypointHandlerBase` (keypoints matched by name through
  :mod:`smilfit.body_models.keypoint_naming`; offsets and importance weights by name).
- :mod:`.views`: observations and cameras with a view axis (fitted cameras first).
- :class:`Keypoint2DHandler`, :class:`Keypoint3DHandler`, :class:`LimbLengthHandler`:
  observations.
- :class:`ShapePriorHandler`, :class:`PosePriorHandler`, :class:`JointLimitHandler`,
  :class:`ScaleTranslationPriorHandler`, :class:`SkeletonPriorHandler`,
  :class:`TemporalHandler`, :class:`MotionPriorHandler` (frames coupled in time, in the
  motion's own units; Levenberg-Marquardt solves its chains whole),
  :class:`CameraPriorHandler`: priors.
- :class:`SilhouetteHandler`: masks through a renderer (``needs_vertices``).
"""
from .animal_pose_prior import AnimalPosePriorHandler, animal_pose_statistics
from .base import BaseHandler, accepts_kwarg, build_loss
from .camera_prior import CameraPriorHandler
from .keypoint2d import Keypoint2DHandler, project_with_depth
from .keypoint3d import Keypoint3DHandler
from .limb_length import LimbLengthHandler
from .motion_prior import MotionPriorHandler
from smilfit.body_models.keypoint_naming import (POINT_SOURCES, KeypointMatch,
                                                 match_keypoints, model_point_names)
from .matching import KeypointHandlerBase, model_points
from .pose_prior import JointLimitHandler, PosePriorHandler, pose_to_axis_angle
from .scale_translation import ScaleTranslationPriorHandler
from .shape_prior import ShapePriorHandler
from .skeleton_prior import SkeletonPriorHandler
from .silhouette import SilhouetteHandler, build_renderer
from .temporal import TemporalHandler, per_frame_smoothness
from .views import observed_camera, view_cameras, view_keypoints
from .surface import OffsetRegularizerHandler, SurfaceHandler

__all__ = [
    # contract
    'BaseHandler', 'build_loss', 'accepts_kwarg',
    # keypoint matching
    'KeypointHandlerBase', 'KeypointMatch', 'match_keypoints', 'model_point_names',
    'model_points', 'POINT_SOURCES',
    # handlers
    'Keypoint2DHandler', 'Keypoint3DHandler', 'LimbLengthHandler', 'ShapePriorHandler',
    'PosePriorHandler', 'AnimalPosePriorHandler', 'JointLimitHandler', 'ScaleTranslationPriorHandler',
    'SkeletonPriorHandler',
    'TemporalHandler', 'MotionPriorHandler', 'CameraPriorHandler', 'SilhouetteHandler', 'SurfaceHandler',
    'OffsetRegularizerHandler',
    # helpers
    'project_with_depth', 'pose_to_axis_angle', 'animal_pose_statistics', 'per_frame_smoothness', 'build_renderer',
    'view_keypoints', 'view_cameras', 'observed_camera',
]
