"""Code blocks of a documentation page, as the tests that run them read them."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List


def bash_blocks(text: str) -> List[str]:
    """The ```bash blocks of a Markdown page, in order (```console blocks are shown, not
    run)."""
    return re.findall(r'^```bash\n(.*?)^```', text, flags=re.S | re.M)


def python_block(page: Path, first_line: str) -> str:
    """The ```python block of ``page`` whose first line is ``first_line``."""
    for block in re.findall(r'^```python\n(.*?)^```', page.read_text(), flags=re.S | re.M):
        if block.startswith(first_line + '\n'):
            return block
    raise AssertionError(f'no python block starting with {first_line!r} in {page}')
