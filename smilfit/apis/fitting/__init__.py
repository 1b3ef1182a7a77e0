"""Fit a whole dataset with a registrant from a config: the engine behind ``tools/fit.py``.

Batches of samples are fitted one after another; each finished batch is written to
``<work_dir>/chunks/`` atomically, so an interrupted run resumes where it stopped
(``resume=True``). At the end the chunks are merged into ``<work_dir>/fit_results.h5``
(written to a temporary file and renamed: no half-written result looks valid).

The package's rooms, in the order a fit goes through them: ``config`` (the errors, the
``data`` dict, the resume stamp), ``preparation`` (making ``data.path`` from SLEAP or
synthetic sources), ``observations`` (reader batches as handler observations, cameras
checked, view names), ``dataset_fit`` (:func:`fit_dataset`, the loop over batches),
``reprojection`` (pixel errors of a fit), ``results`` (chunks, ``fit_results.h5``, the
quality table) and ``export`` (the fit as a SLEAP ``.slp``). Everything is re-exported
here; patch a name in the module that uses it (e.g.
``smilfit.apis.fitting.dataset_fit.estimate_skeletons``).
"""
# DATA_KEYS, PathLike, dataset_identity, _OBSERVATION_KEYS, SKELETON_NAME: importable
# here as before the split, not part of __all__.
from .config import (DATA_KEYS, AllSamplesFailedError, FittingConfigError,  # noqa: F401
                     PathLike, StaleDataError, check_data_config, dataset_identity,
                     load_joint_lookup)
from .dataset_fit import fit_dataset
from .export import export_fit_slp
from .observations import (_OBSERVATION_KEYS, drop_non_finite_cameras,  # noqa: F401
                           observations_from_batch)
from .preparation import prepare_data, prepare_data_once
from .reprojection import fitted_points, point_reprojection_errors, reprojection_errors
from .results import (QUALITY_JSON, QUALITY_TEXT, RESULTS_NAME,  # noqa: F401
                      SKELETON_NAME, write_fit_quality)

__all__ = ['fit_dataset', 'export_fit_slp', 'check_data_config', 'drop_non_finite_cameras',
           'point_reprojection_errors', 'write_fit_quality', 'QUALITY_JSON', 'QUALITY_TEXT',
           'fitted_points', 'prepare_data', 'prepare_data_once',
           'load_joint_lookup', 'observations_from_batch', 'reprojection_errors',
           'FittingConfigError', 'AllSamplesFailedError', 'StaleDataError', 'RESULTS_NAME']
