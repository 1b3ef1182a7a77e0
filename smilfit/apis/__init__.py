"""High-level entry points for scripts and notebooks (``fit_dataset``, ...)."""
from .fitting import FittingConfigError, fit_dataset, load_joint_lookup

__all__ = ['fit_dataset', 'load_joint_lookup', 'FittingConfigError']
