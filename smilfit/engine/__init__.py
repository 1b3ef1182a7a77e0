"""Engine pieces around mmengine: compatibility fixes, hooks, runner helpers.

Importing this package applies only the light compatibility fixes (:mod:`.compat`):
:mod:`smilfit.registry` imports it, and fitting must not pay for mmengine's runner side.
:mod:`smilfit.engine.hooks` (smilfit's runner hooks) applies the rest; every runner-side
registry names it as its location.
"""
from . import compat  # noqa: F401
