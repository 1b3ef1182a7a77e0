"""Fit a body model to a dataset: ``python tools/fit.py CONFIG [--cfg-options ...]``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smilfit.cli.fit import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
