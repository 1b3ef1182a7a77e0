"""Videos, meshes, animations and plots of a fit: ``python tools/visualize.py WORK_DIR``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smilfit.cli.visualize import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
