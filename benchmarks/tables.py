"""The Markdown tables a benchmark prints and, with ``--tables DIR``, writes for the docs.

A documentation page shows a benchmark's table by including the file the benchmark wrote
(``docs/tables/<name>.md``, a MyST ``{include}``), with the command that writes it above:
no figure on the page is typed by hand, and rerunning the command regenerates the table.
Each file opens with a comment naming that command (``tests/docs/test_tables.py`` checks
that the page shows it and that the benchmark writes the file).
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from smilfit.utils.atomic import write_text  # noqa: E402

#: The comment a table file opens with; ``{command}`` is the command that wrote it.
HEADER = '<!-- written by `{command}`: rerun it to regenerate this table -->'


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """``header`` and ``rows`` (cells as they are to be shown) as a Markdown table."""
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f'every row needs {len(header)} cells: {list(header)}')
    lines = ['| ' + ' | '.join(map(str, header)) + ' |',
             '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(map(str, row)) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'


def command_line(argv: Optional[Sequence[str]] = None, script: Optional[str] = None) -> str:
    """The command as a user types it from the repository root: ``python
    benchmarks/<script> ARGS`` (``argv``: the arguments, default ``sys.argv[1:]``)."""
    script = script or Path(sys.argv[0]).name
    args = list(sys.argv[1:] if argv is None else argv)
    return ' '.join(['python', f'benchmarks/{script}'] + [shlex.quote(a) for a in args])


def write(name: str, header: Sequence[str], rows: Sequence[Sequence[object]],
          tables: Optional[os.PathLike], command: Optional[str] = None) -> str:
    """Write table ``name`` to ``tables/<name>.md`` (where ``tables``, a folder, is given)
    behind the :data:`HEADER` naming ``command`` (atomically: a run cut short leaves the old
    table whole).

    Returns:
        The table's Markdown.
    """
    text = markdown_table(header, rows)
    if tables is not None:
        folder = Path(tables)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / f'{name}.md',
                   HEADER.format(command=command or command_line()) + '\n\n' + text)
    return text


def emit(name: str, header: Sequence[str], rows: Sequence[Sequence[object]],
         tables: Optional[os.PathLike] = None, command: Optional[str] = None) -> str:
    """Print table ``name`` as Markdown, and :func:`write` it where ``tables`` is given.

    Returns:
        The table's Markdown.
    """
    text = write(name, header, rows, tables, command)
    print(text, flush=True)
    return text
