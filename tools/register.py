"""Register a folder of 3D scans with a body model: ``python tools/register.py CONFIG``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smilfit.cli.register import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
