"""Convert a body model between the legacy pickle and smilfit's JSON format.

Usage::

    python tools/convert_model.py INPUT OUTPUT [--overwrite]

The formats follow the extensions (``.pkl``, ``.json``, ``.json.gz``). The model is
validated after reading and before writing; the output is written to a temporary file
next to OUTPUT and renamed into place, so a failed conversion leaves nothing behind.
"""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import List, Optional

from . import prog_name

#: smilfit.body_models.io.SUPPORTED_EXTENSIONS, restated so that --help imports no torch
#: (tests/tools/test_entry_points.py checks they agree).
SUPPORTED_EXTENSIONS = ('.json.gz', '.json', '.pkl')

#: Errors caused by the input or the command line: reported in one line, no traceback.
#: Errors reported as one line (ModelValidationError is a ValueError).
EXPECTED_ERRORS = (pickle.UnpicklingError, ValueError, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name('convert_model'),
        description='Convert a body model file between the legacy pickle (.pkl) and '
                    "smilfit's JSON model format (.json, .json.gz). Legacy pickles are "
                    'read with an allow-list unpickler: code in the file is never run.')
    parser.add_argument('input', type=Path, help='model file to read ('
                        + ', '.join(SUPPORTED_EXTENSIONS) + ')')
    parser.add_argument('output', type=Path, help='model file to write; the format follows '
                                                  'its extension')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace OUTPUT if it already exists')
    return parser


def convert(input_path: Path, output_path: Path, overwrite: bool = False) -> str:
    """Convert ``input_path`` to ``output_path``; return the one-line summary.

    Raises:
        FileExistsError: ``output_path`` exists and ``overwrite`` is false.
        plus everything :func:`load_model_data` / :func:`save_model_data` raise.
    """
    # Imported on use: --help and argument errors must not load torch or mmengine.
    from smilfit.body_models.io import load_model_data, model_file_kind, save_model_data
    model_file_kind(output_path)  # fail on a bad output extension before reading
    if output_path.exists() and not overwrite:
        raise FileExistsError(f'{output_path} already exists (use --overwrite to replace it)')
    if input_path.resolve() == output_path.resolve():
        raise ValueError(f'input and output are the same file: {input_path}')
    data = load_model_data(input_path)
    save_model_data(data, output_path)
    return (f'{input_path} -> {output_path}: V={data.num_vertices} F={data.num_faces} '
            f'J={data.num_joints} K={data.num_betas}')


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(convert(args.input, args.output, overwrite=args.overwrite))
    except EXPECTED_ERRORS as e:
        print(f'convert_model: error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
