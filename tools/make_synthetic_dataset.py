"""Render a synthetic multi-view dataset from a body model (see --help)."""
import os.path as osp
import sys

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from smilfit.cli.make_synthetic import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
