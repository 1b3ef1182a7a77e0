"""The README's package map stays true to the tree."""
import re

from .conftest import REPO_ROOT


def _package_map() -> str:
    text = (REPO_ROOT / 'README.md').read_text()
    return text[text.index('## Package map'):text.index('## Licence')]


def test_every_subpackage_and_tool_is_on_the_map():
    block = _package_map()
    packages = sorted(p.name for p in (REPO_ROOT / 'smilfit').iterdir()
                      if p.is_dir() and (p / '__init__.py').exists())
    missing = [p for p in packages if not re.search(rf'^\s+{p}/', block, re.M)]
    assert not missing, missing
    tools = sorted(p.name for p in (REPO_ROOT / 'tools').iterdir() if p.suffix in ('.py', '.sh'))
    assert [t for t in tools if t not in block] == []
    mapped = set(re.findall(r'^\s+(\w+)/', block, re.M)) - {'configs', 'tests'}
    stale = [p for p in mapped if p not in packages and not (REPO_ROOT / p).exists()]
    assert not stale, stale


def _setup_commands():
    """The commands of the README's 'Set up and test' block, comments stripped."""
    text = (REPO_ROOT / 'README.md').read_text()
    section = text[text.index('## Set up and test'):]
    block = section[section.index('```bash') + len('```bash'):]
    block = block[:block.index('```')]
    return [line.split('#')[0].strip() for line in block.strip().splitlines()]


def test_ci_runs_the_readmes_install_and_test_commands():
    install, test = _setup_commands()
    assert install.startswith('pip install') and test.startswith('python -m pytest')
    ci = (REPO_ROOT / '.ci' / 'run').read_text()
    # (CI's pip is `python -m pip`, the same install)
    assert install.replace('pip install', 'python -m pip install --quiet', 1) in ci
    assert re.search(rf'^{re.escape(test)} \|\| status=\$\?$', ci, re.M), \
        f'.ci/run does not run the README test command {test!r}'


def test_the_suite_can_run_in_parallel_as_the_readme_says():
    """The README's test command passes -n (pytest-xdist), which the dev extra must install
    and constraints.txt pin."""
    _, test = _setup_commands()
    assert ' -n ' in f'{test} '
    assert "'pytest-xdist" in (REPO_ROOT / 'setup.py').read_text()
    assert re.search(r'^pytest-xdist==', (REPO_ROOT / 'constraints.txt').read_text(), re.M)
