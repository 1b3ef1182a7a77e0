"""The base class of errors that are the user's to fix.

An error derived from :class:`SmilfitUserError` has a complete message: it names the file,
key or field and says what is wrong (and, where there is one, what to do). The command-line
tools print such an error as one line, ``TOOL: error: MESSAGE``, with exit code 1, even when
it is raised deep inside a run (a training loop, a checkpoint load); any other exception is a
bug and keeps its traceback (:mod:`smilfit.cli.errors`).

Subclasses usually also derive from the built-in type callers already catch, e.g.
``class CheckpointError(SmilfitUserError, ValueError)``. This module imports nothing, so
any module may use it without import cost or cycles.
"""

__all__ = ['SmilfitUserError']


class SmilfitUserError(Exception):
    """Bad input, a bad file or a bad option; the message is all the user needs."""
