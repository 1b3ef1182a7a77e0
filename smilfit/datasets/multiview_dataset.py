"""mmengine datasets over smilfit's HDF5 format (registered in ``DATASETS``).

:class:`MultiViewHDF5Dataset` yields one sample (all views of one animal at one frame)
per item; :class:`~smilfit.datasets.SingleViewHDF5Dataset` one view per item. Both read
lazily: building the dataset reads only the small per-sample index columns (session,
frame, instance, view validity), so its ``data_list`` stays a few dozen bytes per item
even for 100k samples, and every ``__getitem__`` reads one row from the file. The HDF5
handle is opened on first use in each process (dataloader workers included) and never
pickled.

Splits are by **session** (recording / animal) by default, never by single frames, so no
session leaks between train, val and test: either explicitly (``split_sessions=dict(
train=[...], val=[...], test=[...])``, session names) or by ``split_ratios`` over a
permutation of the sorted session names drawn from ``seed`` (deterministic; see
:func:`split_sessions_by_ratio`). With one recording (a user's own session) there is
nothing to split by session: ``split_by='time'`` cuts every session's frames into
``time_blocks`` contiguous blocks and gives each split ``split_ratios`` of them (a seeded
permutation; :func:`split_frames_by_time`), so held-out frames are whole stretches of the
recording, never the neighbours of a training frame (near copies of it); ``time_gap``
frames on either side of a held-out block are left out of training too. The frames of
each split are in ``metainfo['split_frames']`` (``{split: {session: [[first, last],
...]}}``) for reports to name.

A sample (before the pipeline) is a dict:

- ``images`` (C, H, W, 3) uint8 RGB (a list of (H, W, 3) arrays when the views' sizes
  differ; absent with ``load_images=False`` or when the file has no images),
- ``masks`` (C, H, W) bool and ``mask_valid`` (C,) bool (when the file has masks and
  ``load_masks``; a view without a stored mask gets an all-False mask and
  ``mask_valid`` False: absent, not empty),
- ``keypoints_2d`` (C, K, 2) float32 pixels (x, y) of the stored image, NaN missing;
  ``visible`` (C, K) bool; ``confidence`` (C, K) float32; ``view_valid`` (C,) bool,
- cameras ``K`` (C, 3, 3), ``dist`` (C, 5), ``R`` (C, 3, 3), ``t`` (C, 3) (float64),
  ``image_size`` (C, 2) int (W, H), ``crop`` (C, 3, 3) original -> stored pixels,
- ``keypoints_3d`` (K, 3) float32 when the file has them, ``params`` dict of GT body
  parameters (float32) when the file has them,
- metadata: ``session`` (name), ``session_index``, ``frame``, ``instance``, ``index``
  (row in the file), ``view_indices`` (C,) (file view slot per view, -1 for padding),
  ``camera_names`` (C,) list, ``keypoint_names`` list, ``single_view`` bool and
  ``sample_idx`` (item index, added by mmengine).

With ``max_views`` every multi-view item has exactly ``max_views`` views: valid views are
chosen (at random in training, the first ones in ``test_mode``) and, when there are fewer,
padded with invalid views (``view_valid`` False, NaN keypoints, zero image/mask, a copy of
a real camera), so batches of items stack.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from smilfit.registry.build import build_module
from smilfit.registry import DATASETS, TRANSFORMS

from .fit_labels import FitLabels, load_fit_labels
from .hdf5_format import DatasetReader, decode_image, decode_mask
from .transforms import unseeded_rng

__all__ = ['HDF5DatasetBase', 'MultiViewHDF5Dataset', 'split_sessions_by_ratio',
           'split_frames_by_time', 'SPLITS']

SPLITS = ('train', 'val', 'test')
# Per-view array keys of a sample (leading axis C).
VIEW_KEYS = ('keypoints_2d', 'visible', 'confidence', 'K', 'dist', 'R', 't', 'image_size',
             'crop')
_INDEX_KEYS = ['session', 'frame', 'instance', 'valid']


def split_sessions_by_ratio(session_names: Sequence[str], ratios: Sequence[float],
                            seed: int = 0) -> Dict[str, List[str]]:
    """Assign sessions to ``train``/``val``/``test`` by ``ratios``, deterministically.

    The sorted names are permuted with ``numpy.random.default_rng(seed)`` and cut into
    consecutive groups whose sizes follow ``ratios`` by largest remainder; a split with a
    non-zero ratio that got no session takes one from the largest split (when there are at
    least as many sessions as such splits).

    Returns:
        ``{'train': [...], 'val': [...], 'test': [...]}`` (each sorted).
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    if ratios.shape != (3,) or np.any(ratios < 0) or ratios.sum() <= 0:
        raise ValueError(f'split_ratios must be three non-negative numbers (train, val, '
                         f'test), got {ratios.tolist()}')
    names = sorted(str(n) for n in session_names)
    n = len(names)
    order = np.random.default_rng(seed).permutation(n)
    shares = ratios / ratios.sum()
    want = shares * n
    counts = np.floor(want).astype(np.int64)
    for k in np.argsort(-(want - counts), kind='stable')[:n - counts.sum()]:
        counts[k] += 1                                   # largest remainder
    nonzero = shares > 0
    if n >= nonzero.sum():
        for k in np.flatnonzero(nonzero & (counts == 0)):
            counts[np.argmax(counts)] -= 1               # from the largest split
            counts[k] += 1
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return {split: sorted(names[i] for i in order[bounds[k]:bounds[k + 1]])
            for k, split in enumerate(SPLITS)}


