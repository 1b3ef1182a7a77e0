"""Registrants: stage-wise optimisation of body-model parameters (SMPLify-style fitting).

- :mod:`.stages`: stage configs, validated strictly.
- :mod:`.batched_lbfgs`: L-BFGS in which every sample converges as if fitted alone.
- :mod:`.initialization`: global pose from 3D points (given or triangulated).
- :mod:`.hooks`: progress bars and loss history per stage.
- :class:`SMILRegistrant` (``registrant.py``): the registered fitter.
"""
from .batched_lbfgs import BatchedLBFGS
from .hooks import FittingHook, LossHistoryHook, ProgressBarHook, build_hooks
from .initialization import global_pose_from_points, rigid_align, triangulate_observations
from .registrant import FitResult, FittingDivergedError, SMILRegistrant
from .stages import FITTABLE_PARAMS, Stage, StageConfigError, parse_stages

__all__ = [
    'BatchedLBFGS', 'FittingHook', 'LossHistoryHook', 'ProgressBarHook', 'build_hooks',
    'global_pose_from_points', 'rigid_align', 'triangulate_observations', 'FitResult',
    'FittingDivergedError', 'SMILRegistrant', 'FITTABLE_PARAMS', 'Stage', 'StageConfigError',
    'parse_stages',
]
