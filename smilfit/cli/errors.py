"""What the command-line tools treat as a user's error: printed as one line, exit code 1.

Bad configs, missing or refused files, truncated checkpoints and model files raise these;
the tools print ``TOOL: error: MESSAGE`` (to stderr) instead of a traceback. Anything else
is a bug and keeps its traceback.

Two sets of errors:

- :data:`USER_ERRORS`, for the setup of a run (reading options, the config, input files):
  smilfit's own errors, ``ValueError``/``KeyError`` (config values) and file errors.
- :data:`RUN_ERRORS`, for code that runs long (a training loop): only smilfit's own errors
  (:class:`SmilfitUserError`), refused pickles and file errors, so that a ``ValueError``
  from a bug deep in a run keeps its traceback.

Use::

    from smilfit.cli.errors import user_errors

    def main(argv=None) -> int:
        args = build_parser().parse_args(argv)
        with user_errors('mytool'):      # prints 'mytool: error: ...', raises SystemExit(1)
            run(args)
        return 0

or, for a ``main`` that returns its exit code, ``return run_main('mytool', _main, argv)``.
Errors of other modules become one-line errors by deriving from :class:`SmilfitUserError`.
"""
from __future__ import annotations

import contextlib
import pickle
import sys
from typing import Callable, Iterator, Optional, Sequence, Tuple, Type

from smilfit.errors import SmilfitUserError

__all__ = ['SmilfitUserError', 'USER_ERRORS', 'RUN_ERRORS', 'report_error', 'user_errors',
           'run_main']

ErrorTypes = Tuple[Type[BaseException], ...]

# File errors whose messages name the file (Python's own and smilfit's).
_FILE_ERRORS: ErrorTypes = (FileNotFoundError, FileExistsError, IsADirectoryError,
                            NotADirectoryError, PermissionError)

#: Exceptions the tools report as one line while setting a run up.
USER_ERRORS: ErrorTypes = (SmilfitUserError, ValueError, KeyError, *_FILE_ERRORS,
                           pickle.UnpicklingError)

#: Exceptions the tools report as one line from inside a long run (e.g. ``runner.train()``).
RUN_ERRORS: ErrorTypes = (SmilfitUserError, *_FILE_ERRORS, pickle.UnpicklingError)


def report_error(tool: str, err: BaseException) -> int:
    """Print ``TOOL: error: MESSAGE`` to stderr; return the exit code (1)."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    print(f'{tool}: error: {message}', file=sys.stderr)
    return 1


@contextlib.contextmanager
def user_errors(tool: str, errors: ErrorTypes = USER_ERRORS) -> Iterator[None]:
    """Report an exception of ``errors`` raised in the block as one line and exit with 1
    (``SystemExit(1)``); other exceptions pass through with their traceback."""
    try:
        yield
    except errors as err:
        raise SystemExit(report_error(tool, err)) from None


def run_main(tool: str, main: Callable[[Optional[Sequence[str]]], int],
             argv: Optional[Sequence[str]] = None, errors: ErrorTypes = USER_ERRORS) -> int:
    """``main(argv)``'s exit code, or 1 after reporting an exception of ``errors``."""
    try:
        return main(argv)
    except errors as err:
        return report_error(tool, err)
