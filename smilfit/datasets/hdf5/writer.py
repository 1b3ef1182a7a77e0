"""The atomic, resumable :class:`DatasetWriter` of the HDF5 dataset format: its life
cycle (partial file, commit, abort, checkpoints) and what it appends (sessions, skeleton,
batches of samples).

Its parts live next to it: :mod:`.validation` (what ``add_samples`` is given),
:mod:`.layout` (how datasets are created and grow in the file) and :mod:`.resume`
(which partial file an interrupted write continues from).
"""
from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

from smilfit.utils.atomic import atomic_path, publish

from .files import create_checked
from .layout import (attr_value, blob_array, create_sample_dataset, write_header,
                     write_session_row)
from .partial_lock import PartialFileLock
from .resume import check_resumable, recover_partial
from .schema import (_STR, CONSISTENT_ATTR, DEFAULT_CHUNK_SAMPLES, OPTIONAL_KEYS,
                     RESERVED_ATTRS, SAMPLE_FIELDS, DatasetFormatError, PathLike, _open_h5,
                     _str_list, partial_path)
from .validation import trailing_shape, validate_samples


# ---------------------------------------------------------------------------------- writer
class DatasetWriter:
    """Write a smilfit HDF5 dataset atomically, in appended batches of samples.

    Use as a context manager::

        with DatasetWriter('out.h5', keypoint_names=names, num_views=4, units='mm') as w:
            s = w.add_session('mouse1', ['back', 'mid', 'side', 'top'])
            w.add_samples({'session': ..., 'frame': ..., ...})
            w.commit()

    Data goes to ``<path>.partial`` in the same folder; :meth:`commit` flushes, closes and
    renames it onto ``path`` (:func:`smilfit.utils.atomic.publish`). Leaving the ``with`` block by an exception
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

    One writer per dataset: from :meth:`open` to :meth:`commit` or :meth:`abort` the writer
    holds a lock on its partial file (:mod:`.partial_lock`), so a second process writing
    the same ``path`` gets :class:`~.partial_lock.DatasetBusyError` instead of taking the
    live file for one a killed run left.

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
        DatasetBusyError: (on :meth:`open`) another process is writing ``path``.
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
        self._lock = PartialFileLock(self.partial_path)
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
        """Create (or, resuming, reopen) the partial file, holding its lock until
        :meth:`commit` or :meth:`abort`. Called by ``__enter__``.

        Raises:
            DatasetBusyError: another process is writing this dataset now.
        """
        if self._f is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        left = self._lock.acquire()
        try:
            self._open_held(left)
        except BaseException:
            self.abort(keep_partial=self.resume and left)
            raise
        return self

    def _open_held(self, left: bool) -> None:
        """Open the held partial file: continue it (``left``: a killed or interrupted
        run's, with ``resume``), or a copy of the finished file, or write it anew."""
        if self.resume and left and not recover_partial(self.partial_path,
                                                        self.checkpoint_path):
            left = False                     # nothing to continue: start again in it
        if self.resume and (left or self.path.exists()):
            copied = not left
            if copied:  # resume a finished file: work on a copy, the original stays valid
                shutil.copy2(self.path, self.partial_path)
            try:
                self._f = _open_h5(self.partial_path, 'r+', 'dataset to resume',
                                   locking=False)
                self._session_names, self._keys = check_resumable(
                    self._f, self.path if copied else self.partial_path,
                    self.keypoint_names, self.num_views, self.attrs)
            except BaseException:
                self.abort(keep_partial=not copied)
                raise
            self._f.attrs['complete'] = False
            self._whole_samples = self.num_samples
            self._mark_consistent(False)
            return
        if left:
            warnings.warn(f'writing over {self.partial_path}, left by an earlier run')
        # HDF5's own lock would find the file held by this writer's lock
        self._f = h5py.File(self.partial_path, 'w', locking=False)
        self._create_layout()
        self._whole_samples = 0

    def commit(self) -> Path:
        """Flush, close and atomically move the partial file onto ``path``; return ``path``."""
        self._require_open()
        self._f.attrs['complete'] = True
        if CONSISTENT_ATTR in self._f.attrs:  # only means something in a partial file
            del self._f.attrs[CONSISTENT_ATTR]
        self._f.flush()
        self._f.close()
        self._f = None
        publish(self.partial_path, self.path)
        self._committed = True
        self._remove_checkpoint()
        self._lock.release()
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
        if not self._lock.held:
            return                 # never opened, or aborted already: the file is not ours
        if not keep_partial:
            if self.partial_path.exists():
                self.partial_path.unlink()
            self._remove_checkpoint()
        self._lock.release()

    def set_attr(self, name: str, value: str) -> None:
        """Set a root attribute of the open file, committed with it (e.g. the source record
        :mod:`smilfit.datasets.provenance` writes once everything else is in)."""
        self._require_open()
        if name in RESERVED_ATTRS:
            raise DatasetFormatError(f'{self.path}: {name!r} is a reserved root attribute')
        self._f.attrs[name] = value

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
        write_session_row(self._f, 'video_paths', idx, C, _STR, (),
                          None if paths is None else paths + [''] * (C - len(paths)))
        for key, (row, dtype, trailing) in rows.items():
            write_session_row(self._f, key, idx, C, dtype, trailing, row)
        self._session_names.append(str(name))
        return idx

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
            create_checked(self._f, path, arr)

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
        arrays, images, masks, params = validate_samples(
            samples, self.num_views, len(self.keypoint_names), len(self._session_names))
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
                ds[n0:n1] = blob_array(blobs, b, self.num_views)
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
        return trailing_shape(spec, self.num_views, len(self.keypoint_names))

    def _create_dataset(self, path: str, trailing: Tuple[int, ...], dtype: Any,
                        fillvalue: Any = None) -> h5py.Dataset:
        return create_sample_dataset(self._f, path, trailing, dtype, self.chunk_samples,
                                     self.compression, fillvalue)

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
                group.attrs[k] = attr_value(v)
            return self._create_dataset(path, tuple(trailing), np.float32, np.nan)
        ds = self._f[path]
        if ds.shape[1:] != tuple(trailing):
            raise DatasetFormatError(f"add_samples: params['{name}'] has per-sample shape "
                                     f'{tuple(trailing)}; the file has {ds.shape[1:]}')
        return ds

    def _create_layout(self) -> None:
        write_header(self._f, created_by=self.created_by, source=self.source,
                     units=self.units, num_views=self.num_views, attrs=self.attrs,
                     keypoint_names=self.keypoint_names)
        for key in SAMPLE_FIELDS:
            if key not in OPTIONAL_KEYS:
                self._dataset(key)


__all__ = ['DatasetWriter']
