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