def split_frames_by_time(frames: np.ndarray, blocks: int, ratios: Sequence[float],
                         seed: int = 0, gap: int = 0
                         ) -> Tuple[Dict[str, np.ndarray], Dict[str, List[List[int]]]]:
    """Assign one session's frames to ``train``/``val``/``test`` by contiguous time blocks.

    The session's distinct frame numbers, in order, are cut into ``blocks`` runs of about
    equal length (fewer when there are fewer frames); the runs are assigned to the splits
    as :func:`split_sessions_by_ratio` assigns sessions (``ratios``, a permutation drawn
    from ``seed``). A training frame within ``gap`` frame numbers of a held-out (val or
    test) run is dropped: it would be a near copy of a frame held out.

    Args:
        frames: (N,) frame number of every sample of the session (repeats allowed: several
            animals in a frame go to the same split).

    Returns:
        ``{split: (N,) bool}`` the samples of each split, and ``{split: [[first frame,
        last frame], ...]}`` its runs (the frames dropped by ``gap`` are not counted out
        of the runs: the runs say which stretches each split was drawn from).
    """
    blocks = int(blocks)
    if blocks < 1:
        raise ValueError(f'time_blocks must be >= 1, got {blocks}')
    if int(gap) < 0:
        raise ValueError(f'time_gap must be >= 0, got {gap}')
    frames = np.asarray(frames, dtype=np.int64)
    distinct = np.unique(frames)
    n = min(blocks, len(distinct))
    runs = np.array_split(distinct, n) if n else []
    names = [f'{i:09d}' for i in range(len(runs))]
    assigned = split_sessions_by_ratio(names, ratios, seed)
    masks = {split: np.zeros(len(frames), dtype=bool) for split in SPLITS}
    ranges: Dict[str, List[List[int]]] = {split: [] for split in SPLITS}
    for split, members in assigned.items():
        for name in members:
            run = runs[int(name)]
            masks[split] |= np.isin(frames, run)
            ranges[split].append([int(run[0]), int(run[-1])])
        ranges[split].sort()
    if gap:
        held = [r for split in ('val', 'test') for r in ranges[split]]
        near = np.zeros(len(frames), dtype=bool)
        for first, last in held:
            near |= (frames >= first - gap) & (frames <= last + gap)
        masks['train'] &= ~near
    return masks, ranges


#: Values of ``fit_outlier_labels``.
FIT_OUTLIER_LABELS = ('cameras', 'camera_keypoints')


