"""Every ``python tools/X.py ...`` command in the README's and the documentation's bash
blocks names a tool that exists, with options and arguments its parser accepts, and config
files of this checkout: a renamed option or a moved config breaks the test, not a reader's
first try. (Pages run whole by other tests: docs/sleap_session.md, docs/real_recordings.md.)"""
from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from ..conftest import REPO_ROOT
from .page_blocks import bash_blocks

PAGES = [REPO_ROOT / 'README.md', *sorted((REPO_ROOT / 'docs').glob('*.md'))]
#: tools/<name>.py -> the smilfit.cli module whose parser it runs (the file's own import).
TOOL_IMPORT = re.compile(r'from (smilfit\.cli\.\w+) import main')
#: Shell words that end a command (a pipe, a list, a redirection).
SHELL_OPERATORS = {'|', '||', '&&', ';', '>', '>>', '<', '2>', '&'}


def page_commands(page: Path) -> Iterator[Tuple[str, List[str]]]:
    """``(tool name, its arguments)`` of every ``python tools/X.py`` command of ``page``'s
    bash blocks (continued lines joined, comments and what follows a shell operator
    dropped)."""
    for block in bash_blocks(page.read_text()):
        for line in block.replace('\\\n', ' ').splitlines():
            words = shlex.split(line, comments=True)
            for start, word in enumerate(words[:-1]):
                if word in ('python', 'python3') and words[start + 1].startswith('tools/'):
                    args = []
                    for w in words[start + 2:]:
                        if w in SHELL_OPERATORS:
                            break
                        args.append(w)
                    yield words[start + 1], args


def parser_of(tool: str) -> argparse.ArgumentParser:
    """The argument parser ``tools/<tool>`` runs."""
    text = (REPO_ROOT / tool).read_text()
    module = importlib.import_module(TOOL_IMPORT.search(text).group(1))
    build = getattr(module, 'build_parser', None) or getattr(module, '_parser')
    return build()


COMMANDS = [(page, tool, args) for page in PAGES for tool, args in page_commands(page)]


def test_the_pages_have_commands_to_check():
    pages = {page.name for page, _, _ in COMMANDS}
    assert {'README.md', 'real_recordings.md', 'training.md', 'fitting.md'} <= pages
    assert len(COMMANDS) > 50


@pytest.mark.parametrize('page, tool, args', COMMANDS,
                         ids=[f'{p.name}:{t}:{i}' for i, (p, t, _) in enumerate(COMMANDS)])
def test_a_page_command_parses_with_its_tool(page, tool, args):
    assert (REPO_ROOT / tool).is_file(), f'{page.name}: {tool} does not exist'
    parser = parser_of(tool)
    try:
        parser.parse_args(args)
    except SystemExit as err:
        if err.code != 0:     # (--help exits 0)
            pytest.fail(f'{page.name}: {tool} refuses {shlex.join(args)}')
    for arg in args:
        if re.fullmatch(r'configs/\S+\.py', arg):
            assert (REPO_ROOT / arg).is_file(), f'{page.name}: {arg} does not exist'


def test_a_renamed_option_is_caught():
    """The check itself: an option the tool does not have is refused."""
    with pytest.raises(SystemExit):
        parser_of('tools/fit.py').parse_args(['configs/fitting/mouse_multiview.py',
                                              '--no-such-option'])
