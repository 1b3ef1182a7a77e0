"""smilfit: 3D pose and shape of parametric animal body models.

``import smilfit`` is light (no torch, no mmengine), so the command-line tools answer
``--help`` at once. The mmengine compatibility fixes of :mod:`smilfit.engine.compat` are
applied by :mod:`smilfit.registry`, which every registered component imports, so every
process (DDP and dataloader workers included) that builds anything of smilfit has them.
"""
from .version import __version__

__all__ = ['__version__']
