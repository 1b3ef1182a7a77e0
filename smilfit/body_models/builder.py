"""The mesh-from-skeleton builder's old address, kept for existing imports.

The code that grows a skinned, shape-parametric mesh around a skeleton lives in
:mod:`smilfit.body_models.mesh_from_skeleton` (``skeleton``, ``tubes``, ``skinning``,
``shape_directions``, ``symmetry``, ``build``); this module re-exports its names, so
``from smilfit.body_models.builder import build_model_from_skeleton`` keeps working.
"""
from .mesh_from_skeleton import (ParentSpec, RadiusSpec, Skeleton, SkeletonError,
                                 build_model_from_skeleton, default_bone_groups,
                                 find_symmetric_pairs, mirror_joint_name, validate_skeleton)

__all__ = [
    'SkeletonError', 'Skeleton', 'validate_skeleton', 'mirror_joint_name',
    'find_symmetric_pairs', 'default_bone_groups', 'build_model_from_skeleton',
    'RadiusSpec', 'ParentSpec',
]
