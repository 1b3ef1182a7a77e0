"""smilfit's HDF5 dataset format: the schema in code, an atomic writer and a lazy reader.

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
"""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import h5py
import numpy as np

from smilfit.body_models.parameters import DATASET_PARAMS
from smilfit.utils.atomic import atomic_path
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


class DatasetFormatError(ValueError):
    """A file is not a usable smilfit dataset, or data given to the writer is malformed.

    The message names the file (or the ``add_samples`` key) and the problem.
    """


# ---------------------------------------------------------------------------- image codecs
def encode_image(image: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB (or grayscale) uint8 image as JPEG bytes.

    Args:
        image: (H, W, 3) RGB or (H, W) / (H, W, 1) grayscale, uint8.
        quality: JPEG quality 1-100.

    Returns:
        JPEG file bytes. Channels are swapped to OpenCV's BGR before encoding, so
        :func:`decode_image` returns the same RGB colours.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise DatasetFormatError(f'encode_image: expected uint8, got {image.dtype}')
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim != 2:
        raise DatasetFormatError(f'encode_image: expected (H, W, 3) or (H, W), got {image.shape}')
    ok, buf = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DatasetFormatError(f'encode_image: JPEG encoding failed for shape {image.shape}')
    return buf.tobytes()


def decode_image(data: Union[bytes, np.ndarray]) -> np.ndarray:
    """Decode JPEG/PNG bytes (as stored in ``views/images``) to an (H, W, 3) uint8 RGB array."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) \
        else np.asarray(data, dtype=np.uint8)
    if buf.size == 0:
        raise DatasetFormatError('decode_image: empty image bytes (no image stored)')
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetFormatError(f'decode_image: {buf.size} bytes are not a decodable image')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_mask(mask: np.ndarray) -> bytes:
    """Encode an (H, W) mask (bool or uint8) as PNG bytes (lossless; bool -> 0/255)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DatasetFormatError(f'encode_mask: expected (H, W), got {mask.shape}')
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8) * 255
    ok, buf = cv2.imencode('.png', mask.astype(np.uint8))
    if not ok:
        raise DatasetFormatError('encode_mask: PNG encoding failed')
    return buf.tobytes()


