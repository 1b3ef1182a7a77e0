"""High-level entry points for scripts and notebooks (``fit_dataset``, ...)."""
from .evaluation import evaluate_fitting, evaluate_regressor
from .fitting import FittingConfigError, fit_dataset, load_joint_lookup
from .inference import load_regressor, run_inference
from .registration import RegistrationConfigError, register_scans

__all__ = ['fit_dataset', 'load_joint_lookup', 'FittingConfigError', 'evaluate_fitting',
           'evaluate_regressor', 'load_regressor', 'run_inference', 'register_scans',
           'RegistrationConfigError']
