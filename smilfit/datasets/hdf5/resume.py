"""Continuing an interrupted write: which partial file a resumed writer may continue
(:func:`recover_partial`: the file itself when it was left consistent, else its last
checkpoint, else none) and whether it matches what the writer is asked to write
(:func:`check_resumable`)."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any, List, Mapping, Sequence, Set, Tuple

import h5py
import numpy as np

from .layout import attr_value
from .schema import DatasetFormatError, _partial_problem, _str_list, check_header


def recover_partial(partial: Path, checkpoint: Path) -> bool:
    """Make ``partial`` a file that can be continued, and say whether it is one: keep it
    when it is marked consistent, else restore the last ``checkpoint`` into it; else
    (``False``: start again) remove the checkpoint. The partial file itself stays, emptied
    by its writer, which holds its lock."""
    problem = _partial_problem(partial)
    if problem is None:
        return True
    if checkpoint.exists() and _partial_problem(checkpoint) is None:
        warnings.warn(f'{partial} is damaged ({problem}: the run was killed '
                      'mid-write); resuming from its last checkpoint '
                      f'{checkpoint}')
        shutil.copyfile(checkpoint, partial)   # into the held file, not a new one
        return True
    warnings.warn(f'{partial} cannot be continued ({problem}: the run was '
                  'killed mid-write) and has no usable checkpoint; starting again')
    if checkpoint.exists():
        checkpoint.unlink()
    return False


def check_resumable(f: h5py.File, source: Path, keypoint_names: Sequence[str],
                    num_views: int, attrs: Mapping[str, Any]
                    ) -> Tuple[List[str], Set[Tuple[str, int, int]]]:
    """Check that the open file ``f`` (read from ``source``) can be continued with these
    keypoint names, view count and root attributes.

    Returns:
        The file's session names and the ``(session name, frame, instance)`` of every
        sample already written.

    Raises:
        DatasetFormatError: not a dataset, or the names, views or an attribute differ.
    """
    check_header(f, source, allow_incomplete=True)
    names = _str_list(f['keypoint_names'])
    if names != list(keypoint_names):
        raise DatasetFormatError(f'{source}: cannot resume: keypoint_names differ '
                                 f'(file {names}, given {list(keypoint_names)})')
    if int(f.attrs['num_views']) != num_views:
        raise DatasetFormatError(f"{source}: cannot resume: num_views differ (file "
                                 f"{int(f.attrs['num_views'])}, given {num_views})")
    for k, v in attrs.items():
        stored = f.attrs.get(k)
        if isinstance(stored, bytes):
            stored = stored.decode()
        if stored is not None and attr_value(v) != stored and \
                not np.array_equal(np.asarray(stored), np.asarray(attr_value(v))):
            raise DatasetFormatError(f'{source}: cannot resume: attribute {k!r} differs '
                                     f'(file {stored!r}, given {attr_value(v)!r})')
    session_names = _str_list(f['sessions/names'])
    sess = f['samples/session'][()]
    frames = f['samples/frame'][()]
    inst = f['samples/instance'][()]
    keys = {(session_names[int(s)], int(fr), int(i)) for s, fr, i in zip(sess, frames, inst)}
    return session_names, keys


__all__ = ['recover_partial', 'check_resumable']
