"""Run a trained regressor on videos, images, a calibrated rig or an HDF5 dataset:
``python tools/infer.py CHECKPOINT INPUT...``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smilfit.cli.infer import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
