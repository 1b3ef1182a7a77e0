"""Benchmark a regressor checkpoint or a fitting config:
``python tools/test.py CONFIG [CHECKPOINT]``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smilfit.cli.test import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