def decode_mask(data: Union[bytes, np.ndarray]) -> np.ndarray:
    """Decode PNG mask bytes (as stored in ``views/masks``) to an (H, W) uint8 array."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) \
        else np.asarray(data, dtype=np.uint8)
    if buf.size == 0:
        raise DatasetFormatError('decode_mask: empty mask bytes (no mask stored)')
    mask = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DatasetFormatError(f'decode_mask: {buf.size} bytes are not a decodable PNG')
    return mask if mask.ndim == 2 else mask[..., 0]


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
        with h5py.File(path, 'r') as f:
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


def _open_h5(path: PathLike, mode: str, what: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise DatasetFormatError(f'{path}: cannot open {what} as HDF5 ({e})') from e


# ---------------------------------------------------------------------------------- writer
class DatasetWriter:
    """Write a smilfit HDF5 dataset atomically, in appended batches of samples.

    Use as a context manager::

        with DatasetWriter('out.h5', keypoint_names=names, num_views=4, units='mm') as w:
            s = w.add_session('mouse1', ['back', 'mid', 'side', 'top'])
            w.add_samples({'session': ..., 'frame': ..., ...})
            w.commit()

    Data goes to ``<path>.partial`` in the same folder; :meth:`commit` flushes, closes and
    renames it onto ``path`` with ``os.replace``. Leaving the ``with`` block by an exception
    (Ctrl-C included) or without committing deletes the partial file, so a half-written
    dataset never exists under ``path`` - except with ``resume=True``, which keeps it for
    the next run (it carries ``complete=False`` and readers refuse it).

    Crash safety of ``resume``: an interrupted run (Ctrl-C, SIGTERM, an error) cuts the
    partial file back to the last whole batch and marks it consistent
    (:data:`CONSISTENT_ATTR`) before closing it. A run killed without warning
    (``kill -9``, power loss) leaves a file not marked consistent, whatever state HDF5
    left it in; the next run does not trust it and continues from the last checkpoint
    (``<path>.partial.ok``, see ``checkpoint_every_s``), or starts again without one. So
    the resumed output holds the same samples in the same order as an uninterrupted run.

    Args:
        path: the dataset file to create.
        keypoint_names: the K keypoint names (order of the K axis).
        num_views: C, the number of view slots per sample (max cameras of any session).
        overwrite: replace an existing ``path`` (only when :meth:`commit` succeeds).
        resume: continue ``<path>.partial`` (or, when only ``path`` exists, a copy of it):
            sessions are matched by name and :meth:`add_samples` skips samples whose
            ``(session name, frame, instance)`` are already written. An interrupted
            resumable run keeps its partial file. ``keypoint_names``, ``num_views`` and the
            given ``attrs`` must match the file's, or :class:`DatasetFormatError` is raised.
        source: free-text description of where the data came from (root attr ``source``).
        units: length unit of 3D data and camera translations (``'mm'``, ``'m'``, ...).
        attrs: extra root attributes (JSON-serialisable values are stored as JSON strings
            when they are not scalars/strings).
        params_attrs: attributes of the ``params`` group, e.g. ``{'body_model': 'x.pkl'}``.
        chunk_samples: HDF5 chunk length along N.
        compression: filter for numeric datasets (``'lzf'``, ``'gzip'`` or ``None``).
        created_by: the program writing the file (root attr ``created_by``).
        checkpoint_every_s: with ``resume``, at most this often (after a batch) the partial
            file is flushed and copied to ``<path>.partial.ok``: a ``kill -9`` can leave
            the partial HDF5 file unreadable, and the next ``resume`` then continues from
            the last checkpoint instead of failing. Copying costs about a second per GB,
            so the default (60 s) keeps it to a few percent.

    Raises:
        FileExistsError: ``path`` exists and neither ``overwrite`` nor ``resume`` is set.
    """

    def __init__(self, path: PathLike, *, keypoint_names: Sequence[str], num_views: int,
                 overwrite: bool = False, resume: bool = False, source: str = '',
                 units: str = 'unknown', attrs: Optional[Mapping[str, Any]] = None,
                 params_attrs: Optional[Mapping[str, Any]] = None,
                 chunk_samples: int = DEFAULT_CHUNK_SAMPLES, compression: Optional[str] = 'lzf',
                 created_by: str = 'smilfit.datasets.hdf5_format.DatasetWriter',
                 checkpoint_every_s: float = 60.0):
        self.path = Path(path)
        self.partial_path = partial_path(self.path)
        self.checkpoint_path = self.partial_path.with_name(self.partial_path.name + '.ok')
        self.checkpoint_every_s = float(checkpoint_every_s)
        self._last_checkpoint = time.monotonic()
        self.keypoint_names = [str(n) for n in keypoint_names]
        if len(set(self.keypoint_names)) != len(self.keypoint_names):
            raise DatasetFormatError(f'{self.path}: keypoint_names are not unique: '
                                     f'{self.keypoint_names}')
        self.num_views = int(num_views)
        if self.num_views < 1:
            raise DatasetFormatError(f'{self.path}: num_views must be >= 1, got {num_views}')
        self.overwrite, self.resume = bool(overwrite), bool(resume)
        self.source, self.units, self.created_by = str(source), str(units), str(created_by)
        self.attrs = dict(attrs or {})
        bad = sorted(set(self.attrs) & set(RESERVED_ATTRS))
        if bad:
            raise DatasetFormatError(f'{self.path}: attrs may not set reserved root '
                                     f'attributes {bad}')
        self.params_attrs = dict(params_attrs or {})
        self.chunk_samples = max(1, int(chunk_samples))
        self.compression = compression
        if self.path.exists() and not (overwrite or resume):
            raise FileExistsError(f'{self.path} already exists (use overwrite=True / '
                                  '--overwrite to replace it, or resume)')
        self._f: Optional[h5py.File] = None
        self._keys: set = set()
        self._session_names: List[str] = []
        self._committed = False
        # Samples of the batches written completely (None until the file is open).
        self._whole_samples: Optional[int] = None

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> 'DatasetWriter':
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self._committed:
            self.abort(keep_partial=self.resume and exc_type is not None)
        return False

    @property
    def num_samples(self) -> int:
        """Samples written so far (including those found when resuming)."""
        self._require_open()
        return int(self._f['samples/session'].shape[0])

    @property
    def session_names(self) -> List[str]:
        return list(self._session_names)

    def open(self) -> 'DatasetWriter':
        """Create (or, resuming, reopen) the partial file. Called by ``__enter__``."""
        if self._f is not None:
            return self
        if self.resume and self.partial_path.exists():
            self._recover_partial()
        if self.resume and (self.partial_path.exists() or self.path.exists()):
            copied = not self.partial_path.exists()
            if copied:  # resume a finished file: work on a copy, the original stays valid
                shutil.copy2(self.path, self.partial_path)
            try:
                self._f = _open_h5(self.partial_path, 'r+', 'dataset to resume')
                self._check_resumable(self.path if copied else self.partial_path)
            except BaseException:
                self.abort(keep_partial=not copied)
                raise
            self._f.attrs['complete'] = False
            self._whole_samples = self.num_samples
            self._mark_consistent(False)
        else:
            if self.partial_path.exists():
                warnings.warn(f'removing stale {self.partial_path} left by an earlier run')
                self.partial_path.unlink()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = h5py.File(self.partial_path, 'w')
            self._create_layout()
            self._whole_samples = 0
        return self

    def commit(self) -> Path:
        """Flush, close and atomically move the partial file onto ``path``; return ``path``."""
        self._require_open()
        self._f.attrs['complete'] = True
        if CONSISTENT_ATTR in self._f.attrs:  # only means something in a partial file
            del self._f.attrs[CONSISTENT_ATTR]
        self._f.flush()
        self._f.close()
        self._f = None
        os.replace(self.partial_path, self.path)
        self._committed = True
        self._remove_checkpoint()
        return self.path

    def abort(self, keep_partial: bool = False) -> None:
        """Close without committing; delete the partial file unless ``keep_partial``.

        A kept partial file is first cut back to the last whole batch (an interrupt can
        land between two fields of a batch) and marked consistent."""
        if self._f is not None:
            try:
                if keep_partial and self._whole_samples is not None:
                    self._truncate_to_whole_batches()
                    self._mark_consistent(True)
                self._f.close()
            except Exception:  # pragma: no cover - closing a broken file
                pass
            self._f = None
        if not keep_partial and self.partial_path.exists():
            self.partial_path.unlink()
        if not keep_partial:
            self._remove_checkpoint()

    def _recover_partial(self) -> None:
        """Make ``partial_path`` a file that can be continued: keep it when it is marked
        consistent, else restore the last checkpoint, else remove it (start again)."""
        problem = _partial_problem(self.partial_path)
        if problem is None:
            return
        if self.checkpoint_path.exists() and _partial_problem(self.checkpoint_path) is None:
            warnings.warn(f'{self.partial_path} is damaged ({problem}: the run was killed '
                          'mid-write); resuming from its last checkpoint '
                          f'{self.checkpoint_path}')
            shutil.copyfile(self.checkpoint_path, self.partial_path)
            return
        warnings.warn(f'{self.partial_path} cannot be continued ({problem}: the run was '
                      'killed mid-write) and has no usable checkpoint; starting again')
        self.partial_path.unlink()
        self._remove_checkpoint()

    def _mark_consistent(self, value: bool) -> None:
        """Set :data:`CONSISTENT_ATTR` and flush, so the file on disk says it."""
        self._f.attrs[CONSISTENT_ATTR] = bool(value)
        self._f.flush()

    def _per_sample_datasets(self) -> List[h5py.Dataset]:
        f = self._f
        out = [f[p] for p, _, _ in SAMPLE_FIELDS.values() if p in f]
        return out + (list(f['params'].values()) if 'params' in f else [])

    def _truncate_to_whole_batches(self) -> None:
        """Cut every per-sample field to the samples of whole batches, and the session
        tables to the whole sessions (an interrupt may land between two fields)."""
        for ds in self._per_sample_datasets():
            if ds.shape[0] != self._whole_samples:
                ds.resize(self._whole_samples, axis=0)
        num = len(self._session_names)
        for path in ('sessions/names', 'sessions/camera_names', 'sessions/video_paths'):
            if path in self._f and self._f[path].shape[0] != num:
                self._f[path].resize(num, axis=0)

    def _remove_checkpoint(self) -> None:
        if self.checkpoint_path.exists():
            self.checkpoint_path.unlink()

    def checkpoint(self) -> None:
        """Flush the partial file (marked consistent: called between batches) and copy it,
        atomically, to ``<path>.partial.ok``."""
        self._require_open()
        self._mark_consistent(True)
        with atomic_path(self.checkpoint_path) as tmp:
            shutil.copyfile(self.partial_path, tmp)
        self._mark_consistent(False)  # before the next batch changes the file
        self._last_checkpoint = time.monotonic()

    # ---------------------------------------------------------------- content
    def add_session(self, name: str, camera_names: Sequence[str],
                    video_paths: Optional[Sequence[str]] = None,
                    video_shapes: Optional[Sequence[Sequence[int]]] = None,
                    video_dist: Optional[Sequence[Sequence[float]]] = None) -> int:
        """Register a recording session; return its index (for ``samples['session']``).

        Args:
            name: unique session name.
            camera_names: names of the session's cameras, at most C; view slot ``i`` of
                every sample of this session is camera ``camera_names[i]``; missing slots
                are stored as ``''``.
            video_paths: optional source video of each camera (``sessions/video_paths``,
                ``''`` where unknown), so exports point at the real videos.
            video_shapes: optional ``(frames, height, width)`` of each camera's source
                video (``sessions/video_shape``, 0 where unknown).
            video_dist: optional ``(k1, k2, p1, p2, k3)`` of each camera's source video
                (``sessions/video_dist``): the calibration's, also when the stored images
                were undistorted, so exports land on the real video's pixels.

        When resuming, an existing session of the same name is returned (its camera names
        must match).
        """
        self._require_open()
        cams = [str(c) for c in camera_names]
        if len(cams) > self.num_views:
            raise DatasetFormatError(f'add_session({name!r}): {len(cams)} cameras but the '
                                     f'dataset has num_views={self.num_views}')
        padded = cams + [''] * (self.num_views - len(cams))
        rows = {}     # checked before anything is written
        for key, values, dtype, trailing in (('video_shape', video_shapes, np.int64, (3,)),
                                             ('video_dist', video_dist, np.float64, (5,))):
            row = None
            if values is not None:
                given = np.asarray(values, dtype=dtype)
                if given.ndim != 2 or given.shape[1:] != trailing:
                    raise DatasetFormatError(f'add_session({name!r}): {key} must be one row '
                                             f'of {trailing[0]} numbers per camera, got '
                                             f'shape {given.shape}')
                if given.shape[0] > self.num_views:
                    raise DatasetFormatError(f'add_session({name!r}): {key} has '
                                             f'{given.shape[0]} rows for {self.num_views} '
                                             'views')
                row = np.zeros((self.num_views,) + trailing, dtype)
                row[:given.shape[0]] = given
            rows[key] = (row, dtype, trailing)
        if name in self._session_names:
            idx = self._session_names.index(name)
            stored = _str_list(self._f['sessions/camera_names'])[idx * self.num_views:
                                                                 (idx + 1) * self.num_views]
            if stored != padded:
                raise DatasetFormatError(
                    f'{self.partial_path}: session {name!r} exists with cameras {stored}, '
                    f'not {padded}')
            return idx
        names_ds, cams_ds = self._f['sessions/names'], self._f['sessions/camera_names']
        idx = names_ds.shape[0]
        names_ds.resize((idx + 1,))
        cams_ds.resize((idx + 1, self.num_views))
        names_ds[idx] = str(name)
        cams_ds[idx] = padded
        C = self.num_views
        paths = None if video_paths is None else [str(v) for v in video_paths]
        self._session_row('video_paths', idx, _STR, (),
                          None if paths is None else paths + [''] * (C - len(paths)))
        for key, (row, dtype, trailing) in rows.items():
            self._session_row(key, idx, dtype, trailing, row)
        self._session_names.append(str(name))
        return idx

    def _session_row(self, key: str, idx: int, dtype: Any, trailing: Tuple[int, ...],
                     row: Any) -> None:
        """Write row ``idx`` of the optional per-session dataset ``sessions/<key>``
        (S, C, *trailing): created on first use, earlier sessions filled with the empty
        value ('' or 0); once it exists, a session without the row gets the empty value."""
        path = f'sessions/{key}'
        if row is None and path not in self._f:
            return
        if path not in self._f:
            self._f.create_dataset(path, shape=(idx, self.num_views) + trailing,
                                   maxshape=(None, self.num_views) + trailing, dtype=dtype,
                                   chunks=True)
        ds = self._f[path]
        ds.resize((idx + 1, self.num_views) + trailing)
        if row is not None:
            ds[idx] = row

    def set_skeleton(self, edges: Sequence[Tuple[int, int]] = (),
                     symmetries: Sequence[Tuple[int, int]] = ()) -> None:
        """Store the skeleton's edges and left/right symmetries as pairs of keypoint indices
        (``skeleton/edges``, ``skeleton/symmetries``: (E, 2) int32)."""
        self._require_open()
        K = len(self.keypoint_names)
        for key, pairs in (('edges', edges), ('symmetries', symmetries)):
            arr = np.asarray(list(pairs), dtype=np.int32).reshape(-1, 2)
            if arr.size and (arr.min() < 0 or arr.max() >= K):
                raise DatasetFormatError(f'{self.path}: skeleton {key} index out of range for '
                                         f'{K} keypoints: {arr.tolist()}')
            path = f'skeleton/{key}'
            if path in self._f:
                del self._f[path]
            self._f.create_dataset(path, data=arr)

    def contains(self, session: Union[int, str], frame: int, instance: int = 0) -> bool:
        """Whether the sample ``(session, frame, instance)`` is already written."""
        name = self._session_names[session] if isinstance(session, (int, np.integer)) \
            else str(session)
        return (name, int(frame), int(instance)) in self._keys

    def add_samples(self, samples: Mapping[str, Any]) -> int:
        """Append a batch of B samples; return how many were written (resume skips some).

        Args:
            samples: stacked arrays, keys as in the schema without the group prefix
                (see ``docs/hdf5_schema.md``):

                - required: ``session`` (B,) int, ``frame`` (B,) int, ``valid`` (B, C) bool,
                  ``keypoints_2d`` (B, C, K, 2) stored-image pixels (x, y), NaN missing,
                  ``confidence`` (B, C, K), ``K`` (B, C, 3, 3), ``R`` (B, C, 3, 3),
                  ``t`` (B, C, 3), ``image_size`` (B, C, 2) (W, H);
                - optional with defaults: ``instance`` (B,) 0, ``track`` (B,) '',
                  ``visible`` (B, C, K) = finite and confidence > 0, ``calibrated`` (B, C)
                  True, ``dist`` (B, C, 5) zeros, ``crop`` (B, C, 3, 3) identity,
                  ``images`` B lists of C bytes (b'' = no image; default all empty);
                - optional datasets: ``masks`` (like images, PNG bytes),
                  ``keypoints_3d`` (B, K, 3) world units, NaN missing, ``params`` dict
                  name -> (B, ...) float arrays.

        Raises:
            DatasetFormatError: a key is missing or has the wrong shape, a session index is
                out of range, or the missing-point invariants are violated (a visible point
                that is NaN; a NaN point with non-zero confidence).
        """
        self._require_open()
        arrays, images, masks, params = self._validate(samples)
        b = arrays['session'].shape[0]
        keep = np.array([not self.contains(int(s), int(fr), int(i)) for s, fr, i in
                         zip(arrays['session'], arrays['frame'], arrays['instance'])], bool)
        if not keep.any():
            return 0
        if not keep.all():
            idx = np.flatnonzero(keep)
            arrays = {k: v[idx] for k, v in arrays.items()}
            images = [images[i] for i in idx] if images is not None else None
            masks = [masks[i] for i in idx] if masks is not None else None
            params = {k: v[idx] for k, v in params.items()}
            b = len(idx)
        n0 = self.num_samples
        n1 = n0 + b
        for key, value in arrays.items():
            ds = self._dataset(key)
            ds.resize(n1, axis=0)
            ds[n0:n1] = value
        for key, blobs in (('images', images), ('masks', masks)):
            if blobs is None and key not in self._f[SAMPLE_FIELDS[key][0].split('/')[0]]:
                continue
            ds = self._dataset(key)
            ds.resize(n1, axis=0)
            if blobs is not None:
                ds[n0:n1] = _blob_array(blobs, b, self.num_views)
        for name, value in params.items():
            ds = self._param_dataset(name, value.shape[1:])
            ds.resize(n1, axis=0)
            ds[n0:n1] = value
        # Optional datasets not in this batch keep their fill value (NaN / empty).
        for key in OPTIONAL_KEYS:
            path = SAMPLE_FIELDS[key][0]
            if path in self._f and self._f[path].shape[0] != n1:
                self._f[path].resize(n1, axis=0)
        if 'params' in self._f:
            for ds in self._f['params'].values():
                if ds.shape[0] != n1:
                    ds.resize(n1, axis=0)
        for s, fr, i in zip(arrays['session'], arrays['frame'], arrays['instance']):
            self._keys.add((self._session_names[int(s)], int(fr), int(i)))
        self._whole_samples = n1
        if self.resume and time.monotonic() - self._last_checkpoint >= self.checkpoint_every_s:
            self.checkpoint()
        return b

    # ---------------------------------------------------------------- helpers
    def _require_open(self) -> None:
        if self._f is None:
            raise RuntimeError('DatasetWriter is not open: use it as a context manager '
                               '(with DatasetWriter(...) as w: ...)')

    def _trailing(self, spec: Tuple[Any, ...]) -> Tuple[int, ...]:
        sizes = {'C': self.num_views, 'K': len(self.keypoint_names)}
        return tuple(sizes.get(d, d) for d in spec)

    def _create_dataset(self, path: str, trailing: Tuple[int, ...], dtype: Any,
                        fillvalue: Any = None) -> h5py.Dataset:
        kwargs: Dict[str, Any] = {}
        if self.compression and np.dtype(dtype).type in _COMPRESS:
            kwargs['compression'] = self.compression
            if self.compression == 'gzip':
                kwargs['compression_opts'] = 4
            kwargs['shuffle'] = np.dtype(dtype).itemsize > 1
        if fillvalue is not None:
            kwargs['fillvalue'] = fillvalue
        # A zero-length axis (e.g. betas of a model without shape coefficients, K = 0)
        # cannot be chunked as it is: HDF5 needs positive chunk sizes no larger than a
        # fixed axis, so such an axis is declared resizable with chunks of 1.
        maxshape = (None,) + tuple(None if d == 0 else d for d in trailing)
        chunks = (self.chunk_samples,) + tuple(max(1, d) for d in trailing)
        return self._f.create_dataset(path, shape=(0,) + trailing, maxshape=maxshape,
                                      chunks=chunks, dtype=dtype, **kwargs)

    def _dataset(self, key: str) -> h5py.Dataset:
        path, spec, dtype = SAMPLE_FIELDS[key]
        if path not in self._f:
            fill = np.nan if np.dtype(dtype).kind == 'f' else None
            self._create_dataset(path, self._trailing(spec), dtype, fill)
        return self._f[path]

    def _param_dataset(self, name: str, trailing: Tuple[int, ...]) -> h5py.Dataset:
        path = f'params/{name}'
        if path not in self._f:
            group = self._f.require_group('params')
            for k, v in self.params_attrs.items():
                group.attrs[k] = _attr_value(v)
            return self._create_dataset(path, tuple(trailing), np.float32, np.nan)
        ds = self._f[path]
        if ds.shape[1:] != tuple(trailing):
            raise DatasetFormatError(f"add_samples: params['{name}'] has per-sample shape "
                                     f'{tuple(trailing)}; the file has {ds.shape[1:]}')
        return ds

    def _create_layout(self) -> None:
        f = self._f
        f.attrs['format'] = FORMAT_NAME
        f.attrs['schema_version'] = SCHEMA_VERSION
        f.attrs['created_by'] = self.created_by
        f.attrs['smilfit_version'] = _SMILFIT_VERSION
        f.attrs['created_at'] = time.strftime('%Y-%m-%dT%H:%M:%S%z')
        f.attrs['source'] = self.source
        f.attrs['units'] = self.units
        f.attrs['num_views'] = self.num_views
        f.attrs['complete'] = False
        for k, v in self.attrs.items():
            f.attrs[k] = _attr_value(v)
        f.create_dataset('keypoint_names', data=np.array(self.keypoint_names, dtype=object),
                         dtype=_STR)
        f.create_dataset('sessions/names', shape=(0,), maxshape=(None,), dtype=_STR,
                         chunks=(64,))
        f.create_dataset('sessions/camera_names', shape=(0, self.num_views),
                         maxshape=(None, self.num_views), dtype=_STR,
                         chunks=(64, self.num_views))
        for key in SAMPLE_FIELDS:
            if key not in OPTIONAL_KEYS:
                self._dataset(key)

    def _check_resumable(self, source: Path) -> None:
        f = self._f
        check_header(f, source, allow_incomplete=True)
        names = _str_list(f['keypoint_names'])
        if names != self.keypoint_names:
            raise DatasetFormatError(f'{source}: cannot resume: keypoint_names differ '
                                     f'(file {names}, given {self.keypoint_names})')
        if int(f.attrs['num_views']) != self.num_views:
            raise DatasetFormatError(f"{source}: cannot resume: num_views differ (file "
                                     f"{int(f.attrs['num_views'])}, given {self.num_views})")
        for k, v in self.attrs.items():
            stored = f.attrs.get(k)
            if isinstance(stored, bytes):
                stored = stored.decode()
            if stored is not None and _attr_value(v) != stored and \
                    not np.array_equal(np.asarray(stored), np.asarray(_attr_value(v))):
                raise DatasetFormatError(f'{source}: cannot resume: attribute {k!r} differs '
                                         f'(file {stored!r}, given {_attr_value(v)!r})')
        self._session_names = _str_list(f['sessions/names'])
        sess = f['samples/session'][()]
        frames = f['samples/frame'][()]
        inst = f['samples/instance'][()]
        self._keys = {(self._session_names[int(s)], int(fr), int(i))
                      for s, fr, i in zip(sess, frames, inst)}

    def _validate(self, samples: Mapping[str, Any]):
        missing = [k for k in REQUIRED_KEYS if k not in samples]
        if missing:
            raise DatasetFormatError(f'add_samples: missing keys {missing}')
        unknown = sorted(set(samples) - set(SAMPLE_FIELDS) - {'params'})
        if unknown:
            raise DatasetFormatError(f'add_samples: unknown keys {unknown} (known: '
                                     f'{sorted(SAMPLE_FIELDS) + ["params"]})')
        b = int(np.asarray(samples['session']).shape[0])
        c = self.num_views
        arrays: Dict[str, np.ndarray] = {}

        def take(key: str, default: Any = None) -> None:
            path, spec, dtype = SAMPLE_FIELDS[key]
            value = samples.get(key)
            if value is None:
                value = default
            if dtype is _STR:
                arr = np.asarray(value, dtype=object).astype(str).astype(object)
            else:
                arr = np.asarray(value)
                if dtype != np.bool_ and arr.dtype.kind in 'fiub':
                    arr = arr.astype(dtype)
                elif dtype == np.bool_:
                    arr = arr.astype(np.bool_)
            expect = (b,) + self._trailing(spec)
            if arr.shape != expect:
                raise DatasetFormatError(
                    f"add_samples: '{key}' has shape {arr.shape}; expected "
                    f"(N, {', '.join(map(str, spec))}) = {expect}")
            arrays[key] = arr

        take('session')
        take('frame')
        take('instance', np.zeros(b, np.int32))
        take('track', np.full(b, '', dtype=object))
        take('valid')
        take('calibrated', np.ones((b, c), bool))
        take('keypoints_2d')
        take('confidence')
        kp_finite = np.isfinite(arrays['keypoints_2d']).all(-1)
        take('visible', kp_finite & (arrays['confidence'] > 0))
        take('K')
        take('dist', np.zeros((b, c, 5)))
        take('R')
        take('t')
        take('image_size')
        take('crop', np.broadcast_to(np.eye(3), (b, c, 3, 3)))
        if samples.get('keypoints_3d') is not None:
            take('keypoints_3d')
        s = arrays['session']
        if b and (s.min() < 0 or s.max() >= len(self._session_names)):
            raise DatasetFormatError(f'add_samples: session index out of range [0, '
                                     f'{len(self._session_names)}): {np.unique(s).tolist()}')
        if np.any(arrays['visible'] & ~kp_finite):
            raise DatasetFormatError("add_samples: 'visible' is True where 'keypoints_2d' "
                                     'is NaN/inf')
        if np.any((arrays['confidence'] != 0) & ~kp_finite):
            raise DatasetFormatError("add_samples: 'confidence' must be 0 where "
                                     "'keypoints_2d' is missing (NaN)")
        images = _check_blobs(samples.get('images'), 'images', b, c)
        masks = _check_blobs(samples.get('masks'), 'masks', b, c)
        params: Dict[str, np.ndarray] = {}
        for name, value in (samples.get('params') or {}).items():
            arr = np.asarray(value, dtype=np.float32)
            if arr.ndim < 1 or arr.shape[0] != b:
                raise DatasetFormatError(f"add_samples: params['{name}'] has shape "
                                         f'{arr.shape}; expected ({b}, ...)')
            params[str(name)] = arr
        return arrays, images, masks, params


def _check_blobs(blobs: Optional[Sequence[Sequence[bytes]]], key: str, b: int,
                 c: int) -> Optional[List[List[bytes]]]:
    if blobs is None:
        return None
    if len(blobs) != b or any(len(row) != c for row in blobs):
        raise DatasetFormatError(f"add_samples: '{key}' must be {b} lists of {c} bytes "
                                 '(b"" where there is none)')
    return [[bytes(x) if x is not None else b'' for x in row] for row in blobs]


def _blob_array(blobs: Optional[List[List[bytes]]], b: int, c: int) -> np.ndarray:
    out = np.empty((b, c), dtype=object)
    for i in range(b):
        for j in range(c):
            out[i, j] = np.frombuffer(blobs[i][j], dtype=np.uint8) if blobs is not None \
                else np.zeros(0, np.uint8)
    return out


def _attr_value(value: Any) -> Any:
    if isinstance(value, (str, bytes, int, float, bool, np.integer, np.floating, np.bool_)):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in 'fiub':
        return value
    return json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------------------------- reader
@dataclass(frozen=True)
class NonFiniteCameras:
    """Views of a dataset whose camera is not finite (:meth:`DatasetReader.non_finite_cameras`).

    Attributes:
        samples: (M,) int64 sample indices (rows of the file, sorted; a sample repeats
            once per bad view).
        views: (M,) int64 view slots.
        camera_names: (M,) the cameras' names in their sessions.
        path: the dataset file.
    """

    samples: np.ndarray
    views: np.ndarray
    camera_names: List[str]
    path: Path

    def __len__(self) -> int:
        """The number of bad views."""
        return int(self.samples.size)

    @property
    def sample_indices(self) -> np.ndarray:
        """(S,) the distinct samples with at least one bad view."""
        return np.unique(self.samples)

    def describe(self, limit: int = 10) -> str:
        """One line: the file, how many views, and the first ``limit`` as sample/camera."""
        if not len(self):
            return f'{self.path}: every camera is finite'
        shown = ', '.join(f'sample {s} camera {n}' for s, n in
                          zip(self.samples[:limit].tolist(), self.camera_names[:limit]))
        more = f' and {len(self) - limit} more' if len(self) > limit else ''
        return (f'{self.path}: non-finite camera parameters (views/K, R, t or dist) in '
                f'{len(self)} view(s) of {self.sample_indices.size} sample(s): {shown}{more}')


class DatasetReader:
    """Read a smilfit HDF5 dataset lazily, in batches; safe in forked dataloader workers.

    The HDF5 file is opened on first access in each process (the handle is keyed by the
    process id and dropped when pickled), so a reader built in the main process can be
    handed to mmengine/torch dataloader workers.

    Args:
        path: a committed dataset file.
        cache_bytes: HDF5 raw-chunk cache size per dataset.

    Raises:
        DatasetFormatError: not an HDF5 file, not a smilfit dataset, newer schema, unfinished.
    """

    def __init__(self, path: PathLike, cache_bytes: int = 32 * 1024 ** 2):
        self.path = Path(path)
        self.cache_bytes = int(cache_bytes)
        self._f: Optional[h5py.File] = None
        self._pid: Optional[int] = None
        self._nodes: Dict[str, Optional[h5py.Dataset]] = {}
        if not self.path.is_file():
            raise DatasetFormatError(f'{self.path}: no such dataset file')
        with _open_h5(self.path, 'r', 'dataset') as f:
            check_header(f, self.path)
            try:
                self.keypoint_names = _str_list(f['keypoint_names'])
                self.session_names = _str_list(f['sessions/names'])
                cams = f['sessions/camera_names'].asstr()[()]
                self.num_views = int(f.attrs['num_views'])
                self._len = int(f['samples/session'].shape[0])
            except KeyError as e:
                raise DatasetFormatError(f'{self.path}: missing {e}') from e
            self.camera_names = [[str(c) for c in row if c] for row in cams]
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v)
                          for k, v in f.attrs.items()}
            self.has_keypoints_3d = SAMPLE_FIELDS['keypoints_3d'][0] in f
            self.has_masks = SAMPLE_FIELDS['masks'][0] in f
            self.param_names = sorted(f['params'].keys()) if 'params' in f else []
            self.params_attrs = dict(f['params'].attrs) if 'params' in f else {}
            self._present = [k for k, (p, _, _) in SAMPLE_FIELDS.items() if p in f]
            self._check_shapes(f)
            self.video_paths = ([[str(v) for v in row] for row in
                                 f['sessions/video_paths'].asstr()[()]]
                                if 'sessions/video_paths' in f else None)
            # (S, C, 3) (frames, height, width) and (S, C, 5) distortion of the source
            # videos, 0 where unknown; None when the file has none.
            self.video_shapes = (f['sessions/video_shape'][()].astype(np.int64)
                                 if 'sessions/video_shape' in f else None)
            self.video_dist = (f['sessions/video_dist'][()].astype(np.float64)
                               if 'sessions/video_dist' in f else None)
            self.skeleton_edges = ([tuple(map(int, e)) for e in f['skeleton/edges'][()]]
                                   if 'skeleton/edges' in f else [])
            self.skeleton_symmetries = ([tuple(map(int, e)) for e in f['skeleton/symmetries'][()]]
                                        if 'skeleton/symmetries' in f else [])

    def _check_shapes(self, f: h5py.File) -> None:
        """Every per-sample field has N rows and the trailing shape the header implies
        (C views, K keypoints): a file edited or written by other tools fails here, naming
        the field, instead of with an IndexError deep inside a fit."""
        sizes = {'C': self.num_views, 'K': len(self.keypoint_names)}
        for key in self._present:
            path, trailing, _ = SAMPLE_FIELDS[key]
            expected = (self._len,) + tuple(sizes.get(d, d) for d in trailing)
            shape = f[path].shape
            if shape != expected:
                names = ', '.join(f'{n}={v}' for n, v in (('N samples', self._len),
                                                          ('C views', self.num_views),
                                                          ('K keypoints', sizes['K'])))
                raise DatasetFormatError(f'{self.path}: field {path} has shape {shape}, '
                                         f'expected {expected} ({names})')
        if len(self.camera_names) != len(self.session_names):
            raise DatasetFormatError(f'{self.path}: sessions/camera_names has '
                                     f'{len(self.camera_names)} rows for '
                                     f'{len(self.session_names)} sessions')
        sessions = f[SAMPLE_FIELDS['session'][0]][()]  # (N,) int32: small enough to check
        bad = (sessions < 0) | (sessions >= len(self.session_names))
        if bad.any():
            raise DatasetFormatError(f'{self.path}: field samples/session holds session '
                                     f'index {int(sessions[bad][0])} (sample '
                                     f'{int(np.flatnonzero(bad)[0])}), but the file has '
                                     f'{len(self.session_names)} sessions')

    def non_finite_cameras(self, block: int = 4096) -> 'NonFiniteCameras':
        """The valid views whose camera (``K``, ``R``, ``t`` or ``dist``) holds NaN or inf.

        Not run on open (it reads every camera); a caller that fits or trains calls it to
        leave those views (or samples) out and to say which, instead of letting one bad
        camera turn a whole batch into NaN. Views marked invalid are not reported (their
        cameras are never read).

        Args:
            block: samples read at once (memory ~ ``block * C * 26 * 8`` bytes).

        Returns:
            :class:`NonFiniteCameras` in sample order.
        """
        samples, views = [], []
        for lo in range(0, self._len, max(1, int(block))):
            rows = np.arange(lo, min(lo + block, self._len))
            batch = self.read(rows, keys=['valid', 'K', 'R', 't', 'dist'])
            B, C = batch['valid'].shape
            finite = np.ones((B, C), bool)
            for key in ('K', 'R', 't', 'dist'):
                if key in batch:
                    finite &= np.isfinite(batch[key]).reshape(B, C, -1).all(-1)
            b, c = np.nonzero(batch['valid'].astype(bool) & ~finite)
            samples.append(rows[b])
            views.append(c)
        samples_ = np.concatenate(samples) if samples else np.zeros(0, np.int64)
        views_ = np.concatenate(views) if views else np.zeros(0, np.int64)
        session = self.read(samples_, keys=['session'])['session'] if samples_.size else []
        names = [self._camera_name(int(s), int(c)) for s, c in zip(session, views_)]
        return NonFiniteCameras(samples_.astype(np.int64), views_.astype(np.int64), names,
                                self.path)

    def _camera_name(self, session: int, view: int) -> str:
        names = self.camera_names[session]
        return names[view] if view < len(names) else f'view{view}'

    # ------------------------------------------------------------- properties
    def __len__(self) -> int:
        return self._len

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def units(self) -> str:
        return str(self.attrs.get('units', 'unknown'))

    @property
    def h5(self) -> h5py.File:
        """This process's open file handle (opened on first use after a fork/unpickle)."""
        if self._f is None or self._pid != os.getpid():
            self._f = h5py.File(self.path, 'r', rdcc_nbytes=self.cache_bytes)
            self._pid = os.getpid()
            self._nodes = {}
        return self._f

    def _node(self, path: str) -> Optional[h5py.Dataset]:
        """The open file's dataset at ``path`` (None when absent), looked up once.

        h5py's path lookup costs about 50-90 us per call: with some 20 fields read per
        sample it was most of a data-loader worker's time (measured: 5 of 7 ms per sample
        at 256 px, JPEG decoding 0.2 ms)."""
        f = self.h5
        if path not in self._nodes:
            self._nodes[path] = f[path] if path in f else None
        return self._nodes[path]

    def close(self) -> None:
        if self._f is not None and self._pid == os.getpid():
            self._f.close()
        self._f = None
        self._nodes = {}

    def __enter__(self) -> 'DatasetReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state['_f'] = None
        state['_pid'] = None
        state['_nodes'] = {}
        return state

    # ------------------------------------------------------------------ reads
    def read(self, indices: Union[int, Sequence[int], np.ndarray],
             keys: Optional[Iterable[str]] = None) -> Dict[str, Any]:
        """Read a batch of samples.

        Args:
            indices: sample indices (any order, repeats allowed; negative count from the end).
            keys: subset of keys to read (default: everything in the file, images included).

        Returns:
            dict with the :meth:`DatasetWriter.add_samples` keys: arrays with leading
            dimension ``len(indices)`` in the requested order; ``track`` as str array;
            ``images``/``masks`` as lists (per sample) of C ``bytes`` (b'' = none);
            ``params`` as a dict of arrays when the file has parameters.
        """
        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        if idx.size and (idx.min() < -self._len or idx.max() >= self._len):
            raise IndexError(f'{self.path}: sample index out of range for {self._len} samples')
        idx = np.where(idx < 0, idx + self._len, idx)
        uniq, inverse = np.unique(idx, return_inverse=True)
        wanted = list(self._present) if keys is None else list(keys)
        out: Dict[str, Any] = {}
        for key in wanted:
            if key == 'params':
                if self.param_names:
                    out['params'] = {n: _take(self._node(f'params/{n}'), uniq)[inverse]
                                     for n in self.param_names}
                continue
            if key not in SAMPLE_FIELDS:
                raise KeyError(f'{self.path}: unknown key {key!r}')
            path, _, dtype = SAMPLE_FIELDS[key]
            node = self._node(path)
            if node is None:
                continue
            data = _take(node, uniq)
            if dtype is _BYTES:
                out[key] = [[data[i, j].tobytes() for j in range(data.shape[1])]
                            for i in inverse]
            elif dtype is _STR:
                out[key] = np.array([s.decode() if isinstance(s, bytes) else str(s)
                                     for s in data[inverse]])
            else:
                out[key] = data[inverse]
        if keys is None and self.param_names:
            out['params'] = {n: _take(self._node(f'params/{n}'), uniq)[inverse]
                             for n in self.param_names}
        return out

    def read_images(self, index: int) -> Optional[List[Optional[np.ndarray]]]:
        """Decoded images of one sample: C (H, W, 3) uint8 RGB arrays (None where a view has
        no image), or None when the sample has no image at all."""
        blobs = self.read([index], keys=['images'])['images'][0]
        if not any(blobs):
            return None
        return [decode_image(b) if b else None for b in blobs]

    def read_masks(self, index: int) -> Optional[List[Optional[np.ndarray]]]:
        """Decoded masks of one sample (like :meth:`read_images`), None without masks."""
        if not self.has_masks:
            return None
        blobs = self.read([index], keys=['masks'])['masks'][0]
        if not any(blobs):
            return None
        return [decode_mask(b) if b else None for b in blobs]

    decode_image = staticmethod(decode_image)
    decode_mask = staticmethod(decode_mask)


def _take(ds: h5py.Dataset, sorted_unique: np.ndarray) -> np.ndarray:
    """Rows ``sorted_unique`` of ``ds``: one slice when contiguous, else a point selection."""
    if sorted_unique.size == 0:
        return ds[0:0]
    lo, hi = int(sorted_unique[0]), int(sorted_unique[-1]) + 1
    if hi - lo == sorted_unique.size:
        return ds[lo:hi]
    if hi - lo <= 4 * sorted_unique.size:  # dense: read the span, then pick rows
        return ds[lo:hi][sorted_unique - lo]
    return ds[sorted_unique]
