"""Build a skinned body model from a skeleton file (or the demo mouse); see ``--help``."""
from smilfit.cli.build_skeleton_model import main

if __name__ == '__main__':
    raise SystemExit(main())
