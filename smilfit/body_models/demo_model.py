"""A small, deterministic, mouse-like quadruped model generated in code (no files).

Used by demos and by tests that must run without third-party model files.

Frame and units: millimetres; ``+z`` is up (the ground is ``z = 0``), ``+x`` points
from the tail to the nose and ``+y`` to the animal's left. The root is the pelvis.

Skeleton (27 joints): a spine ``pelvis -> spine_1 -> spine_2 -> spine_3 -> neck ->
head -> nose``, two ears on the head, a 6-joint tail from the pelvis and four 3-joint
legs (``hip -> knee -> hind_paw`` from the pelvis, ``shoulder -> elbow -> front_paw``
from ``spine_3``), with ``_L`` / ``_R`` suffixes (so the builder pairs them for
symmetry and merges left/right bone-length shape directions).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from smilfit.registry import BODY_MODELS
from .mesh_from_skeleton import Skeleton, build_model_from_skeleton, validate_skeleton
from .model_data import BodyModelData

if TYPE_CHECKING:
    from .smil_model import SMILModel

__all__ = ['DEMO_UNITS', 'DEMO_UP_AXIS', 'demo_skeleton', 'demo_radii', 'demo_model_data',
           'build_demo_smil_model']

DEMO_UNITS = 'mm'
DEMO_UP_AXIS = 'z'

# (name, parent, rest position in mm, tube radius in mm). Left-side legs only; the
# right side is mirrored in y below.
_AXIAL: Tuple[Tuple[str, Optional[str], Tuple[float, float, float], float], ...] = (
    ('pelvis', None, (0.0, 0.0, 16.0), 11.0),
    ('spine_1', 'pelvis', (14.0, 0.0, 18.0), 12.0),
    ('spine_2', 'spine_1', (28.0, 0.0, 19.0), 12.5),
    ('spine_3', 'spine_2', (42.0, 0.0, 18.0), 11.0),
    ('neck', 'spine_3', (54.0, 0.0, 19.0), 8.5),
    ('head', 'neck', (64.0, 0.0, 21.0), 9.0),
    ('nose', 'head', (82.0, 0.0, 15.0), 2.5),
    ('tail_1', 'pelvis', (-12.0, 0.0, 14.0), 3.5),
    ('tail_2', 'tail_1', (-26.0, 0.0, 11.0), 3.0),
    ('tail_3', 'tail_2', (-40.0, 0.0, 8.0), 2.5),
    ('tail_4', 'tail_3', (-54.0, 0.0, 6.0), 2.0),
    ('tail_5', 'tail_4', (-68.0, 0.0, 5.0), 1.6),
    ('tail_6', 'tail_5', (-82.0, 0.0, 4.0), 1.2),
)
_LEFT: Tuple[Tuple[str, str, Tuple[float, float, float], float], ...] = (
    ('ear_L', 'head', (60.0, 8.0, 30.0), 3.0),
    ('hip_L', 'pelvis', (2.0, 9.0, 11.0), 4.0),
    ('knee_L', 'hip_L', (9.0, 11.0, 6.0), 3.0),
    ('hind_paw_L', 'knee_L', (4.0, 12.0, 2.0), 2.0),
    ('shoulder_L', 'spine_3', (44.0, 8.0, 11.0), 3.5),
    ('elbow_L', 'shoulder_L', (40.0, 9.0, 6.0), 2.5),
    ('front_paw_L', 'elbow_L', (45.0, 9.0, 2.0), 1.8),
)


def _rows() -> List[Tuple[str, Optional[str], Tuple[float, float, float], float]]:
    right = [(n[:-2] + '_R', p[:-2] + '_R' if p.endswith('_L') else p, (x, -y, z), r)
             for n, p, (x, y, z), r in _LEFT]
    return list(_AXIAL) + list(_LEFT) + right


def demo_skeleton() -> Skeleton:
    """The demo mouse skeleton: ``(joint_names, parents (J,) int, rest_positions (J, 3) mm)``."""
    rows = _rows()
    return validate_skeleton([r[0] for r in rows], [r[1] for r in rows],
                             np.array([r[2] for r in rows]))


def demo_radii() -> Dict[str, float]:
    """Tube radius per joint name, in millimetres."""
    return {name: radius for name, _, _, radius in _rows()}


def demo_model_data(**options: Any) -> BodyModelData:
    """Build the demo mouse (about 3.4k vertices, 9 shape directions) in milliseconds.

    Args:
        options: overrides of the keywords of
            :func:`~smilfit.body_models.mesh_from_skeleton.build_model_from_skeleton` (e.g.
            ``segments=8`` for a coarser mesh).

    Returns:
        A validated :class:`BodyModelData` in millimetres, ``+z`` up, named
        ``'demo_mouse'``, with one keypoint per joint plus ``*_tip`` vertex keypoints
        at the nose, tail, ear and paw tips.
    """
    kwargs: Dict[str, Any] = dict(radius=demo_radii(), rings=6, segments=16, cap_rings=3,
                                  tip_keypoints=True, units=DEMO_UNITS,
                                  up_axis=DEMO_UP_AXIS, name='demo_mouse')
    kwargs.update(options)
    return build_model_from_skeleton(*demo_skeleton(), **kwargs)


@BODY_MODELS.register_module(name='DemoSMILModel')
def build_demo_smil_model(builder_options: Optional[Dict[str, Any]] = None,
                          **kwargs: Any) -> SMILModel:
    """The embedded demo mouse (generated in code, no files) as a :class:`SMILModel`.

    Lets configs say ``body_model = dict(type='DemoSMILModel')``.

    Args:
        builder_options: overrides for
            :func:`~smilfit.body_models.demo_model.demo_model_data` (e.g. ``segments``).
        kwargs: :class:`SMILModel` keyword arguments (``dtype``, ``keypoints``, ...).
    """
    from .smil_model import SMILModel
    return SMILModel(data=demo_model_data(**(builder_options or {})), **kwargs)
