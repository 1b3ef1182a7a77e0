"""smilfit's HDF5 dataset format: the schema in code, an atomic writer and a lazy reader.

The implementation lives in :mod:`smilfit.datasets.hdf5` (``schema``, ``codecs``,
``writer``, ``reader``); this module is its public face, kept for every existing import.

One file holds many *samples*: one animal instance at one frame of one recording session,
seen by up to ``C`` cameras (views). Everything is fixed-size and sample-major, so a batch of
samples is one slice per dataset. The full description (every group and dataset with shape,
dtype, units and coordinate order) is ``docs/hdf5_schema.md``; the constants below are the
same schema in code.

Conventions used everywhere in the file:

- 2D keypoints are ``(x, y)`` in pixels of the **stored** image (after crop, resize and
  undistortion), OpenCV convention: the centre of the top-left pixel is ``(0, 0)``, x to the
  right, y down. Missing points are NaN (with confidence 0 and ``visible`` False).
- Cameras map world points to stored-image pixels: ``x_cam = R @ X + t``, then OpenCV's
  pinhole + distortion model ``(k1, k2, p1, p2, k3)`` with intrinsics ``K``.
- Images are JPEG bytes encoded from RGB (decode with :func:`decode_image`).

Writing is atomic: :class:`DatasetWriter` writes ``<path>.partial`` and renames it onto
``<path>`` only in :meth:`DatasetWriter.commit`; a partial file is never a valid dataset
(the reader refuses it). A resumable writer continues a partial file only when it was left
consistent (:data:`CONSISTENT_ATTR`), else its last checkpoint, else it starts again.
One writer per dataset: a second process writing the same path gets
:class:`DatasetBusyError` (:mod:`smilfit.datasets.hdf5.partial_lock`).
"""
from .hdf5.codecs import decode_image, decode_mask, encode_image, encode_mask
from .hdf5.reader import DatasetReader, NonFiniteCameras
from .hdf5.schema import (FORMAT_NAME, SCHEMA_VERSION, PARTIAL_SUFFIX, DEFAULT_CHUNK_SAMPLES,
                          PARAM_NAMES, CONSISTENT_ATTR, RESERVED_ATTRS, PathLike, SAMPLE_FIELDS,
                          REQUIRED_KEYS, OPTIONAL_KEYS, DatasetFormatError, partial_path,
                          check_header)
from .hdf5.partial_lock import DatasetBusyError, wait_for_writer
from .hdf5.writer import DatasetWriter

__all__ = ['FORMAT_NAME', 'SCHEMA_VERSION', 'PARTIAL_SUFFIX', 'DEFAULT_CHUNK_SAMPLES',
           'PARAM_NAMES', 'CONSISTENT_ATTR', 'RESERVED_ATTRS', 'PathLike', 'SAMPLE_FIELDS',
           'REQUIRED_KEYS', 'OPTIONAL_KEYS', 'DatasetFormatError', 'partial_path', 'check_header',
           'encode_image', 'decode_image', 'encode_mask', 'decode_mask', 'DatasetWriter',
           'NonFiniteCameras', 'DatasetReader', 'DatasetBusyError', 'wait_for_writer']
