"""Keep what a tool prints in a log file in its work dir, as training does.

:func:`tee_to_log` copies everything written to stdout and stderr (messages, warnings,
tables) to a file while it still reaches the terminal. Progress bars redraw a line with
carriage returns; the log keeps only each line's final state.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import IO, Iterator, Union

__all__ = ['tee_to_log']


class _Tee:
    def __init__(self, stream: IO[str], log: IO[str]) -> None:
        self._stream, self._log, self._line = stream, log, ''

    def write(self, text: str) -> int:
        self._stream.write(text)
        self._line += text
        while '\n' in self._line:
            line, self._line = self._line.split('\n', 1)
            self._log.write(line.rsplit('\r', 1)[-1] + '\n')
        self._log.flush()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()
        self._log.flush()

    def close_line(self) -> None:
        if self._line.rsplit('\r', 1)[-1]:
            self._log.write(self._line.rsplit('\r', 1)[-1] + '\n')
        self._line = ''

    def __getattr__(self, name):  # isatty, fileno, encoding... of the real stream
        return getattr(self._stream, name)


@contextlib.contextmanager
def tee_to_log(work_dir: Union[str, 'os.PathLike[str]'], prefix: str) -> Iterator[Path]:
    """Copy stdout and stderr to ``work_dir/<prefix>_YYYYmmdd_HHMMSS.log`` inside the block;
    yields the log's path."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f'{prefix}_{time.strftime("%Y%m%d_%H%M%S")}.log'
    with open(path, 'a', encoding='utf-8') as log:
        out, err = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
        old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            yield path
        finally:
            sys.stdout, sys.stderr = old
            out.close_line()
            err.close_line()
