"""A dog-like quadruped body model grown by the project's model builder (no files).

The legacy SMAL dog cannot be redistributed, so fitting dogs (e.g. StanfordExtra) uses a
model built in code from a skeleton with :func:`~.mesh_from_skeleton.build_model_from_skeleton`:
closed tubes around the bones, smooth skinning, shape directions for size, thickness and
bone-group lengths (left/right merged) and a shape prior.

Frame and units: **metres**; ``+z`` is up (the ground is ``z = 0``), ``+x`` points from
the tail to the nose and ``+y`` to the animal's left. The root is the pelvis. The rest
pose is a medium-sized dog standing (body about 0.8 m from nose to rump, 0.6 m at the
withers).

Skeleton (36 joints): spine ``pelvis -> spine_1 -> spine_2 -> withers -> neck -> head
-> nose``, a jaw ``head -> jaw -> chin``, two ears ``ear_base -> ear_tip``, a 5-joint
tail from the pelvis, front legs ``shoulder -> elbow -> wrist -> front_paw`` from the
withers and hind legs ``hip -> stifle -> hock -> hind_paw`` from the pelvis, plus two
eye leaves on the head. Sided joints end in ``_L`` / ``_R`` so the builder pairs them for
symmetry and merges left/right bone-length directions.

StanfordExtra's 24 keypoints map to joints by name through
:data:`STANFORDEXTRA_JOINT_LOOKUP` (model joint -> data keypoint), the format of every
smilfit ``joint_lookup``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..registry import BODY_MODELS
from .mesh_from_skeleton import Skeleton, build_model_from_skeleton, validate_skeleton
from .model_data import BodyModelData
from .rotations import matrix_to_axis_angle
from .smil_model import SMILModel

__all__ = ['QUADRUPED_UNITS', 'QUADRUPED_UP_AXIS', 'STANFORDEXTRA_KEYPOINT_NAMES',
           'STANFORDEXTRA_JOINT_LOOKUP', 'quadruped_skeleton', 'quadruped_radii',
           'quadruped_model_data', 'build_quadruped_smil_model', 'camera_facing_orientations']

QUADRUPED_UNITS = 'm'
QUADRUPED_UP_AXIS = 'z'

# (name, parent, rest position in metres, tube radius in metres). Left side only; the
# right side is mirrored in y below.
_AXIAL: Tuple[Tuple[str, Optional[str], Tuple[float, float, float], float], ...] = (
    ('pelvis', None, (0.00, 0.0, 0.50), 0.085),
    ('spine_1', 'pelvis', (0.15, 0.0, 0.51), 0.095),
    ('spine_2', 'spine_1', (0.30, 0.0, 0.52), 0.105),
    ('withers', 'spine_2', (0.44, 0.0, 0.54), 0.100),
    ('neck', 'withers', (0.54, 0.0, 0.64), 0.065),
    ('head', 'neck', (0.62, 0.0, 0.72), 0.065),
    ('nose', 'head', (0.82, 0.0, 0.68), 0.030),
    ('jaw', 'head', (0.64, 0.0, 0.67), 0.035),
    ('chin', 'jaw', (0.76, 0.0, 0.63), 0.022),
    ('tail_1', 'pelvis', (-0.08, 0.0, 0.52), 0.030),
    ('tail_2', 'tail_1', (-0.16, 0.0, 0.50), 0.026),
    ('tail_3', 'tail_2', (-0.24, 0.0, 0.46), 0.022),
    ('tail_4', 'tail_3', (-0.31, 0.0, 0.41), 0.018),
    ('tail_tip', 'tail_4', (-0.37, 0.0, 0.35), 0.012),
)
_LEFT: Tuple[Tuple[str, str, Tuple[float, float, float], float], ...] = (
    ('eye_L', 'head', (0.70, 0.035, 0.745), 0.012),
    ('ear_base_L', 'head', (0.60, 0.055, 0.78), 0.025),
    ('ear_tip_L', 'ear_base_L', (0.57, 0.080, 0.87), 0.015),
    ('shoulder_L', 'withers', (0.44, 0.075, 0.42), 0.050),
    ('elbow_L', 'shoulder_L', (0.40, 0.080, 0.32), 0.038),
    ('wrist_L', 'elbow_L', (0.42, 0.080, 0.13), 0.026),
    ('front_paw_L', 'wrist_L', (0.45, 0.080, 0.025), 0.025),
    ('hip_L', 'pelvis', (0.02, 0.075, 0.42), 0.060),
    ('stifle_L', 'hip_L', (0.09, 0.080, 0.29), 0.042),
    ('hock_L', 'stifle_L', (-0.04, 0.080, 0.14), 0.026),
    ('hind_paw_L', 'hock_L', (-0.02, 0.080, 0.025), 0.025),
)

#: StanfordExtra's 24 keypoints in the order of its ``joints`` arrays
#: (``keypoint_definitions.csv``: front/rear "top" is the elbow/stifle, "middle joint"
#: the wrist/hock; eyes, withers and throat are never labelled in StanfordExtra).
STANFORDEXTRA_KEYPOINT_NAMES: Tuple[str, ...] = (
    'left_front_paw', 'left_front_middle', 'left_front_top',
    'left_rear_paw', 'left_rear_middle', 'left_rear_top',
    'right_front_paw', 'right_front_middle', 'right_front_top',
    'right_rear_paw', 'right_rear_middle', 'right_rear_top',
    'tail_start', 'tail_end', 'left_ear_base', 'right_ear_base', 'nose', 'chin',
    'left_ear_tip', 'right_ear_tip', 'left_eye', 'right_eye', 'withers', 'throat',
)

#: Model joint -> StanfordExtra keypoint (a smilfit ``joint_lookup``). Every data
#: keypoint has one joint; ``throat`` sits at the neck joint (its closest joint).
STANFORDEXTRA_JOINT_LOOKUP: Dict[str, str] = {
    'front_paw_L': 'left_front_paw', 'wrist_L': 'left_front_middle',
    'elbow_L': 'left_front_top',
    'hind_paw_L': 'left_rear_paw', 'hock_L': 'left_rear_middle', 'stifle_L': 'left_rear_top',
    'front_paw_R': 'right_front_paw', 'wrist_R': 'right_front_middle',
    'elbow_R': 'right_front_top',
    'hind_paw_R': 'right_rear_paw', 'hock_R': 'right_rear_middle', 'stifle_R': 'right_rear_top',
    'tail_1': 'tail_start', 'tail_tip': 'tail_end',
    'ear_base_L': 'left_ear_base', 'ear_base_R': 'right_ear_base',
    'nose': 'nose', 'chin': 'chin', 'ear_tip_L': 'left_ear_tip', 'ear_tip_R': 'right_ear_tip',
    'eye_L': 'left_eye', 'eye_R': 'right_eye', 'withers': 'withers', 'neck': 'throat',
}


def _rows() -> List[Tuple[str, Optional[str], Tuple[float, float, float], float]]:
    right = [(n[:-2] + '_R', p[:-2] + '_R' if p.endswith('_L') else p, (x, -y, z), r)
             for n, p, (x, y, z), r in _LEFT]
    return list(_AXIAL) + list(_LEFT) + right


def quadruped_skeleton() -> Skeleton:
    """The dog skeleton: ``(joint_names, parents (J,) int, rest_positions (J, 3) metres)``."""
    rows = _rows()
    return validate_skeleton([r[0] for r in rows], [r[1] for r in rows],
                             np.array([r[2] for r in rows]))


def quadruped_radii() -> Dict[str, float]:
    """Tube radius per joint name, in metres."""
    return {name: radius for name, _, _, radius in _rows()}


def quadruped_model_data(**options: Any) -> BodyModelData:
    """Build the dog model (about 2.3k vertices, 11 shape directions) in milliseconds.

    Args:
        options: overrides of the keywords of
            :func:`~smilfit.body_models.mesh_from_skeleton.build_model_from_skeleton` (e.g.
            ``segments=8`` for a coarser mesh, ``num_betas``).

    Returns:
        A validated :class:`BodyModelData` in metres, ``+z`` up, named ``'quadruped'``,
        with one keypoint per joint (plus ``*_tip`` vertex keypoints with
        ``tip_keypoints=True``).
    """
    kwargs: Dict[str, Any] = dict(radius=quadruped_radii(), rings=4, segments=12,
                                  cap_rings=2, units=QUADRUPED_UNITS,
                                  up_axis=QUADRUPED_UP_AXIS, name='quadruped')
    kwargs.update(options)
    return build_model_from_skeleton(*quadruped_skeleton(), **kwargs)


@BODY_MODELS.register_module(name='QuadrupedSMILModel')
def build_quadruped_smil_model(builder_options: Optional[Dict[str, Any]] = None,
                               **kwargs: Any) -> SMILModel:
    """The builder's dog (:func:`quadruped_model_data`) as a :class:`SMILModel`.

    Lets configs say ``body_model = dict(type='QuadrupedSMILModel')``.

    Args:
        builder_options: overrides for :func:`quadruped_model_data`.
        kwargs: :class:`SMILModel` keyword arguments (``dtype``, ``keypoints``, ...).
    """
    return SMILModel(data=quadruped_model_data(**(builder_options or {})), **kwargs)


def camera_facing_orientations(num_yaw: int = 8, elevation_deg: float = 0.0,
                               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Global orientations that stand the dog upright in front of an OpenCV camera.

    With ``R = I`` and ``t = 0`` (the schema's default camera of an uncalibrated view)
    the camera looks along world ``+z`` with ``+y`` down. The model's up (``+z``) is
    turned to world ``-y`` and its forward (``+x``) to ``num_yaw`` headings evenly spaced
    about the vertical (0 = facing right in the image), tilted by ``elevation_deg``
    (positive: the camera looks down on the dog). Used as rigid-fit hypotheses from a
    single view, where keypoints alone have mirror and front/back ambiguities.

    Returns:
        (num_yaw, 3) axis-angle rotations (model -> camera world frame).
    """
    if num_yaw < 1:
        raise ValueError(f'num_yaw must be >= 1, got {num_yaw}')
    # Model axes (x fwd, y left, z up) -> camera axes (x right, y down, z forward):
    # forward -> +x, left -> +z (away from the camera: we see its right side), up -> -y.
    upright = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]],
                           dtype=torch.float64)
    yaw = torch.arange(num_yaw, dtype=torch.float64) * (2 * np.pi / num_yaw)
    c, s = torch.cos(yaw), torch.sin(yaw)
    zeros, ones = torch.zeros_like(yaw), torch.ones_like(yaw)
    # Yaw about the model's up axis (z), applied in the model frame first.
    yaw_m = torch.stack([torch.stack([c, -s, zeros], -1), torch.stack([s, c, zeros], -1),
                         torch.stack([zeros, zeros, ones], -1)], -2)
    e = np.deg2rad(elevation_deg)
    # Elevation: rotate about the camera's x axis so the top of the dog tilts to the camera.
    tilt = torch.tensor([[1.0, 0.0, 0.0], [0.0, np.cos(e), -np.sin(e)],
                         [0.0, np.sin(e), np.cos(e)]], dtype=torch.float64)
    rot = tilt @ upright @ yaw_m
    return matrix_to_axis_angle(rot).to(dtype)
