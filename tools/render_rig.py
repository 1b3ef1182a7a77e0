"""Render training samples of the fitted animal in its own rig (see --help)."""
import os.path as osp
import sys

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from smilfit.cli.render_rig import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
