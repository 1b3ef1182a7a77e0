"""Say, before training, what a run trains and validates on: which frames of which
sessions, and what a fit used as labels left out. A run whose held-out frames leaked into
training (or whose labels lost half the samples) shows it in its first lines, not after
the reports."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
from mmengine.hooks import Hook
from mmengine.logging import print_log

from smilfit.registry import HOOKS


#: Stretches of frames listed one by one per session; more are summarised.
MAX_LISTED = 8


def frame_ranges(ranges: Sequence[Sequence[int]]) -> str:
    """``[[0, 9], [26, 93]]`` as ``'0-9, 26-93'`` (a single frame as ``'5'``)."""
    return ', '.join(str(a) if a == b else f'{a}-{b}' for a, b in ranges)


def frame_runs(frames: np.ndarray) -> List[List[int]]:
    """The stretches of consecutive frames in ``frames`` (any order, repeats allowed):
    ``[[first, last], ...]``."""
    frames = np.unique(np.asarray(frames, dtype=np.int64))
    if frames.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(frames) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [frames.size - 1]])
    return [[int(frames[a]), int(frames[b])] for a, b in zip(starts, ends)]


def _session_frames(dataset: Any, names: Sequence[str]) -> Dict[str, List[List[int]]]:
    """``{session name: stretches of frames}`` of the samples of ``dataset`` (empty where
    its items do not say their session and frame)."""
    get = getattr(dataset, 'get_data_info', None)
    if get is None or not len(dataset):
        return {}
    infos = [get(i) for i in range(len(dataset))]
    if not all('frame' in info and 'session_index' in info for info in infos):
        return {}
    session = np.array([int(info['session_index']) for info in infos])
    frame = np.array([int(info['frame']) for info in infos])
    return {(names[s] if s < len(names) else f'session {s}'): frame_runs(frame[session == s])
            for s in np.unique(session)}


def describe_dataset(role: str, dataset: Any) -> str:
    """One line on ``dataset`` (``role``: 'training', 'validating'): its samples and,
    where its items and ``metainfo`` say them, its split, the frames of each session in
    it (the samples' own frames, after any gap around held-out blocks) and the samples a
    fit's labels left out by reason."""
    meta: Mapping[str, Any] = getattr(dataset, 'metainfo', None) or {}
    line = f'{role} on {len(dataset)} samples'
    if meta.get('split') is not None:
        line += f" (split {meta['split']!r} by {meta.get('split_by', 'session')})"
    parts = []
    for session, runs in _session_frames(dataset, list(meta.get('session_names') or [])).items():
        if len(runs) <= MAX_LISTED:
            parts.append(f'{session} frames {frame_ranges(runs)}')
        else:
            count = sum(b - a + 1 for a, b in runs)
            parts.append(f'{session} {count} frames in {len(runs)} stretches from '
                         f'{runs[0][0]} to {runs[-1][1]}')
    if parts:
        line += ': ' + '; '.join(parts)
    if meta.get('fit_results') is not None:
        left = {k: v for k, v in (meta.get('fit_left_out') or {}).items() if v}
        line += f"; labels from the fit {meta['fit_results']}, " + (
            'left out: ' + ', '.join(f'{n} ({reason})' for reason, n in left.items())
            if left else 'none left out')
        silenced = meta.get('fit_silenced') or {}
        if silenced:
            line += '; labels silenced: ' + '; '.join(
                f"{camera} {'(every keypoint)' if keypoints is None else ', '.join(keypoints)}"
                for camera, keypoints in silenced.items())
    return line


@HOOKS.register_module()
class DataSplitHook(Hook):
    """Before training, log the training and validation sets (:func:`describe_dataset`):
    how many samples, which split, which frames of each session, and where a fit supplies
    the labels, how many samples it left out and why, and which cameras' labels (or
    which keypoints' in a camera) it silences."""

    priority = 'LOW'

    def before_train(self, runner) -> None:
        lines = [describe_dataset('training', runner.train_dataloader.dataset)]
        if runner.val_loop is not None:
            lines.append(describe_dataset('validating', runner.val_dataloader.dataset))
        for line in lines:
            print_log(f'DataSplitHook: {line}', logger='current')


__all__ = ['DataSplitHook', 'describe_dataset', 'frame_ranges', 'frame_runs']
