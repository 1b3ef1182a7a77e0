"""smilfit: 3D pose and shape of parametric animal body models.

Importing smilfit applies the mmengine compatibility fixes in
:mod:`smilfit.engine.compat` (so every worker process that imports smilfit has them).
"""
from .engine import compat as _compat  # noqa: F401  (side effect: mmengine fixes)
from .version import __version__

__all__ = ['__version__']
