"""The HDF5 dataset schema in code (``docs/hdf5_schema.md`` in prose) and the file header:
format name and version, per-sample fields, partial files and their checks."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import h5py
import numpy as np

from smilfit.body_models.parameters import DATASET_PARAMS
from smilfit.errors import SmilfitUserError
from smilfit.version import __version__ as _SMILFIT_VERSION

#: Value of the root attribute ``format``; files without it are refused.
FORMAT_NAME = 'smilfit-dataset'
#: Schema version written by this code; readers refuse newer versions.
SCHEMA_VERSION = 1
#: Suffix of the temporary file a :class:`DatasetWriter` writes before committing.
PARTIAL_SUFFIX = '.partial'
#: Samples per HDF5 chunk along N (batch reads touch few chunks).
DEFAULT_CHUNK_SAMPLES = 32
#: Names of ground-truth body-model parameters stored under ``params/`` (others allowed).
PARAM_NAMES = DATASET_PARAMS
#: Root attribute of a partial file: True only while the file on disk is flushed at a
#: boundary between batches (a checkpoint being copied, or a run that stopped cleanly).
#: A resumed run sets it False before writing, so a partial file left by ``kill -9`` says
#: False and is not trusted (its last checkpoint is used instead).
CONSISTENT_ATTR = 'partial_consistent'
#: Root attributes owned by the writer (``attrs=`` may not set them).
RESERVED_ATTRS = ('format', 'schema_version', 'created_by', 'smilfit_version', 'source',
                  'units', 'num_views', 'complete', 'created_at', CONSISTENT_ATTR)

PathLike = Union[str, os.PathLike]

# Per-sample datasets: key -> (HDF5 path, trailing shape after N as a function of (C, K),
# numpy dtype, compression worth it). Trailing shapes use 'C' and 'K' placeholders.
_STR = h5py.string_dtype('utf-8')
_BYTES = h5py.vlen_dtype(np.uint8)
SAMPLE_FIELDS: Dict[str, Tuple[str, Tuple[Any, ...], Any]] = {
    'session': ('samples/session', (), np.int32),
    'frame': ('samples/frame', (), np.int64),
    'instance': ('samples/instance', (), np.int32),
    'track': ('samples/track', (), _STR),
    'valid': ('views/valid', ('C',), np.bool_),
    'calibrated': ('views/calibrated', ('C',), np.bool_),
    'keypoints_2d': ('views/keypoints_2d', ('C', 'K', 2), np.float32),
    'confidence': ('views/confidence', ('C', 'K'), np.float32),
    'visible': ('views/visible', ('C', 'K'), np.bool_),
    'K': ('views/K', ('C', 3, 3), np.float64),
    'dist': ('views/dist', ('C', 5), np.float64),
    'R': ('views/R', ('C', 3, 3), np.float64),
    't': ('views/t', ('C', 3), np.float64),
    'image_size': ('views/image_size', ('C', 2), np.int32),
    'crop': ('views/crop', ('C', 3, 3), np.float64),
    'images': ('views/images', ('C',), _BYTES),
    'masks': ('views/masks', ('C',), _BYTES),
    'keypoints_3d': ('keypoints_3d', ('K', 3), np.float32),
}
#: Keys :meth:`DatasetWriter.add_samples` requires; the others have documented defaults.
REQUIRED_KEYS = ('session', 'frame', 'valid', 'keypoints_2d', 'confidence', 'K', 'R', 't',
                 'image_size')
#: Optional per-sample datasets, created on first use (earlier rows get the fill value).
OPTIONAL_KEYS = ('masks', 'keypoints_3d')
_COMPRESS = {np.float32, np.float64, np.int32, np.int64, np.bool_}


class DatasetFormatError(SmilfitUserError, ValueError):
    """A file is not a usable smilfit dataset, or data given to the writer is malformed.

    The message names the file (or the ``add_samples`` key) and the problem. A user's error
    (:class:`~smilfit.errors.SmilfitUserError`): the tools print it as one line, also when
    a training run finds it while building its datasets.
    """



# ----------------------------------------------------------------------------- file header
def partial_path(path: PathLike) -> Path:
    """The temporary file a writer uses for ``path``: ``<path>.partial`` in the same folder."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def check_header(f: h5py.File, path: PathLike, allow_incomplete: bool = False) -> None:
    """Refuse files that are not (complete, readable-version) smilfit datasets.

    Raises:
        DatasetFormatError: no/wrong ``format`` attribute, a newer ``schema_version``, or an
            unfinished file (``complete`` false) unless ``allow_incomplete``.
    """
    fmt = f.attrs.get('format')
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT_NAME:
        raise DatasetFormatError(
            f"{path}: not a smilfit dataset (root attribute 'format' is {fmt!r}, "
            f'expected {FORMAT_NAME!r})')
    version = f.attrs.get('schema_version')
    if version is None:
        raise DatasetFormatError(f"{path}: root attribute 'schema_version' is missing")
    if int(version) > SCHEMA_VERSION:
        raise DatasetFormatError(
            f'{path}: schema_version {int(version)} is newer than this smilfit '
            f'({_SMILFIT_VERSION}) can read (<= {SCHEMA_VERSION}); update smilfit')
    if not allow_incomplete and not bool(f.attrs.get('complete', False)):
        raise DatasetFormatError(
            f'{path}: unfinished dataset (never committed); rerun the writer, with resume '
            'to continue it')


def _partial_problem(path: Path) -> Optional[str]:
    """Why the partial file at ``path`` cannot be continued as it is (None: it can): not
    readable, not marked consistent (:data:`CONSISTENT_ATTR`), or fields of different
    lengths."""
    try:
        # unlocked: the writer asking holds the file's lock (.partial_lock)
        with h5py.File(path, 'r', locking=False) as f:
            if not bool(f.attrs.get(CONSISTENT_ATTR, False)):
                return 'not marked consistent'
            if 'samples/session' not in f or 'sessions/names' not in f:
                return 'no sample or session table'
            lengths = {p: f[p].shape[0] for p, _, _ in SAMPLE_FIELDS.values() if p in f}
            if 'params' in f:
                lengths.update({f'params/{k}': v.shape[0] for k, v in f['params'].items()})
            if len(set(lengths.values())) > 1:
                return f'fields of different lengths {lengths}'
            if f['sessions/camera_names'].shape[0] != f['sessions/names'].shape[0]:
                return 'session tables of different lengths'
    except (OSError, KeyError) as e:
        return f'not readable as HDF5: {e}'
    return None


def _str_list(ds: h5py.Dataset) -> List[str]:
    return [str(s) for s in ds.asstr()[()].ravel()] if ds.size else []


def _open_h5(path: PathLike, mode: str, what: str, **kwargs: Any) -> h5py.File:
    try:
        return h5py.File(path, mode, **kwargs)
    except OSError as e:
        raise DatasetFormatError(f'{path}: cannot open {what} as HDF5 ({e})') from e


