"""Atomic file writes: a file appears whole under its name, or not at all.

Everything smilfit writes for a user (fit results, model files, checkpoints, reports, datasets,
videos, ``.slp`` files) goes through this module: :func:`atomic_path` or :func:`atomic_open` for a
file written in one go, :func:`publish` for a streaming writer that owns its temporary file (a
dataset resumed across runs, a video encoder), :func:`atomic_dir` for a folder. The data goes to a temporary file in the same directory
(so the final ``os.replace`` is a rename on one file system), is flushed to disk, and only then
takes the final name. A crash or ``kill -9`` mid-write leaves the old file (or none) and at most a
hidden ``.NAME.*.tmp`` file, never a truncated file under the real name.

The temporary file is created with mode ``0o666`` filtered by the process umask, as ``open()``
would create it: ``tempfile.mkstemp`` creates ``0o600`` files, which collaborators on a shared lab
server cannot read.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import os.path as osp
from typing import IO, Any, Dict, Iterator, Optional, Union

PathLike = Union[str, 'os.PathLike[str]']

__all__ = ['atomic_path', 'atomic_open', 'atomic_dir', 'publish', 'temp_beside', 'save_npz',
           'load_npz_whole', 'write_text']


def temp_beside(final: PathLike, suffix: str = '') -> str:
    """Create an empty, umask-honouring temporary file beside ``final`` (its name ending in
    ``suffix``), one of this process's own (two processes writing one file do not share
    it); return its path. For a streaming writer to fill and :func:`publish`."""
    directory, name = osp.split(osp.abspath(os.fspath(final)))
    for attempt in range(100):
        tmp = osp.join(directory, f'.{name}.{os.getpid()}.{attempt}.tmp{suffix}')
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f'could not create a temporary file beside {final}')


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: PathLike, path: PathLike) -> None:
    """Give the finished file ``tmp`` the name ``path``: flushed to disk, then renamed (both
    in one directory, so the rename is atomic). For writers that stream into a temporary
    file of their own across calls."""
    _fsync(os.fspath(tmp))
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = '') -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    For writers that take a path (``torch.save``, ``h5py.File``, ``np.savez``, ``cv2``): write the
    whole file to the yielded path inside the ``with`` block. On an exception the temporary file
    is removed and ``path`` is left as it was.

    ``suffix`` ends the temporary name, for writers that read the format from it (``.slp``).
    Note: ``np.savez`` appends ``.npz`` to names without it; pass it a file object from
    :func:`atomic_open` instead.
    """
    final = os.fspath(path)
    tmp = temp_beside(final, suffix)
    try:
        yield tmp
        publish(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = 'w', **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` whose result takes the name ``path`` only once it is complete.

    ``mode`` must write from scratch (``'w'``, ``'wb'``, ``'wt'``); ``kwargs`` go to ``open``.
    """
    if not mode.startswith('w') or '+' in mode:
        raise ValueError(f"atomic_open writes whole files: mode must be 'w', 'wt' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f


def save_npz(path: PathLike, arrays) -> None:
    """``np.savez(path, **arrays)`` atomically, under exactly the name ``path``."""
    import numpy as np
    with atomic_open(path, 'wb') as f:
        np.savez(f, **arrays)


def load_npz_whole(path: PathLike) -> Optional[Dict[str, Any]]:
    """Every array of the ``.npz`` file at ``path`` (no pickles), or ``None`` when it is
    missing or cannot be read whole (cut short, damaged): what a resumed run reads of the
    files it wrote itself, to redo the work of one that is not intact."""
    import zipfile
    import zlib

    import numpy as np
    try:
        # the file opened here, so that it is closed when numpy cannot read it as a zip
        # (np.load leaves its own handle open then)
        with open(path, 'rb') as handle, np.load(handle, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error):
        return None


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, 'w', encoding='utf-8') as f:
        f.write(text)


@contextlib.contextmanager
def atomic_dir(path: PathLike, replace: bool = False) -> Iterator[str]:
    """Yield a temporary directory to fill; on success it is renamed to ``path``. Created
    with ``os.mkdir`` so the user's umask applies (``mkdtemp`` makes ``0o700``
    directories). On an exception the temporary directory is removed.

    ``path`` must not exist, unless ``replace``: then an existing ``path`` is moved aside
    just before the rename and deleted after it (the folder is the old one or the whole new
    one at every moment but the instant between two renames)."""
    final = os.path.abspath(os.fspath(path))
    if not replace and osp.lexists(final):
        raise FileExistsError(f'{final} exists')
    tmp = _make_dir_beside(final, 'tmp')
    try:
        yield tmp
        if replace and osp.lexists(final):
            old = _make_dir_beside(final, 'old')
            os.rmdir(old)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _make_dir_beside(final: str, kind: str) -> str:
    """Create an empty hidden directory beside ``final``; return its path."""
    directory, name = osp.split(final)
    for attempt in range(100):
        tmp = osp.join(directory, f'.{name}.{os.getpid()}.{attempt}.{kind}')
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f'could not create a temporary directory beside {final}')
