"""Engine pieces around mmengine: compatibility fixes, hooks, runner helpers."""
from . import compat  # noqa: F401
from . import hooks  # noqa: F401  (registers smilfit's runner hooks)
