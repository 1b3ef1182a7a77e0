#!/usr/bin/env python
"""Test-time adaptation of a regressor checkpoint to one video (see smilfit/cli/adapt.py)."""
import sys

from smilfit.cli.adapt import main

if __name__ == '__main__':
    sys.exit(main())
