"""The benchmark tables the documentation includes are written by the benchmarks, never
typed by hand: every ``docs/tables/*.md`` a page includes opens with the command that
wrote it (``benchmarks/tables.py``), that command is shown on the page above the table,
and its benchmark writes a table of that name."""
from __future__ import annotations

import re
import shlex

import pytest

from ..conftest import REPO_ROOT, benchmark_module
from .page_blocks import bash_blocks

DOCS = REPO_ROOT / 'docs'
TABLES = DOCS / 'tables'
#: A MyST include of a table file.
INCLUDE = re.compile(r'^```\{include\} (tables/[\w.-]+\.md)\n```', re.M)
#: The comment a table file opens with (benchmarks/tables.py's HEADER).
HEADER = re.compile(r'^<!-- written by `(python benchmarks/[\w.]+\.py[^`]*)`: rerun it to '
                    r'regenerate this table -->$')


def inclusions():
    """(page, table file, the page's text before the include) of every included table."""
    for page in sorted(DOCS.glob('*.md')):
        text = page.read_text()
        for match in INCLUDE.finditer(text):
            yield page, DOCS / match.group(1), text[:match.start()]


INCLUDED = list(inclusions())


def test_the_pages_include_benchmark_tables():
    assert {page.name for page, _, _ in INCLUDED} >= {'benchmarks.md'}
    assert len(INCLUDED) >= 5


def test_every_table_file_is_included_once_and_exists():
    files = [table for _, table, _ in INCLUDED]
    assert all(table.is_file() for table in files), [t for t in files if not t.is_file()]
    assert sorted(files) == sorted(TABLES.glob('*.md'))      # none left over, none twice


@pytest.mark.parametrize('page, table, before', INCLUDED,
                         ids=[f'{p.name}:{t.name}' for p, t, _ in INCLUDED])
def test_a_table_names_the_command_that_wrote_it_and_the_page_shows_it(page, table, before):
    lines = table.read_text().splitlines()
    header = HEADER.match(lines[0])
    assert header, f'{table.name} does not open with the command that wrote it'
    command = header.group(1)
    words = shlex.split(command)
    script = REPO_ROOT / words[1]
    assert script.is_file(), command
    assert words[words.index('--tables') + 1] == 'docs/tables', command
    # the benchmark writes a table of this name (benchmarks/tables.py's emit)
    name = table.stem
    source = script.read_text()
    written = re.findall(r"(?:emit|write)\(\s*f?'([\w{}]+)'", source)
    assert any(re.fullmatch(re.sub(r'\{\w+\}', r'\\w+', w), name) for w in written), \
        f'{script.name} writes no table named {name} (it writes {written})'
    # the page shows the command in the section above the table
    section = before[before.rfind('\n#'):]
    shown = [' '.join(shlex.split(line, comments=True))
             for block in bash_blocks(section) for line in block.replace('\\\n', ' ').splitlines()]
    assert ' '.join(words) in shown, f'{page.name} does not show `{command}` above {name}'
    # and the rest is one Markdown table
    body = [line for line in lines[1:] if line.strip()]
    assert len(body) >= 3 and all(line.startswith('|') for line in body)
    assert re.fullmatch(r'\|(---\|)+', body[1])


def test_a_benchmark_writes_the_table_the_docs_include(tmp_path):
    """benchmarks/linear_solvers.py, cut to one model and batch size, writes its table in
    the form docs/tables holds: the same columns, behind the command that wrote it."""
    bench = benchmark_module('linear_solvers')
    argv = ['--models', 'demo', '--systems', '1', '--tables', str(tmp_path)]
    assert bench.main(argv) == 0
    written = (tmp_path / 'linear_solvers.md').read_text().splitlines()
    shipped = (TABLES / 'linear_solvers.md').read_text().splitlines()
    assert written[0] == ('<!-- written by `python benchmarks/linear_solvers.py --models demo '
                          f'--systems 1 --tables {tmp_path}`: rerun it to regenerate this '
                          'table -->')
    assert written[2:4] == shipped[2:4]                      # the header row and rule
    assert written[4].startswith('| demo | ')


def test_tables_are_markdown_and_written_whole(tmp_path):
    tables = benchmark_module('tables')
    text = tables.emit('t', ['a', 'b'], [[1, 'x'], [2.5, 'y']], tmp_path, 'python benchmarks/x.py')
    assert text == '| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | y |\n'
    assert (tmp_path / 't.md').read_text() == \
        tables.HEADER.format(command='python benchmarks/x.py') + '\n\n' + text
    assert not list(tmp_path.glob('*.partial'))
    with pytest.raises(ValueError, match='every row needs 2 cells'):
        tables.markdown_table(['a', 'b'], [[1]])
    assert tables.command_line(['--x', 'a b'], 'y.py') == "python benchmarks/y.py --x 'a b'"
