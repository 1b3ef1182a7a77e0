"""User-facing text says what a thing does and why, not where it came from: no tracker
numbers (the word for a tracker item, or "#", with a number) and no commit hashes in the
README, the documentation pages, the package, the tools, the benchmarks, the configs, or
the names and docstrings of the tests. The changelog, where history belongs, may name the
commits that benchmarks compare against, but no tracker numbers either."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from ..conftest import REPO_ROOT

TRACKER = re.compile(r'\b(?:[Ii]ssues?|PR|[Pp]ull request|[Tt]icket)\s*#?\d+\b'
                     r'|(?<![\w&/\'"])#\d{1,4}\b')
#: 7 to 40 lowercase hex characters with a digit and a letter, standing alone (not in a
#: path, a name, a number or a colour).
COMMIT = re.compile(r'(?<![\w./#-])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![\w.-])')
#: Where history is told: it may name the commits that benchmarks compare against.
HISTORY = {Path('docs') / 'changelog.md'}
TEXT_SUFFIXES = ('.py', '.md', '.sh', '.csv', '.txt', '.toml', '.cfg', '.ipynb', '.json')


def findings(text: str):
    return [m.group(0) for pattern in (TRACKER, COMMIT) for m in pattern.finditer(text)]


def _text(path: Path) -> str:
    if path.suffix == '.ipynb':       # cell sources, not the JSON (cell ids are hex)
        return '\n'.join(''.join(c['source']) for c in json.loads(path.read_text())['cells'])
    return path.read_text(errors='replace')


def user_facing_files():
    yield REPO_ROOT / 'README.md'
    for root in ('docs', 'smilfit', 'tools', 'benchmarks', 'configs'):
        for path in sorted((REPO_ROOT / root).rglob('*')):
            rel = path.relative_to(REPO_ROOT)
            if (path.is_file() and path.suffix in TEXT_SUFFIXES and rel not in HISTORY
                    and '_build' not in rel.parts):
                yield path


def test_the_patterns_catch_references_and_spare_code():
    item = 'issue'      # spelt out at run time: this file cites no tracker item itself
    assert findings(f'the code before {item} 16, see {item.title()} #13 and #18') == \
        [f'{item} 16', f'{item.title()} #13', '#18']
    assert findings('against `362b364` (commit 02fc222)') == ['362b364', '02fc222']
    assert findings("colour '#1f77b4', 0x7fffffff, 1e-6, float32, a/b/3da7daf1.png, "
                    "deadbeef, 1234567, step #1f, # 16 px") == []


def test_no_tracker_numbers_or_commit_hashes_in_user_facing_text():
    found = []
    for path in user_facing_files():
        for number, line in enumerate(_text(path).splitlines(), 1):
            found += [f'{path.relative_to(REPO_ROOT)}:{number}: {hit}' for hit in findings(line)]
    assert not found, '\n'.join(found)


def test_the_changelog_names_commits_but_no_tracker_numbers():
    text = (REPO_ROOT / 'docs' / 'changelog.md').read_text()
    assert TRACKER.findall(text) == []
    assert COMMIT.search(text)            # the baselines' revisions are there


def _test_texts(path: Path):
    """(what, text) of a test module: its docstring, and each function's and class's name
    and docstring."""
    tree = ast.parse(path.read_text())
    yield 'module docstring', ast.get_docstring(tree) or ''
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield f'{node.name}', node.name.replace('_', ' ')
            yield f'{node.name} docstring', ast.get_docstring(node) or ''


@pytest.mark.parametrize('folder', ['.'] + sorted(
    p.name for p in (REPO_ROOT / 'tests').iterdir() if p.is_dir() and not p.name.startswith('_')))
def test_no_tracker_numbers_in_test_names_and_docstrings(folder):
    found = []
    root = REPO_ROOT / 'tests' / folder
    for path in sorted(root.glob('test_*.py') if folder == '.' else root.rglob('test_*.py')):
        if path.name == Path(__file__).name:
            continue                  # this module's examples are what it must catch
        for what, text in _test_texts(path):
            found += [f'{path.relative_to(REPO_ROOT)} ({what}): {hit}'
                      for hit in findings(text)]
    assert not found, '\n'.join(found)
