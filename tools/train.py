"""Train a model with mmengine's Runner: ``python tools/train.py CONFIG [--resume] [--amp] ...``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smilfit.cli.train import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
