"""Pure numpy evaluation functions (no mmengine, no state).

Every function takes array-likes (numpy arrays, torch tensors, lists), computes in
float64 and returns numpy arrays. Invalid entries (missing ground truth, invisible
keypoints, undefined values) are NaN in outputs and never counted in aggregates.
"""
from .keypoints_2d import bbox_sizes, keypoint_errors, pck_at, pck_curve, curve_auc
from .keypoints_3d import joint_errors_3d, procrustes_align, root_align
from .silhouette import silhouette_iou
from .statistics import masked_percentiles, weighted_mean
from .arrays import to_numpy

__all__ = [
    'to_numpy', 'keypoint_errors', 'bbox_sizes', 'pck_at', 'pck_curve', 'curve_auc',
    'procrustes_align', 'root_align', 'joint_errors_3d', 'silhouette_iou', 'weighted_mean',
    'masked_percentiles',
]
