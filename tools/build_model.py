"""Learn a body model's shape space from registered meshes (see --help)."""
import os.path as osp
import sys

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from smilfit.cli.build_model import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
