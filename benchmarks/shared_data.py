"""Where the benchmarks find the shared real data (the SMIL models, the 4-camera mouse
session): ``../shared`` beside the checkout, or the folder the environment variable
``SMILFIT_SHARED`` names. A machine that gets the checkout and not what lies beside it
(a lent GPU) gets a copy inside the checkout instead: ``benchmarks/device_bundle.sh``
makes one, and ``benchmarks/cuda.sh`` points ``SMILFIT_SHARED`` at it."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The environment variable naming another folder with ``../shared``'s layout.
ENV = 'SMILFIT_SHARED'


def shared_root() -> Path:
    """``$SMILFIT_SHARED`` where set (relative to the working directory), else
    ``../shared`` beside the checkout."""
    named = os.environ.get(ENV)
    return Path(named).resolve() if named else ROOT.parent / 'shared'


SHARED = shared_root()
