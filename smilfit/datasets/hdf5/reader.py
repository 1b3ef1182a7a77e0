"""The lazy :class:`DatasetReader` of the HDF5 dataset format."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import h5py
import numpy as np


from ..ingest_images import BBOX_MARGIN
from .codecs import (decode_image, decode_mask)
from .files import reading
from .schema import (DatasetFormatError, PathLike, SAMPLE_FIELDS, _BYTES, _STR, _open_h5, _str_list,
                     check_header)

#: What the reader's files are read as, in the message of a damaged one.
_WHAT = 'a smilfit dataset'


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
        DamagedFileError: the file is damaged (also from :meth:`read`).
    """

    def __init__(self, path: PathLike, cache_bytes: int = 32 * 1024 ** 2):
        self.path = Path(path)
        self.cache_bytes = int(cache_bytes)
        self._f: Optional[h5py.File] = None
        self._pid: Optional[int] = None
        self._nodes: Dict[str, Optional[h5py.Dataset]] = {}
        if not self.path.is_file():
            raise DatasetFormatError(f'{self.path}: no such dataset file')
        with _open_h5(self.path, 'r', 'dataset') as f, reading(self.path, _WHAT):
            check_header(f, self.path)
            # (a field that is there but cannot be read is damage, which reading() names)
            for name in ('keypoint_names', 'sessions/names', 'sessions/camera_names',
                         'samples/session'):
                if name not in f:
                    raise DatasetFormatError(f"{self.path}: missing '{name}'")
            if 'num_views' not in f.attrs:
                raise DatasetFormatError(f"{self.path}: missing attribute 'num_views'")
            self.keypoint_names = _str_list(f['keypoint_names'])
            self.session_names = _str_list(f['sessions/names'])
            cams = f['sessions/camera_names'].asstr()[()]
            self.num_views = int(f.attrs['num_views'])
            self._len = int(f['samples/session'].shape[0])
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
    def input_crops(self) -> Optional[Dict[str, Any]]:
        """How the stored images were cropped from the source frames (the preparation's
        ``crop_mode``, ``target_size`` and ``bbox_margin``), or None where the file does
        not say. A network trained on them must be run on crops made the same way."""
        mode = self.attrs.get('crop_mode')
        if mode is None:
            return None
        try:
            options = json.loads(self.attrs.get('ingest_options') or '{}')
        except (TypeError, ValueError):
            options = {}
        size = self.attrs.get('target_size', options.get('target_size'))
        return dict(crop_mode=str(mode), target_size=int(size) if size else None,
                    bbox_margin=float(options.get('bbox_margin', BBOX_MARGIN)))

    @property
    def h5(self) -> h5py.File:
        """This process's open file handle (opened on first use after a fork/unpickle)."""
        if self._f is None or self._pid != os.getpid():
            with reading(self.path, _WHAT):
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
        with reading(self.path, _WHAT):
            return self._read(uniq, inverse, wanted, keys is None)

    def _read(self, uniq: np.ndarray, inverse: np.ndarray, wanted: List[str],
              everything: bool) -> Dict[str, Any]:
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
        if everything and self.param_names:
            out['params'] = {n: _take(self._node(f'params/{n}'), uniq)[inverse]
                             for n in self.param_names}
        return out

    def read_images(self, index: int) -> Optional[List[Optional[np.ndarray]]]:
        """Decoded images of one sample: C (H, W, 3) uint8 RGB arrays (None where a view has
        no image), or None when the sample has no image at all."""
        blobs = self.read([index], keys=['images'])['images'][0]
        if not any(blobs):
            return None
        return self._decoded(blobs, decode_image, index, 'image')

    def read_masks(self, index: int) -> Optional[List[Optional[np.ndarray]]]:
        """Decoded masks of one sample (like :meth:`read_images`), None without masks."""
        if not self.has_masks:
            return None
        blobs = self.read([index], keys=['masks'])['masks'][0]
        if not any(blobs):
            return None
        return self._decoded(blobs, decode_mask, index, 'mask')

    def _decoded(self, blobs: List[bytes], decode, index: int, what: str
                 ) -> List[Optional[np.ndarray]]:
        """Each view's blob decoded (None where empty); a blob that does not decode (a
        damaged file: blobs carry no checksum) is an error naming the file, the sample and
        the view."""
        out = []
        for view, blob in enumerate(blobs):
            try:
                out.append(decode(blob) if blob else None)
            except DatasetFormatError as e:
                raise DatasetFormatError(f'{self.path}: sample {index} view {view}: the '
                                         f'stored {what} does not decode ({e}); the file is '
                                         'damaged') from e
        return out

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

