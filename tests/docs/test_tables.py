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


def benchmark_source(script):
    """The text of a benchmark script and of the benchmark modules beside it that it
    imports (a driver's tables may be written by its steps' modules)."""
    source = script.read_text()
    siblings = re.findall(r'^(?:from|import) (\w+)', source, re.M)
    return '\n'.join([source] + [(script.parent / f'{name}.py').read_text()
                                 for name in siblings if (script.parent / f'{name}.py').is_file()])


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
    written = re.findall(r"(?:emit|write)\(\s*f?'([\w{}]+)'", benchmark_source(script))
    assert any(re.fullmatch(re.sub(r'\{\w+\}', r'\\w*', w), name) for w in written), \
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


def test_the_fitting_benchmark_writes_its_synthetic_table(tmp_path):
    """benchmarks/fitting.py on the demo model, a few frames: one row per case and mode,
    the batched fit's error below DLT's with noise, the loop's frames as asked."""
    bench = benchmark_module('fitting')
    argv = ['--model', 'demo', '--frames', '3', '--loop-frames', '1', '--repeats', '1',
            '--tables', str(tmp_path)]
    assert bench.main(argv) == 0
    lines = (tmp_path / 'fitting_demo_cpu.md').read_text().splitlines()
    assert lines[0].startswith('<!-- written by `python benchmarks/fitting.py --model demo ')
    rows = [[cell.strip() for cell in line.strip('|').split('|')] for line in lines[4:]]
    assert [row[:3] for row in rows] == [
        ['noise-free', 'batched per-sample', '3'], ['noise-free', 'per-frame loop', '1'],
        ['2 px, 20 % missing', 'batched per-sample', '3'],
        ['2 px, 20 % missing', 'per-frame loop', '1']]
    assert float(rows[0][6]) < 0.01                       # noise-free: recovered
    assert float(rows[2][6]) < float(rows[2][7])          # noisy: better than DLT


def test_the_fitting_benchmark_totals_both_sides_of_a_revision(tmp_path):
    """The mouse-session table against another revision: one row per fit, then the
    total, whose speed-up is the summed seconds' ratio and whose errors are the held-out
    fits' means (the fits' reports are made up here; the real ones come from two
    checkouts)."""
    against = benchmark_module('fitting_against')
    fits = list(against.SESSION_FITS)
    reports = {side: {name: dict(wall=w * (i + 1), cpu=w * (i + 1))
                      for i, name in enumerate(fits)} for side, w in (('before', 4.0),
                                                                       ('after', 1.0))}
    errors = {side: {name: e + i for i, name in enumerate(fits)}
              for side, e in (('before', 2.0), ('after', 1.0))}
    against._print_session_table('REV', [('idle', reports, errors)], tmp_path, 'python x')
    lines = (tmp_path / 'fitting_mouse_session.md').read_text().splitlines()
    rows = [[cell.strip() for cell in line.strip('|').split('|')] for line in lines[4:]]
    assert len(rows) == len(fits) + 1
    assert rows[0][1] == 'all 4 views (error in the good views)'
    total = rows[-1]
    assert total[1] == '**total**' and total[4].startswith('**4.0x**')
    held = [errors['before'][name] for name in fits[1:]]
    assert total[5] == f'held-out mean {sum(held) / len(held):.2f}'
    runs = [dict(wall=3.0, cpu=2.0, peak_mb=900.0), dict(wall=5.0, cpu=4.0, peak_mb=1000.0)]
    against._print_end_to_end('REV', [('busy', {'before': runs, 'after': [
        dict(wall=1.0, cpu=1.0, peak_mb=800.0)] * 2})], tmp_path, 'python x')
    row = (tmp_path / 'fitting_mouse_session_end_to_end.md').read_text().splitlines()[-1]
    assert row == '| busy | 2 | 4.0 (3.0) | 1.0 (1.0) | 4.00x, 3.00x | 950 -> 800 |'


def test_the_fitting_benchmark_finds_the_baselines_the_changelog_names(tmp_path):
    """``--before first-fitter`` checks out the revision the changelog's table of
    baselines gives that name: rows whose name is in backticks, nothing where the table
    or the file is missing."""
    against = benchmark_module('fitting_against')
    named = against.baselines()
    assert set(named) >= {'first-fitter', 'before-per-animal-shape'}
    assert all(re.fullmatch(r'[0-9a-f]{7,40}', rev) for rev in named.values())
    table = tmp_path / 'changelog.md'
    table.write_text('| name | revision | what |\n|---|---|---|\n'
                     '| `a-name`: text | `abc1234` (2026-01-01) | x |\n| plain | `def5678` | y |\n')
    assert against.baselines(table) == {'a-name': 'abc1234'}
    assert against.baselines(tmp_path / 'missing.md') == {}


#: Pages whose figures are all written by the benchmarks: a table typed there is a figure
#: nobody can regenerate from the command above it.
GENERATED_PAGES = ('benchmarks.md', 'real_recordings.md')
#: A measured figure in a table row (an index of scripts or configs has none).
FIGURE = re.compile(r'\d\.\d')


@pytest.mark.parametrize('name', GENERATED_PAGES)
def test_the_pages_figures_are_in_included_tables_not_typed(name):
    text = re.sub(r'```.*?```', '', (DOCS / name).read_text(), flags=re.S)
    typed = [line for line in text.splitlines()
             if line.startswith('|') and FIGURE.search(line)]
    assert not typed, f'{name}: typed table rows with figures: {typed[:3]}'
