"""mmengine metrics (registered in ``smilfit.registry.METRICS``)."""
from .base import SmilfitMetric
from .joint_selection import resolve_joint_index, resolve_joint_weights
from .keypoint_pck import KeypointPCKMetric
from .mpjpe import MPJPEMetric
from .raw import collect_raw
from .regression_keypoint_error import RegressionKeypointErrorMetric
from .reprojection_error import ReprojectionErrorMetric
from .silhouette_iou import SilhouetteIoUMetric

__all__ = ['SmilfitMetric', 'KeypointPCKMetric', 'MPJPEMetric', 'ReprojectionErrorMetric',
           'SilhouetteIoUMetric', 'RegressionKeypointErrorMetric', 'collect_raw', 'resolve_joint_weights', 'resolve_joint_index']
