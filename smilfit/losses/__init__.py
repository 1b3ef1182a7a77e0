"""Loss functions (registered in :data:`smilfit.registry.LOSSES`).

Every loss is an ``nn.Module`` built from config with ``loss_weight`` (default 1.0)
and ``reduction`` (``'none'``: the per-sample loss of shape (B,), the default;
``'mean'`` / ``'sum'``: a scalar over the batch). NaN observations are masked before
any arithmetic, so they never produce NaN losses or gradients. The pure functions
behind each loss are exported too. Handlers (fitting issue) wrap these losses; see
``docs/losses.md`` for the formulas.

- :mod:`.keypoint_losses`: :class:`KeypointMSELoss`, :class:`Keypoint3DLoss`,
  :func:`gmof` / :func:`geman_mcclure`.
- :mod:`.limb_length`: :class:`LimbLengthLoss`.
- :mod:`.shape_prior`: :class:`ShapePriorLoss` (Mahalanobis on betas).
- :mod:`.pose_priors`: :class:`PoseL2Prior`, :class:`JointLimitPrior`,
  :class:`GaussianPosePrior`.
- :mod:`.gmm_prior`: :class:`MaxMixturePosePrior`, :func:`fit_gmm_pose_prior`,
  :func:`save_gmm_prior`, :func:`load_gmm_prior`.
- :mod:`.scale_priors`: :class:`LogScalePrior`, :class:`BoneTranslationPrior`,
  :class:`KeypointOffsetPrior`.
- :mod:`.skeleton_priors`: the body-unit, left/right symmetric prior on an animal's
  skeleton corrections (:func:`skeleton_prior_operator`).
- :mod:`.temporal`: :class:`TemporalSmoothnessLoss`.
- :mod:`.camera_prior`: :class:`CameraPriorLoss`.
- :mod:`.silhouette`: :class:`SilhouetteLoss` (the renderer comes with the rendering
  issue).
- :mod:`.param_supervision`: :class:`ParamSupervisionLoss` (ground-truth parameters, a
  regressor's ``param`` term), :func:`rotation_geodesic_sq`.
- :mod:`.triangulation`: :class:`TriangulationConsistencyLoss` (observations triangulated
  through predicted cameras against predicted 3D points, a regressor's ``triangulation``
  term), :func:`triangulation_consistency`.
- :mod:`.utils`: :class:`BaseLoss`, reductions, masking helpers.
"""
from .camera_prior import (FOCAL_MODES, ROTATION_MODES, CameraPriorLoss, focal_distance_sq,
                           rotation_distance_sq)
from .gmm_prior import (MaxMixturePosePrior, fit_gmm_pose_prior, gmm_log_likelihood,
                        load_gmm_prior, mixture_component_nll, save_gmm_prior, validate_gmm)
from .keypoint_losses import (KEYPOINT_NORMALIZATIONS, ROBUST_FUNCTIONS, Keypoint3DLoss,
                              KeypointMSELoss, geman_mcclure, gmof, keypoint_residual_sq)
from .limb_length import LimbLengthLoss, limb_length_residual, limb_lengths, resolve_pairs
from .param_supervision import (DEFAULT_PARAM_WEIGHTS, ROTATION_LOSSES, ParamSupervisionLoss,
                                rotation_geodesic_sq)
from .pose_priors import (GaussianPosePrior, JointLimitPrior, PoseL2Prior,
                          joint_limit_penalty, resolve_joint_limits)
from .scale_priors import BoneTranslationPrior, KeypointOffsetPrior, LogScalePrior, symmetry_sq
from .skeleton_priors import (body_length, midline_points, sagittal_plane,
                              skeleton_prior_operator)
from .shape_prior import ShapePriorLoss, cholesky_or_raise, mahalanobis_sq
from .silhouette import SILHOUETTE_MODES, SilhouetteLoss, silhouette_view_loss
from .temporal import TemporalSmoothnessLoss, finite_differences, frame_valid
from .triangulation import TriangulationConsistencyLoss, triangulation_consistency
from .utils import REDUCTIONS, BaseLoss, reduce_loss, valid_mask
from .surface import ChamferLoss, NormalConsistencyLoss, PointToSurfaceLoss
from .mesh_regularizers import (EdgeLengthRegularizer, LaplacianRegularizer,
                                MeshNormalConsistencyRegularizer)

__all__ = [
    # losses
    'KeypointMSELoss', 'Keypoint3DLoss', 'LimbLengthLoss', 'ShapePriorLoss', 'PoseL2Prior',
    'JointLimitPrior', 'GaussianPosePrior', 'MaxMixturePosePrior', 'LogScalePrior',
    'BoneTranslationPrior', 'KeypointOffsetPrior', 'TemporalSmoothnessLoss', 'CameraPriorLoss', 'SilhouetteLoss',
    'BaseLoss', 'ChamferLoss', 'PointToSurfaceLoss', 'NormalConsistencyLoss',
    'EdgeLengthRegularizer', 'LaplacianRegularizer', 'MeshNormalConsistencyRegularizer',
    'ParamSupervisionLoss', 'TriangulationConsistencyLoss',
    # functions
    'gmof', 'geman_mcclure', 'keypoint_residual_sq', 'limb_lengths', 'limb_length_residual',
    'resolve_pairs', 'mahalanobis_sq', 'cholesky_or_raise', 'joint_limit_penalty',
    'resolve_joint_limits', 'mixture_component_nll', 'validate_gmm', 'fit_gmm_pose_prior',
    'gmm_log_likelihood', 'save_gmm_prior', 'load_gmm_prior', 'symmetry_sq', 'body_length', 'midline_points', 'sagittal_plane',
    'skeleton_prior_operator',
    'finite_differences', 'frame_valid', 'rotation_distance_sq', 'focal_distance_sq',
    'silhouette_view_loss', 'reduce_loss', 'valid_mask', 'rotation_geodesic_sq',
    'triangulation_consistency',
    # constants
    'REDUCTIONS', 'KEYPOINT_NORMALIZATIONS', 'ROBUST_FUNCTIONS', 'ROTATION_MODES',
    'FOCAL_MODES', 'SILHOUETTE_MODES', 'DEFAULT_PARAM_WEIGHTS', 'ROTATION_LOSSES',
]
