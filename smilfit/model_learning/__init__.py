"""Shape-space learning: build a body model from registrations in correspondence.

- :mod:`.unpose`: inverse LBS (posed registrations -> rest pose) with the fitted pose.
- :mod:`.pca`: PCA with the number of components chosen by explained variance, and
  principal angles between subspaces.
- :mod:`.joint_regressor`: re-fit a joint regressor to new rest meshes and joints.
- :mod:`.shape_space`: :class:`ShapeSpaceLearner`: mean template, shape blendshapes,
  per-joint scale/translation directions (entangled or separate), shape prior, joint
  regressor -> a :class:`~smilfit.body_models.BodyModelData` the body model loads.

``tools/build_model.py`` runs it from files; see ``docs/model_learning.md``.
"""
from .joint_regressor import joint_support, refit_joint_regressor
from .pca import PCAResult, choose_num_components, fit_pca, orthonormal_basis, principal_angles
from .shape_space import (NORMALIZATIONS, SCALE_MODES, LearnedShapeSpace, ShapeSamples,
                          ShapeSpaceLearner, bake_scale_trans, learn_shape_space)
from .unpose import (POSE_PARAM_KEYS, SkinningState, effective_scale_trans, skinning_state,
                     unpose_registrations, unpose_vertices)

__all__ = [
    'ShapeSpaceLearner', 'LearnedShapeSpace', 'ShapeSamples', 'learn_shape_space',
    'bake_scale_trans', 'fit_pca', 'PCAResult', 'choose_num_components', 'orthonormal_basis',
    'principal_angles', 'joint_support', 'refit_joint_regressor', 'skinning_state',
    'SkinningState', 'unpose_vertices', 'unpose_registrations', 'effective_scale_trans',
    'POSE_PARAM_KEYS', 'SCALE_MODES', 'NORMALIZATIONS',
]
