"""Checks of a registrant's set-up that warn about a fit that cannot do what it asks."""
from __future__ import annotations

import warnings

import torch

__all__ = ['warn_if_shape_cannot_move']


def warn_if_shape_cannot_move(registrant) -> None:
    """Warn when stages fit ``betas`` that nothing the handlers read depends on: a
    static-joint model's shape moves neither its joints nor joint keypoints, and
    without a handler reading vertices such a fit leaves ``betas`` at its prior."""
    m = registrant.body_model
    fits_shape = any('betas' in st.fit for st in registrant.stages)
    reads_vertices = any(getattr(h, 'needs_vertices', False)
                         for h in registrant.handlers.values())
    if not fits_shape or reads_vertices or m.num_betas == 0:
        return
    with torch.no_grad():
        rest = m(return_vertices=False).keypoints
        shaped = m(betas=torch.eye(m.num_betas, dtype=m.dtype, device=m.device),
                   return_vertices=False).keypoints
    if rest is None or float((shaped - rest).abs().max()) > 0:
        return
    hint = (' (its joints are static: set the body model\'s '
            'static_joints_follow_shape=True to let the shape move them with the skin)'
            if getattr(m.data, 'static_joint_locs', False) else '')
    warnings.warn(f'stages {[st.name for st in registrant.stages if "betas" in st.fit]} fit '
                  f"'betas', but the shape coefficients move none of the model's "
                  f'keypoints{hint} and no handler reads vertices: they will stay at '
                  'their prior', stacklevel=2)
