"""Environment set-up for code that builds smilfit objects outside mmengine's Runner."""
import importlib
from typing import Optional, Sequence

from mmengine.registry import init_default_scope as _init_default_scope

from smilfit.registry import SCOPE

# Sub-packages whose import registers modules into smilfit's registries. Imported
# inside :func:`register_all_modules`, so that importing ``smilfit.utils`` stays cheap
# and an import error in one of them surfaces where registration is asked for.
REGISTERING_PACKAGES = (
    'smilfit.body_models',
    'smilfit.losses',
    'smilfit.handlers',
    'smilfit.engine.hooks',
    'smilfit.cameras',
    'smilfit.datasets',
    'smilfit.registrants',
    'smilfit.renderers',
    'smilfit.models',
    'smilfit.evaluation',
)

# What fitting builds (tools/fit.py): body models, handlers, losses, cameras, data,
# registrants, renderers. No networks, runners or metrics, so mmengine's model, optimizer
# and runner modules (which import torch.distributed.fsdp: about 1 s) are not imported
# before fitting starts; a stage with a torch optimizer imports them on its first
# OPTIMIZERS lookup (the registry's location).
FITTING_PACKAGES = tuple(p for p in REGISTERING_PACKAGES
                         if p not in ('smilfit.engine.hooks', 'smilfit.models',
                                      'smilfit.evaluation'))


def register_all_modules(init_default_scope: bool = True,
                         packages: Optional[Sequence[str]] = None) -> None:
    """Register every smilfit module in smilfit's registries.

    The Runner imports a registry's ``locations`` lazily on its first lookup; scripts
    and notebooks that call ``REGISTRY.build`` with a bare type name outside a Runner
    (``tools/fit.py``, ``smilfit.apis``) call this first.

    Args:
        init_default_scope: also make ``'smilfit'`` mmengine's default scope, so that
            mmengine's root registries look type names up in smilfit's children first.
            When another default scope is current, a new ``'smilfit'`` scope instance
            is created and made current (mmengine logs a warning).
        packages: the registering sub-packages to import; None: all of them;
            :data:`FITTING_PACKAGES` for fitting. The others are still found: each
            registry imports its location on its first lookup.

    Raises:
        ImportError: a registering sub-package failed to import.
    """
    for package in REGISTERING_PACKAGES if packages is None else packages:
        importlib.import_module(package)
    if init_default_scope:
        _init_default_scope(SCOPE)
