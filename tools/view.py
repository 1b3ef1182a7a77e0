"""Look at a fit in 3D in the browser: ``python tools/view.py WORK_DIR``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smilfit.cli.view import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
