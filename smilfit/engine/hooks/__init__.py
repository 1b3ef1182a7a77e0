"""Runner hooks: loss-weight curriculum, checkpoint meta data, RNG state for exact resume,
a calibrated rig's units, the data a run trains and validates on.

EMA needs no hook of ours: mmengine's ``EMAHook`` works as is
(``custom_hooks = [dict(type='EMAHook', momentum=2e-4)]``).

Importing this package applies the runner-side mmengine fixes (:func:`..compat.apply`):
the runner-side registries of :mod:`smilfit.registry` name it as their location.
"""
from .. import compat

compat.apply()

# isort: split
from .checkpoint_meta import CheckpointMetaHook
from .data_split import DataSplitHook
from .loss_weight_curriculum import LossWeightCurriculumHook
from .model_access import unwrap_model
from .random_state import RandomStateHook, capture_rng_state, restore_rng_state
from .rig_units import RigUnitsHook

__all__ = ['CheckpointMetaHook', 'DataSplitHook', 'LossWeightCurriculumHook', 'RandomStateHook',
           'RigUnitsHook', 'capture_rng_state', 'restore_rng_state', 'unwrap_model']
