"""Engine pieces around mmengine: compatibility fixes, hooks, runner helpers."""
from . import compat  # noqa: F401
