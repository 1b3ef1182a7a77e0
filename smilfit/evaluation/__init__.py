"""smilfit.evaluation: metrics for keypoints, 3D joints and silhouettes, and reports.

- :mod:`~smilfit.evaluation.functional`: pure numpy functions (errors, PCK, AUC,
  Procrustes, IoU, percentiles).
- :mod:`~smilfit.evaluation.metrics`: mmengine metrics registered in
  ``smilfit.registry.METRICS`` (:class:`KeypointPCKMetric`, :class:`MPJPEMetric`,
  :class:`ReprojectionErrorMetric`, :class:`SilhouetteIoUMetric`) and
  :func:`collect_raw`.
- :func:`write_report` (in :mod:`~smilfit.evaluation.report`): a report directory with
  summaries, plots and raw arrays. matplotlib is imported only when it is called.

See ``docs/metrics.md``.
"""
from .metrics import (KeypointPCKMetric, MPJPEMetric, ReprojectionErrorMetric,
                      SilhouetteIoUMetric, SmilfitMetric, collect_raw)
from .report import write_report

__all__ = ['KeypointPCKMetric', 'MPJPEMetric', 'ReprojectionErrorMetric',
           'SilhouetteIoUMetric', 'SmilfitMetric', 'collect_raw', 'write_report']
