"""Clips of consecutive frames for video models (registered in ``DATASETS``).

:class:`ClipHDF5Dataset` yields one item per *clip*: ``clip_length`` consecutive frames
(``frame_step`` apart) of one session and instance, all with the same view slots. Every
frame goes through the pipeline like a :class:`~smilfit.datasets.MultiViewHDF5Dataset`
sample (so the usual ``PackInputs`` pipelines work unchanged) and the packed frames are
stacked along a new frame axis T:

- ``inputs`` (T, C, 3, H, W) (or (T, 3, H, W) for single-view packing),
- ``data_samples``: every tensor stacked to (T, ...) (``keypoints_2d`` (T, C, N, 2),
  ``K`` (T, C, 3, 3), ``params`` entries (T, ...), ...), ``frame`` (T,) int64 frame
  numbers, ``frame_valid`` (T,) bool, and the clip's metadata once (``session``,
  ``session_index``, ``instance``, ``camera_names`` of its first frame).

With ``collate_fn=dict(type='default_collate')`` a batch is (B, T, ...), which is what
:class:`~smilfit.models.TemporalRegressor` and :func:`~smilfit.models.adapt_to_video`
read.

Clips start at the session's first frame and every ``clip_stride`` frames after it (the
last clip may run past the session's end). A frame that is missing (a gap in the
recording, past the end, or with too few valid views) is a **padding** frame:
``frame_valid`` is False and it is a copy of the nearest real frame of the clip (image
and labels alike, so every per-frame loss stays correct; temporal terms skip it through
``frame_valid``). Clips without any real frame are never made.

Splits are by session exactly as in the frame datasets (``split``, ``split_ratios``,
``split_sessions``, ``seed``).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from smilfit.registry import DATASETS

from .multiview_dataset import MultiViewHDF5Dataset
from .transforms import unseeded_rng

__all__ = ['ClipHDF5Dataset', 'stack_frames']


def stack_frames(frames: List[Dict[str, Any]], frame_numbers: np.ndarray,
                 frame_valid: np.ndarray) -> Dict[str, Any]:
    """Stack T packed frames (``dict(inputs, data_samples)``) along a new first axis.

    Tensors (and ``params`` entries) are stacked to (T, ...); other metadata is taken
    from the first frame; ``frame`` (T,) and ``frame_valid`` (T,) are set.

    Raises:
        ValueError: a frame lacks a key the first frame has, or shapes differ (names
            the key).
    """
    first = frames[0]
    out: Dict[str, Any] = {}
    if 'inputs' in first:
        shapes = {tuple(f['inputs'].shape) for f in frames}
        if len(shapes) > 1:
            raise ValueError(f'clip frames have different input shapes {sorted(shapes)}; add '
                             'ResizeViews to the pipeline')
        out['inputs'] = torch.stack([f['inputs'] for f in frames])
    samples: Dict[str, Any] = {}
    for key, value in first['data_samples'].items():
        try:
            if key == 'params' and isinstance(value, dict):
                samples[key] = {k: torch.stack([f['data_samples'][key][k] for f in frames])
                                for k in value}
            elif isinstance(value, torch.Tensor):
                samples[key] = torch.stack([f['data_samples'][key] for f in frames])
            else:
                samples[key] = value
        except (KeyError, RuntimeError) as err:
            raise ValueError(f'clip frames disagree on data_samples[{key!r}]: {err}') from err
    samples['frame'] = torch.as_tensor(np.asarray(frame_numbers), dtype=torch.int64)
    samples['frame_valid'] = torch.as_tensor(np.asarray(frame_valid), dtype=torch.bool)
    out['data_samples'] = samples
    return out


@DATASETS.register_module()
class ClipHDF5Dataset(MultiViewHDF5Dataset):
    """Clips of consecutive frames of one session (see the module docstring).

    Args:
        ann_file: the HDF5 dataset.
        clip_length: T, frames per clip (>= 1).
        clip_stride: frames between the starts of consecutive clips (default
            ``clip_length``: clips do not overlap; 1: every start frame).
        frame_step: frame-number spacing inside a clip (2: every other frame).
        min_valid_frames: drop clips with fewer real frames.
        max_views: view slots per frame (chosen once per clip: at random among the first
            frame's valid views in training, the first ones in ``test_mode``).
        other args: as :class:`~smilfit.datasets.MultiViewHDF5Dataset`.
    """

    def __init__(self, ann_file: str, clip_length: int = 8, clip_stride: Optional[int] = None,
                 frame_step: int = 1, min_valid_frames: int = 1, **kwargs: Any) -> None:
        if int(clip_length) < 1:
            raise ValueError(f'clip_length must be >= 1, got {clip_length}')
        stride = int(clip_length if clip_stride is None else clip_stride)
        if stride < 1 or int(frame_step) < 1:
            raise ValueError(f'clip_stride and frame_step must be >= 1, got {clip_stride}, '
                             f'{frame_step}')
        if not 1 <= int(min_valid_frames) <= int(clip_length):
            raise ValueError(f'min_valid_frames must be in [1, clip_length={clip_length}], '
                             f'got {min_valid_frames}')
        self.clip_length, self.clip_stride = int(clip_length), stride
        self.frame_step, self.min_valid_frames = int(frame_step), int(min_valid_frames)
        super().__init__(ann_file, **kwargs)

    # ------------------------------------------------------------------ index
    def load_data_list(self) -> List[dict]:
        frames = super().load_data_list()
        groups: Dict[tuple, Dict[int, int]] = defaultdict(dict)
        for item in frames:
            groups[(item['session_index'], item['instance'])][item['frame']] = item['index']
        T, step = self.clip_length, self.frame_step
        clips: List[dict] = []
        for (session, instance), rows in sorted(groups.items()):
            numbers = np.array(sorted(rows))
            start = int(numbers[0])
            while start <= int(numbers[-1]):
                wanted = start + step * np.arange(T)
                index = [rows.get(int(f), -1) for f in wanted]
                real = [i >= 0 for i in index]
                if sum(real) >= self.min_valid_frames:
                    clips.append(dict(session_index=int(session), instance=int(instance),
                                      frames=[int(f) for f in wanted],
                                      indices=[int(i) for i in index]))
                start += self.clip_stride * step
        return clips

    # ------------------------------------------------------------------ loading
    def _clip_views(self, first_index: int) -> tuple:
        """View slots of the clip (from its first real frame) and the padding count."""
        C = self.reader.num_views
        if self.max_views is None:
            return np.arange(C), 0
        valid = np.flatnonzero(self.reader.read([first_index], keys=['valid'])['valid'][0])
        if len(valid) > self.max_views:
            if self.test_mode:
                valid = valid[:self.max_views]
            else:
                valid = np.sort(unseeded_rng().choice(valid, self.max_views, replace=False))
        if len(valid) == 0:
            valid = np.arange(min(C, self.max_views))
        return valid, self.max_views - len(valid)

    def load_sample(self, idx: int) -> List[Dict[str, Any]]:
        """The T raw frames of clip ``idx`` (padding frames are copies of the nearest real
        frame), each a frame-dataset sample with ``frame_valid``."""
        info = self.get_data_info(idx)
        indices = np.asarray(info['indices'])
        real = np.flatnonzero(indices >= 0)
        views, pad = self._clip_views(int(indices[real[0]]))
        out = []
        for t, row in enumerate(indices):
            src = row if row >= 0 else indices[real[np.argmin(np.abs(real - t))]]
            frame = self._load(dict(index=int(src), session_index=info['session_index'],
                                    frame=int(info['frames'][t]),
                                    instance=info['instance'],
                                    sample_idx=info.get('sample_idx', idx)), views, pad)
            frame['frame_valid'] = bool(row >= 0)
            out.append(frame)
        return out

    def prepare_data(self, idx: int) -> Any:
        frames = self.load_sample(idx)
        packed = [self.pipeline(dict(f)) for f in frames]
        if any(p is None for p in packed):
            return None                     # a transform rejected a frame: refetch
        info = self.get_data_info(idx)
        clip = stack_frames(packed, np.asarray(info['frames']),
                            np.array([f['frame_valid'] for f in frames]))
        clip['data_samples']['sample_idx'] = int(info.get('sample_idx', idx))
        return clip

    def __repr__(self) -> str:
        n = len(self) if self._fully_initialized else 'not loaded'
        return (f'{type(self).__name__}(ann_file={self.ann_file!r}, split={self.split!r}, '
                f'clips={n}, clip_length={self.clip_length}, clip_stride='
                f'{self.clip_stride}, max_views={self.max_views})')
