"""Procedural body models: grow a skinned, shape-parametric mesh around a skeleton.

The project cannot ship third-party model files, so it grows its own: a tube is swept
along the skeleton and skinned to it. The construction is *linear* in the skeleton:
every vertex is

    ``v = C @ P + (D @ r) * U``

with ``P`` (J, 3) the rest joint positions, ``r`` (J,) the per-joint tube radii,
``C`` / ``D`` fixed interpolation weights (two non-zeros per vertex) and ``U`` (V, 3)
fixed offset directions. A shape direction is therefore just a change of skeleton
``(dP, dr)`` pushed through the same map, and since every joint is the centre of one
ring of ``segments`` evenly spaced vertices (whose offsets ``U`` average to zero), the
joint regressor (the mean of that ring) returns ``P + sum_k beta_k dP_k`` *exactly*
for any shape coefficients ``beta``.

The steps, one module each:

- :mod:`.skeleton`: the input, validated (:func:`validate_skeleton`, :class:`Skeleton`,
  :class:`SkeletonError`);
- :mod:`.tubes`: the mesh layout, one closed tube per path of the tree, and the radii;
- :mod:`.skinning`: two-joint smoothstep skinning weights;
- :mod:`.shape_directions`: size, thickness and bone-group length directions;
- :mod:`.symmetry`: left/right joint pairs from joint names;
- :mod:`.build`: :func:`build_model_from_skeleton`, which puts them together.

(Not an mmengine-style registry builder: registered components are built by
:mod:`smilfit.registry`. The old module :mod:`smilfit.body_models.builder` re-exports
these names.)
"""
from .build import build_model_from_skeleton
from .shape_directions import default_bone_groups
from .skeleton import ParentSpec, Skeleton, SkeletonError, validate_skeleton
from .symmetry import find_symmetric_pairs, mirror_joint_name
from .tubes import RadiusSpec

__all__ = [
    'SkeletonError', 'Skeleton', 'validate_skeleton', 'mirror_joint_name',
    'find_symmetric_pairs', 'default_bone_groups', 'build_model_from_skeleton',
    'RadiusSpec', 'ParentSpec',
]
