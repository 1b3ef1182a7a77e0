"""What the command-line tools treat as a user's error: printed as one line, exit code 1.

Bad configs, missing or refused files, truncated checkpoints and model files raise these
(smilfit's own error classes derive from ``ValueError``; a refused pickle is a
``pickle.UnpicklingError``); the tools print ``TOOL: error: MESSAGE`` instead of a
traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import pickle
import sys

__all__ = ['USER_ERRORS', 'report_error']

#: Exceptions the tools report as one line (their messages name the file, key or field).
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, IsADirectoryError,
               NotADirectoryError, PermissionError, pickle.UnpicklingError)


def report_error(tool: str, err: BaseException) -> int:
    """Print ``TOOL: error: MESSAGE`` to stderr; return the exit code (1)."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    print(f'{tool}: error: {message}', file=sys.stderr)
    return 1
