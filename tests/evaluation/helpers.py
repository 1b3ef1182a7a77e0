"""Small hand-made samples for the evaluation tests."""
import numpy as np

# Three joints of one view with errors 3, 5 and 12 px; a fourth invisible joint with a
# huge error and a fifth with missing (NaN) ground truth, both to be ignored.
GT_2D = np.array([[0., 0.], [10., 0.], [0., 10.], [5., 5.], [np.nan, np.nan]])
OFFSETS_2D = np.array([[3., 0.], [3., 4.], [0., 12.], [100., 0.], [1., 1.]])
VISIBLE = np.array([True, True, True, False, True])
JOINT_NAMES = ['nose', 'ear', 'tail', 'paw', 'hip']


def toy_2d_sample(**extra):
    """One view: valid errors (3, 5, 12) px, joint 'paw' invisible, 'hip' missing."""
    sample = dict(pred_keypoints_2d=(GT_2D + OFFSETS_2D)[None],
                  gt_keypoints_2d=GT_2D[None].copy(), visible=VISIBLE[None].copy())
    sample.update(extra)
    return sample


def similarity(points, scale, angle, axis, shift):
    """``scale * R(axis, angle) @ points + shift`` for points (N, 3)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    return scale * points @ rot.T + np.asarray(shift, float), rot
