"""Command-line entry points; ``tools/*.py`` are thin wrappers around these."""
import os
import sys

__all__ = ['prog_name']


def prog_name(tool: str) -> str:
    """The name a tool's usage line shows: ``tools/<tool>.py`` when run from the repository's
    ``tools/`` folder, else the command as invoked (e.g. the ``smilfit-<tool>`` console
    script)."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ''
    if invoked == f'{tool}.py' or not invoked or invoked in ('-c', '__main__.py'):
        return f'tools/{tool}.py'
    return invoked
