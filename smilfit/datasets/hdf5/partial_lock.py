"""One writer per dataset: the lock a :class:`~.writer.DatasetWriter` holds on its
partial file (``<path>.partial``) from creating it to publishing or removing it.

Two processes writing the same dataset (a SLURM array of configs over one recording that
all prepare its ``data.path``, two benchmark runs sharing an output folder) would
otherwise share one partial file: the second would take the first's file for one a killed
run left and start it again, and the first would then publish the second's half-written
file under ``path``. A writer holds an exclusive lock on its partial file instead, so a
second one raises :class:`DatasetBusyError` naming the file, and :func:`wait_for_writer`
waits until the holder is done. A partial file nobody holds is one a killed run left.

The lock is the operating system's ``flock``: released when its process ends, by
``kill -9`` too, and kept by the server on NFS (Linux maps it to a byte-range lock there).
It is not HDF5's own file locking, which ``HDF5_USE_FILE_LOCKING=FALSE`` (common on network
file systems) turns off, and which the writer turns off for the file it holds (HDF5 would
find the file locked by this lock). Where ``fcntl`` does not exist (Windows) there is no
lock, and two writers of one dataset must be kept apart by the user.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from smilfit.errors import SmilfitUserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class DatasetBusyError(SmilfitUserError, RuntimeError):
    """Another process is writing the dataset (it holds the lock on its partial file)."""


def _busy(partial: Path) -> DatasetBusyError:
    return DatasetBusyError(
        f'another process is writing {partial.with_suffix("")} (its partial file '
        f'{partial} is locked): wait for it to finish, or write to another path')


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


class PartialFileLock:
    """The exclusive lock on one partial file, which :meth:`acquire` creates if missing.

    Args:
        partial: the partial file's path.
    """

    def __init__(self, partial: Path) -> None:
        self.partial = Path(partial)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Lock the partial file, creating it empty where there is none; return whether it
        already held something (left by an earlier run that nobody continues now).

        Raises:
            DatasetBusyError: another process holds it.
        """
        if self._fd is not None:
            raise RuntimeError(f'{self.partial} is already locked by this writer')
        for _ in range(100):
            try:
                fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                try:
                    fd = os.open(self.partial, os.O_RDWR)
                except FileNotFoundError:
                    continue                   # its writer published or removed it just now
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise _busy(self.partial) from None
            # the file opened may have been published or removed by its writer before the
            # lock was granted: then the lock holds a file no longer at this path
            if _same_file(fd, self.partial):
                self._fd = fd
                return os.fstat(fd).st_size > 0
            os.close(fd)
        raise _busy(self.partial)

    def release(self) -> None:
        """Give the lock up (after the file was published, removed or kept for a resume)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            # unlocked explicitly: processes forked while it was held (a pool of workers)
            # share the descriptor, and closing this copy alone would not release it
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def writer_active(partial: Path) -> bool:
    """Whether a live process holds ``partial`` (a writer is writing its dataset now)."""
    if fcntl is None:  # pragma: no cover - Windows
        return False
    try:
        fd = os.open(partial, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def wait_for_writer(partial: Path, timeout_s: float, poll_s: float = 0.5) -> None:
    """Wait until no process holds ``partial`` (its writer published, removed or gave up
    its file).

    Raises:
        TimeoutError: it is still held after ``timeout_s`` seconds.
    """
    start = time.monotonic()
    while writer_active(Path(partial)):
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f'{partial} is still being written after {timeout_s:.0f} s')
        time.sleep(poll_s)


__all__ = ['DatasetBusyError', 'PartialFileLock', 'writer_active', 'wait_for_writer']