class HDF5DatasetBase(BaseDataset):
    """What the multi- and single-view datasets share (see the module docstring).

    Args:
        ann_file: the HDF5 dataset (joined with ``data_root`` when relative).
        split: ``None`` (every session), ``'train'``, ``'val'`` or ``'test'``.
        split_ratios: (train, val, test) shares of the sessions.
        split_sessions: explicit ``{split: [session names]}``; overrides ``split_ratios``.
        seed: seed of the session (or time block) permutation for ``split_ratios``.
        split_by: ``'session'`` (default) or ``'time'``: contiguous time blocks of every
            session (:func:`split_frames_by_time`; ``split_sessions`` does not apply).
        time_blocks: blocks per session with ``split_by='time'``.
        time_gap: frames on either side of a held-out block also left out of training.
        fit_results: a ``tools/fit.py`` ``fit_results.h5`` of these samples' recording
            (a relative path from the working directory, else under ``data_root``):
            its fits become training labels (:mod:`.fit_labels`): ``params`` are the
            fitted parameters, ``keypoints_3d`` the fitted keypoints, the 2D labels of
            views the fit flagged as off (a miscalibrated camera) get confidence 0, and
            samples the fit failed on or fitted poorly are left out
            (``metainfo['fit_left_out']`` counts them by reason).
        fit_max_error_ratio: a sample whose fit's median reprojection error is above
            this many times the median sample's is left out (None: keep them).
        fit_outlier_labels: which of the fit's labels the fit's report singles out get
            confidence 0: ``'cameras'`` (the default), every label of a camera far off
            the others; ``'camera_keypoints'``, also each (camera, keypoint) whose
            labels lie far from where the other cameras put that keypoint (a camera
            labelled with another convention; :mod:`.fit_labels`).
        pipeline: transforms (configs or callables).
        max_views: see the module docstring (multi-view only).
        load_images: decode images (False: keypoints and cameras only, much faster).
        load_masks: decode masks when the file has them.
        min_valid_views: drop samples with fewer valid views.
        test_mode, lazy_init, data_root, indices, serialize_data, max_refetch:
            as in :class:`mmengine.dataset.BaseDataset`.
    """

    SINGLE_VIEW = False

    def __init__(self, ann_file: str, split: Optional[str] = None,
                 split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
                 split_sessions: Optional[Mapping[str, Sequence[str]]] = None,
                 seed: int = 0, split_by: str = 'session', time_blocks: int = 10,
                 time_gap: int = 0, fit_results: Optional[str] = None,
                 fit_max_error_ratio: Optional[float] = 3.0,
                 fit_outlier_labels: str = 'cameras', pipeline: Sequence[Any] = (),
                 max_views: Optional[int] = None,
                 load_images: bool = True, load_masks: bool = True, min_valid_views: int = 1,
                 test_mode: bool = False, lazy_init: bool = False, data_root: str = '',
                 indices: Optional[Any] = None, serialize_data: bool = True,
                 metainfo: Optional[Mapping] = None, max_refetch: int = 1000) -> None:
        if split is not None and split not in SPLITS:
            raise ValueError(f'split must be None or one of {SPLITS}, got {split!r}')
        if split_sessions is not None:
            unknown = sorted(set(split_sessions) - set(SPLITS))
            if unknown:
                raise ValueError(f'split_sessions: unknown splits {unknown}; use {SPLITS}')
        if split_by not in ('session', 'time'):
            raise ValueError(f"split_by must be 'session' or 'time', got {split_by!r}")
        if split_by == 'time' and split_sessions is not None:
            raise ValueError("split_sessions assigns whole sessions; with split_by='time' "
                             'every session is cut into time blocks: drop one of them')
        if int(time_blocks) < 1 or int(time_gap) < 0:
            raise ValueError(f'time_blocks must be >= 1 and time_gap >= 0, got '
                             f'{time_blocks} and {time_gap}')
        self.split_by, self.time_blocks, self.time_gap = split_by, int(time_blocks), \
            int(time_gap)
        self.fit_results = None if fit_results is None else str(fit_results)
        self.fit_max_error_ratio = fit_max_error_ratio
        if fit_outlier_labels not in FIT_OUTLIER_LABELS:
            raise ValueError(f'fit_outlier_labels must be one of {FIT_OUTLIER_LABELS}, got '
                             f'{fit_outlier_labels!r}')
        self.fit_outlier_labels = fit_outlier_labels
        self._fit_labels: Optional[FitLabels] = None
        if max_views is not None and int(max_views) < 1:
            raise ValueError(f'max_views must be >= 1 or None, got {max_views}')
        self.split = split
        self.split_ratios = tuple(float(r) for r in split_ratios)
        self.split_sessions = None if split_sessions is None else \
            {k: [str(s) for s in v] for k, v in split_sessions.items()}
        self.seed = int(seed)
        self.max_views = None if max_views is None else int(max_views)
        self.load_images, self.load_masks = bool(load_images), bool(load_masks)
        self.min_valid_views = int(min_valid_views)
        self._reader: Optional[DatasetReader] = None
        # Built with smilfit's registry (mmengine's Compose would use the root registry,
        # which finds smilfit's transforms only under the 'smilfit' default scope).
        pipeline = [build_module(TRANSFORMS, t, 'transform') for t in pipeline]
        super().__init__(ann_file=ann_file, metainfo=metainfo, data_root=data_root,
                         data_prefix=dict(), indices=indices, serialize_data=serialize_data,
                         pipeline=list(pipeline), test_mode=test_mode, lazy_init=lazy_init,
                         max_refetch=max_refetch)

    # ------------------------------------------------------------------ file access
    @property
    def reader(self) -> DatasetReader:
        """The HDF5 reader (pickle-safe; opens its file once per process)."""
        if self._reader is None:
            self._reader = DatasetReader(self.ann_file)
        return self._reader

    def split_session_names(self) -> Dict[str, List[str]]:
        """``{split: [session names]}`` for this file and the split settings."""
        names = list(self.reader.session_names)
        if self.split_sessions is None:
            return split_sessions_by_ratio(names, self.split_ratios, self.seed)
        known = set(names)
        out = {s: sorted(self.split_sessions.get(s, [])) for s in SPLITS}
        for s, members in out.items():
            missing = sorted(set(members) - known)
            if missing:
                raise ValueError(f'split_sessions[{s!r}]: unknown sessions {missing} in '
                                 f'{self.ann_file} (it has {sorted(known)})')
        seen: Dict[str, str] = {}
        for s, members in out.items():
            for m in members:
                if m in seen:
                    raise ValueError(f'split_sessions: session {m!r} is in both '
                                     f'{seen[m]!r} and {s!r}')
                seen[m] = s
        return out

    @property
    def fit_labels(self) -> 'FitLabels':
        """The fit's labels aligned with this file's rows (read once)."""
        if self._fit_labels is None:
            self._fit_labels = load_fit_labels(
                self._resolve(self.fit_results), self.reader, self.fit_max_error_ratio,
                camera_keypoints=self.fit_outlier_labels == 'camera_keypoints')
        return self._fit_labels

    def _resolve(self, path: str) -> str:
        """A file the config names besides the annotation file (``fit_results``): as
        given where it exists there (a relative path as typed on a command line, from
        the working directory: ``tools/fit.py`` writes its results under ``work_dirs``),
        else under ``data_root`` (beside the annotation file).

        Raises:
            FileNotFoundError: a relative path that is neither.
            ValueError: a relative path that names two different files, one from the
                working directory and one under ``data_root``.
        """
        from os.path import exists, isabs, join, samefile
        if isabs(path) or not self.data_root:
            return path
        beside = join(self.data_root, path)
        if not exists(path):
            if not exists(beside):
                raise FileNotFoundError(f'{path!r} is neither a file from the working '
                                        f'directory nor under data_root ({beside})')
            return beside
        if exists(beside) and not samefile(path, beside):
            raise ValueError(f'{path!r} names two files: {path} (from the working directory) '
                             f'and {beside} (under data_root); give an absolute path')
        return path

    def _add_fit_labels(self, sample: Dict[str, Any], row: int, src: np.ndarray) -> None:
        """The fit's labels of file row ``row`` on a loaded sample (views ``src``)."""
        labels = self.fit_labels
        sample['params'] = {k: v[row].astype(np.float32) for k, v in labels.params.items()}
        sample['keypoints_3d'] = labels.keypoints_3d[row].astype(np.float32)
        bad = labels.bad_views[row][src][:, None] | labels.bad_labels[row][src]
        sample['confidence'] = np.where(bad, np.float32(0), sample['confidence'])
        sample['fit_error_px'] = np.float32(labels.error_px[row])

    # ------------------------------------------------------------------ index
    def load_data_list(self) -> List[dict]:
        reader = self.reader
        sessions = list(reader.session_names)
        by_time = self.split_by == 'time'
        splits = {s: sorted(sessions) for s in SPLITS} if by_time else \
            self.split_session_names()
        wanted = set(sessions) if self.split is None else set(splits[self.split])
        n = len(reader)
        cols = reader.read(np.arange(n), keys=_INDEX_KEYS) if n else \
            dict(session=np.zeros(0), frame=np.zeros(0), instance=np.zeros(0),
                 valid=np.zeros((0, reader.num_views), bool))
        session = cols['session'].astype(np.int64)
        wanted_index = np.array([name in wanted for name in sessions] + [False])
        keep = wanted_index[np.where((session >= 0) & (session < len(sessions)), session, -1)]
        split_frames = None
        if by_time:
            keep, split_frames = self._time_split(keep, session, cols['frame'], sessions)
        keep &= cols['valid'].sum(1) >= self.min_valid_views
        if self.fit_results is not None:
            labels = self.fit_labels
            reasons, counts = np.unique(labels.reason[keep & ~labels.usable],
                                        return_counts=True)
            self._metainfo['fit_results'] = self._resolve(self.fit_results)
            self._metainfo['fit_left_out'] = {str(r): int(c) for r, c in zip(reasons, counts)}
            self._metainfo['fit_silenced'] = dict(labels.silenced)
            keep &= labels.usable
        self._metainfo.update(
            keypoint_names=list(reader.keypoint_names), num_views=reader.num_views,
            units=reader.units, session_names=sorted(wanted), split=self.split,
            split_by=self.split_by, split_sessions=splits)
        if split_frames is not None:
            self._metainfo['split_frames'] = split_frames
        if reader.input_crops is not None:   # (checkpoints carry it: how to crop at inference)
            self._metainfo['input_crops'] = reader.input_crops
        data_list: List[dict] = []
        for j in np.flatnonzero(keep):
            base = dict(index=int(j), session_index=int(session[j]),
                        frame=int(cols['frame'][j]), instance=int(cols['instance'][j]))
            data_list.extend(self._items(base, cols['valid'][j]))
        if not data_list:
            print_log(f'{type(self).__name__}: no samples in split {self.split!r} of '
                      f'{self.ann_file} (sessions {sorted(wanted)})', logger='current',
                      level=30)
        return data_list

    def _time_split(self, keep: np.ndarray, session: np.ndarray, frame: np.ndarray,
                    sessions: Sequence[str]):
        """``keep`` restricted to this split's time blocks of every session, and
        ``{split: {session: [[first, last], ...]}}``."""
        split_frames: Dict[str, Dict[str, List[List[int]]]] = {s: {} for s in SPLITS}
        chosen = np.zeros_like(keep) if self.split is not None else keep.copy()
        for index, name in enumerate(sessions):
            rows = np.flatnonzero(session == index)
            if not len(rows):
                continue
            masks, ranges = split_frames_by_time(frame[rows], self.time_blocks,
                                                 self.split_ratios, self.seed,
                                                 self.time_gap)
            for s in SPLITS:
                split_frames[s][name] = ranges[s]
            if self.split is not None:
                chosen[rows[masks[self.split]]] = True
        return keep & chosen, split_frames

    def _items(self, base: dict, valid: np.ndarray) -> List[dict]:
        """The items of one sample (``valid``: (C,) bool views)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ loading
    def _load(self, info: dict, views: np.ndarray, pad: int = 0) -> Dict[str, Any]:
        """Read file row ``info['index']`` restricted to ``views`` (+ ``pad`` invalid
        padding views)."""
        reader = self.reader
        keys = ['valid', *VIEW_KEYS]
        if reader.has_keypoints_3d:
            keys.append('keypoints_3d')
        if reader.param_names:
            keys.append('params')
        load_images = self.load_images
        load_masks = self.load_masks and reader.has_masks
        if load_images:
            keys.append('images')
        if load_masks:
            keys.append('masks')
        row = reader.read([info['index']], keys=keys)
        views = np.asarray(views, dtype=np.int64)
        src = np.concatenate([views, np.full(pad, views[0] if len(views) else 0)])
        sample: Dict[str, Any] = {}
        for key in VIEW_KEYS:
            sample[key] = np.array(row[key][0][src])
        sample['keypoints_2d'] = sample['keypoints_2d'].astype(np.float32)
        sample['confidence'] = sample['confidence'].astype(np.float32)
        sample['visible'] = sample['visible'].astype(bool)
        sample['view_valid'] = np.concatenate([row['valid'][0][views].astype(bool),
                                               np.zeros(pad, bool)])
        if pad:
            sample['keypoints_2d'][-pad:] = np.nan
            sample['confidence'][-pad:] = 0
            sample['visible'][-pad:] = False
        for key, present, decode in (('images', load_images, decode_image),
                                     ('masks', load_masks, decode_mask)):
            if not present:
                continue
            blobs = row[key][0]
            decoded: List[Optional[np.ndarray]] = [decode(blobs[v]) if blobs[v] else None
                                                   for v in views]
            if key == 'images' and all(d is None for d in decoded):
                continue                 # a sample without images (keypoint-only data)
            if key == 'masks':
                sample['mask_valid'] = np.array([d is not None for d in decoded]
                                                + [False] * pad)
            out = []
            for k, v in enumerate(src):
                img = decoded[k] if k < len(views) else None
                if img is None:
                    w, h = (int(x) for x in sample['image_size'][k])
                    img = np.zeros((h, w, 3) if key == 'images' else (h, w), np.uint8)
                out.append(img if key == 'images' else img > 0)
            if all(o.shape == out[0].shape for o in out):
                sample[key] = np.stack(out)
            else:
                sample[key] = out
        if 'keypoints_3d' in row:
            sample['keypoints_3d'] = row['keypoints_3d'][0].astype(np.float32)
        if 'params' in row:
            sample['params'] = {k: np.asarray(v[0], dtype=np.float32)
                                for k, v in row['params'].items()}
        if self.fit_results is not None:
            self._add_fit_labels(sample, int(info['index']), src)
        session = int(info['session_index'])
        cams = reader.camera_names[session] if session < len(reader.camera_names) else []
        sample.update(
            session=reader.session_names[session], session_index=session,
            frame=int(info['frame']), instance=int(info.get('instance', 0)),
            index=int(info['index']),
            view_indices=np.concatenate([views, np.full(pad, -1)]).astype(np.int64),
            camera_names=[cams[v] if v < len(cams) else '' for v in views] + [''] * pad,
            keypoint_names=list(reader.keypoint_names), single_view=self.SINGLE_VIEW,
            sample_idx=int(info.get('sample_idx', 0)))
        return sample

    def load_sample(self, idx: int) -> Dict[str, Any]:
        """The raw sample of item ``idx`` (before the pipeline)."""
        raise NotImplementedError

    def prepare_data(self, idx: int) -> Any:
        return self.pipeline(self.load_sample(idx))

    def __repr__(self) -> str:
        n = len(self) if self._fully_initialized else 'not loaded'
        return (f'{type(self).__name__}(ann_file={self.ann_file!r}, split={self.split!r}, '
                f'items={n}, max_views={self.max_views}, load_images={self.load_images})')


@DATASETS.register_module()
class MultiViewHDF5Dataset(HDF5DatasetBase):
    """One item per sample: every view of one animal at one frame (see the module
    docstring for the arguments' effects and the sample layout)."""

    def _items(self, base: dict, valid: np.ndarray) -> List[dict]:
        return [base]

    def load_sample(self, idx: int) -> Dict[str, Any]:
        info = self.get_data_info(idx)
        C = self.reader.num_views
        if self.max_views is None:
            return self._load(info, np.arange(C))
        valid = np.flatnonzero(self.reader.read([info['index']], keys=['valid'])['valid'][0])
        if len(valid) > self.max_views:
            if self.test_mode:
                valid = valid[:self.max_views]
            else:
                valid = np.sort(unseeded_rng().choice(valid, self.max_views, replace=False))
        if len(valid) == 0:
            valid = np.arange(min(C, self.max_views))
        return self._load(info, valid, pad=self.max_views - len(valid))

