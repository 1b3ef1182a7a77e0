"""Shipped configs say what each part is, in a line or two: a user changing one reads
what to change, not the measurements behind it (those are in the docs, e.g. "Why these
settings" in docs/fitting.md)."""
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / 'configs').rglob('*.py'))
MAX_LINES = 60
#: Comments up to this many lines are fine whatever the code's length (a header).
FREE_COMMENT_LINES = 10


def comment_and_code_lines(text: str):
    """(full-line comments, code lines) of a config's text; blank lines count as neither."""
    lines = [line.strip() for line in text.splitlines()]
    comments = sum(line.startswith('#') for line in lines)
    code = sum(bool(line) and not line.startswith('#') for line in lines)
    return comments, code


def test_comment_and_code_lines_are_told_apart():
    assert comment_and_code_lines('# a\n\nx = 1  # b\n    # c\ny = dict(\n)\n') == (2, 3)


@pytest.mark.parametrize('path', CONFIGS, ids=[str(p.relative_to(REPO_ROOT)) for p in CONFIGS])
def test_a_config_is_short_and_mostly_code(path: Path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_LINES, f'{path.name}: over {MAX_LINES} lines'
    comments, code = comment_and_code_lines(text)
    assert comments <= FREE_COMMENT_LINES or comments <= code, \
        f'{path.name}: {comments} comment lines against {code} of code'
