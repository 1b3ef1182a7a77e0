"""How the writer lays a dataset out in the file: the root attributes and name tables of a
new file (:func:`write_header`), per-sample datasets that grow along N in chunks
(:func:`create_sample_dataset`), per-session rows (:func:`write_session_row`), image and
mask bytes (:func:`blob_array`) and attribute values (:func:`attr_value`)."""
from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np

from smilfit.version import __version__ as _SMILFIT_VERSION

from .files import checksum_options
from .schema import _COMPRESS, _STR, FORMAT_NAME, SCHEMA_VERSION


def attr_value(value: Any) -> Any:
    """``value`` as an HDF5 attribute: scalars, strings and numeric arrays as they are,
    anything else as sorted JSON."""
    if isinstance(value, (str, bytes, int, float, bool, np.integer, np.floating, np.bool_)):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in 'fiub':
        return value
    return json.dumps(value, sort_keys=True)


def write_header(f: h5py.File, *, created_by: str, source: str, units: str, num_views: int,
                 attrs: Mapping[str, Any], keypoint_names: Sequence[str]) -> None:
    """The root attributes of a new (not yet complete) dataset, its keypoint names and the
    empty session tables."""
    f.attrs['format'] = FORMAT_NAME
    f.attrs['schema_version'] = SCHEMA_VERSION
    f.attrs['created_by'] = created_by
    f.attrs['smilfit_version'] = _SMILFIT_VERSION
    f.attrs['created_at'] = time.strftime('%Y-%m-%dT%H:%M:%S%z')
    f.attrs['source'] = source
    f.attrs['units'] = units
    f.attrs['num_views'] = num_views
    f.attrs['complete'] = False
    for k, v in attrs.items():
        f.attrs[k] = attr_value(v)
    f.create_dataset('keypoint_names', data=np.array(list(keypoint_names), dtype=object),
                     dtype=_STR)
    f.create_dataset('sessions/names', shape=(0,), maxshape=(None,), dtype=_STR,
                     chunks=(64,))
    f.create_dataset('sessions/camera_names', shape=(0, num_views),
                     maxshape=(None, num_views), dtype=_STR, chunks=(64, num_views))


def create_sample_dataset(f: h5py.File, path: str, trailing: Tuple[int, ...], dtype: Any,
                          chunk_samples: int, compression: Optional[str],
                          fillvalue: Any = None) -> h5py.Dataset:
    """An empty per-sample dataset ``(0, *trailing)`` at ``path``, resizable along N,
    chunked ``chunk_samples`` samples at a time, compressed where it pays."""
    kwargs: Dict[str, Any] = {}
    if compression and np.dtype(dtype).type in _COMPRESS:
        kwargs['compression'] = compression
        if compression == 'gzip':
            kwargs['compression_opts'] = 4
        kwargs['shuffle'] = np.dtype(dtype).itemsize > 1
    if fillvalue is not None:
        kwargs['fillvalue'] = fillvalue
    # A zero-length axis (e.g. betas of a model without shape coefficients, K = 0)
    # cannot be chunked as it is: HDF5 needs positive chunk sizes no larger than a
    # fixed axis, so such an axis is declared resizable with chunks of 1.
    maxshape = (None,) + tuple(None if d == 0 else d for d in trailing)
    chunks = (chunk_samples,) + tuple(max(1, d) for d in trailing)
    kwargs.update(checksum_options(dtype, chunks))
    return f.create_dataset(path, shape=(0,) + trailing, maxshape=maxshape,
                            chunks=chunks, dtype=dtype, **kwargs)


def write_session_row(f: h5py.File, key: str, idx: int, num_views: int, dtype: Any,
                      trailing: Tuple[int, ...], row: Any) -> None:
    """Write row ``idx`` of the optional per-session dataset ``sessions/<key>``
    (S, C, *trailing): created on first use, earlier sessions filled with the empty
    value ('' or 0); once it exists, a session without the row gets the empty value."""
    path = f'sessions/{key}'
    if row is None and path not in f:
        return
    if path not in f:
        f.create_dataset(path, shape=(idx, num_views) + trailing,
                         maxshape=(None, num_views) + trailing, dtype=dtype, chunks=True,
                         **checksum_options(dtype, (idx, num_views) + trailing))
    ds = f[path]
    ds.resize((idx + 1, num_views) + trailing)
    if row is not None:
        ds[idx] = row


def blob_array(blobs: Optional[List[List[bytes]]], b: int, c: int) -> np.ndarray:
    """B x C bytes as the (B, C) object array of uint8 buffers HDF5 stores (empty buffers
    when ``blobs`` is None)."""
    out = np.empty((b, c), dtype=object)
    for i in range(b):
        for j in range(c):
            out[i, j] = np.frombuffer(blobs[i][j], dtype=np.uint8) if blobs is not None \
                else np.zeros(0, np.uint8)
    return out


__all__ = ['attr_value', 'write_header', 'create_sample_dataset', 'write_session_row',
           'blob_array']
