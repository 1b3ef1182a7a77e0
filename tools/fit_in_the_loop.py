"""Refine a network from its own fitted predictions:
``python tools/fit_in_the_loop.py TRAIN_CONFIG FIT_CONFIG CHECKPOINT``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smilfit.cli.fit_in_the_loop import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
