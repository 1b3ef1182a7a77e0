"""HDF5 files as smilfit reads and writes them: a damaged file is an error that names it,
never a traceback from inside h5py or numbers read silently wrong.

- :func:`read_h5` opens a file for reading (and :func:`reading` guards the reads of a file
  kept open); an error h5py raises while the file is read (a truncated copy, a damaged
  header, a chunk whose checksum fails) becomes a :class:`DamagedFileError` naming the
  file and what it was read as.
- :func:`checksum_options` gives the options that make HDF5 store a Fletcher-32 checksum
  with every chunk of a numeric dataset, so a flipped byte in the numbers fails the read
  instead of moving a keypoint by a fraction of a pixel. smilfit's writers use it for every
  numeric array they write (strings, image blobs and scalars cannot carry one); files
  written before have none and read as before.
- :data:`CHECKSUMMED_METADATA` is the format fit results are written in (HDF5 1.10's):
  its metadata (dataset headers, chunk indices) carry checksums too, so a changed byte
  there is an error on reading, not numbers read back changed. Reading it needs HDF5 1.10
  or newer (h5py 2.8 and newer ship it). Prepared datasets keep HDF5's original format:
  their writer resumes a partial file left by a killed run, and HDF5 1.10's format refuses
  to open such a file (it stays marked as open for writing).
- :func:`missing_chunks` finds chunks a damaged index lost, which HDF5 would read as zeros
  with no checksum to fail; ``read_h5(..., written_whole=True)`` refuses such a file.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, Sequence, Tuple, Union

import h5py
import numpy as np

from smilfit.errors import SmilfitUserError

PathLike = Union[str, os.PathLike]


class DamagedFileError(SmilfitUserError, ValueError):
    """An HDF5 file could not be read: truncated, damaged or not what it was read as. The
    message names the file and h5py's reason, on one line."""


#: ``h5py.File(..., 'w', libver=CHECKSUMMED_METADATA)``: the format of fit results.
CHECKSUMMED_METADATA = ('v110', 'latest')


def raised_by_h5py(err: BaseException) -> bool:
    """Whether ``err`` was raised inside h5py (its innermost frame is h5py's code)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get('__name__', ''))
    filename = Path(tb.tb_frame.f_code.co_filename).parts
    return module.split('.')[0] == 'h5py' or 'h5py' in filename


#: h5py's object classes as Python's messages name them ("'Datatype' object is not
#: subscriptable").
_H5PY_KINDS = re.compile(r"'(Datatype|Group|Dataset|File|Empty)' object")


def _reason(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return ' '.join(text.split()) or type(err).__name__


def _damaged(path: PathLike, what: str, err: BaseException) -> DamagedFileError:
    return DamagedFileError(f'{path}: cannot read {what}: {_reason(err)} (the file is '
                            f'truncated or damaged, or not {what})')


@contextlib.contextmanager
def reading(path: PathLike, what: str) -> Iterator[None]:
    """A block that reads the open file ``path``: an error h5py raises in it
    (``OSError``, ``RuntimeError``, ``KeyError``, ``ValueError``), and a text attribute
    that is not the JSON it should be (``JSONDecodeError``, ``UnicodeDecodeError``,
    ``RecursionError``), and an h5py object of another kind than the block expects (a
    ``TypeError``/``AttributeError`` naming h5py's class) become :class:`DamagedFileError`
    ``'<path>: cannot read <what>: <reason> (the file is truncated or damaged, or not
    <what>)'``; other errors the block raises pass through."""
    try:
        yield
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        # (the file's text attributes: JSON written by smilfit, damaged since)
        raise _damaged(path, what, err) from err
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        if isinstance(err, SmilfitUserError) or not raised_by_h5py(err):
            raise
        raise _damaged(path, what, err) from err
    except (TypeError, AttributeError) as err:
        # A damaged link can lead to an object of another kind than written (a committed
        # datatype where a group was): using it as a group or array fails in the reader's
        # own code, naming h5py's class.
        if not _H5PY_KINDS.search(str(err)):
            raise
        raise _damaged(path, what, err) from err


