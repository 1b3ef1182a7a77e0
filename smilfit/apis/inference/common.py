"""What every room of inference shares: :class:`InferenceError` and the ``PathLike`` alias."""
from __future__ import annotations

import os
from typing import Union

PathLike = Union[str, os.PathLike]


class InferenceError(ValueError):
    """Inputs or options that inference cannot use; the message names them."""