def missing_chunks(f: h5py.File) -> Dict[str, Tuple[int, int]]:
    """``{dataset: (chunks stored where its shape needs them, chunks it needs)}`` for the
    chunked datasets of ``f`` that lack some. In a file written whole that is damage: HDF5
    reads a chunk its index does not list (or lists at another place) as the fill value
    (zeros), without an error or a checksum to fail."""
    short: Dict[str, Tuple[int, int]] = {}

    def visit(name: str, obj) -> None:
        if not (isinstance(obj, h5py.Dataset) and obj.chunks is not None and obj.shape):
            return
        grid = [-(-n // c) for n, c in zip(obj.shape, obj.chunks)]
        need = math.prod(grid)
        offsets = set()
        try:
            obj.id.chunk_iter(lambda info: offsets.add(tuple(info.chunk_offset)))
        except (AttributeError, NotImplementedError):   # (HDF5 before 1.12.3)
            offsets = {tuple(obj.id.get_chunk_info(i).chunk_offset)
                       for i in range(obj.id.get_num_chunks())}
        have = sum(all(o % c == 0 and o < n for o, c, n in zip(off, obj.chunks, obj.shape))
                   for off in offsets)
        if have != need:
            short[name] = (have, need)
    f.visititems(visit)
    return short


@contextlib.contextmanager
def read_h5(path: PathLike, what: str, written_whole: bool = False) -> Iterator[h5py.File]:
    """``h5py.File(path, 'r')`` for a ``with`` block, read under :func:`reading`: a file
    h5py cannot open, or fails to read inside the block, is a :class:`DamagedFileError`
    naming it.

    Args:
        path: the file.
        what: what it is read as, for the message (e.g. ``'fit results'``).
        written_whole: the file is one smilfit writes in one go (fit results, network
            predictions), so every chunk of every dataset must be stored
            (:func:`missing_chunks`); checked on opening.

    Raises:
        FileNotFoundError: ``path`` is not a file.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f'{path}: no such file ({what})')
    try:
        f = h5py.File(path, 'r')
    except OSError as err:
        raise _damaged(path, what, err) from err
    with reading(path, what), f:
        short = missing_chunks(f) if written_whole else {}
        if short:
            name, (have, need) = next(iter(short.items()))
            raise DamagedFileError(f'{path}: cannot read {what}: {name!r} has {have} of its '
                                   f'{need} chunks (the file is truncated or damaged)')
        yield f


def checksum_options(dtype: Any, shape: Sequence[int] = (1,)) -> Dict[str, Any]:
    """``create_dataset`` options storing a Fletcher-32 checksum with every chunk: for
    numeric and boolean arrays (``{'fletcher32': True}``); ``{}`` for strings and other
    variable-length data and for scalars, which HDF5 cannot filter."""
    kind = np.dtype(dtype).kind if not isinstance(dtype, h5py.Datatype) else 'O'
    if kind in 'biuf' and len(tuple(shape)) > 0:
        return {'fletcher32': True}
    return {}


def create_checked(group: h5py.Group, name: str, data: Any = None, **kwargs) -> h5py.Dataset:
    """``group.create_dataset(name, data=data, **kwargs)`` with a checksum per chunk where
    the data can carry one (:func:`checksum_options`; ``kwargs`` may give ``dtype`` and
    ``shape`` instead of ``data``)."""
    dtype = kwargs.get('dtype')
    if dtype is None:
        dtype = np.asarray(data).dtype
    shape = kwargs.get('shape', np.shape(data) if data is not None else ())
    return group.create_dataset(name, data=data, **kwargs, **checksum_options(dtype, shape))


__all__ = ['CHECKSUMMED_METADATA', 'DamagedFileError', 'read_h5', 'reading', 'raised_by_h5py',
           'missing_chunks', 'checksum_options', 'create_checked']
