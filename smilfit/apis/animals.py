"""Who is who in a dataset: one animal per (session, identity), and the frames its
skeleton is estimated from.

A fit's shared parameters (bone translations, keypoint offsets, shape: the animal's
skeleton) belong to one animal in one session, whatever the batch size: two mice in one
session get two skeletons, a 20,000-frame session one. :func:`fit_dataset
<smilfit.apis.fitting.fit_dataset>` estimates each animal's skeleton once from up to
``skeleton_frames`` of its frames spread evenly over the session (bounded memory and time
whatever the recording's length), then fits every frame in batches with that skeleton
held fixed.

Identity within a session: the SLEAP track where a sample has one, else its instance
index (a single-animal session: instance 0, the session itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from smilfit.body_models.markers import definitions_from_text
from smilfit.datasets.hdf5.files import read_h5
from smilfit.registrants.marker_placement import (KEYPOINT_DEFINITIONS,
                                                  keypoint_definitions_text, placed_points)
from smilfit.utils.atomic import load_npz_whole

#: The most frames per animal its skeleton is estimated from (``data.skeleton_frames``).
DEFAULT_SKELETON_FRAMES = 200


@dataclass(frozen=True)
class Animals:
    """The animals of a dataset.

    Attributes:
        of_sample: (N,) animal index of every sample.
        session: (A,) session index of every animal.
        identity: (A,) its identity within the session (track name, or ``'instance
            <i>'`` without tracks).
    """

    of_sample: np.ndarray
    session: np.ndarray
    identity: np.ndarray

    @property
    def count(self) -> int:
        return int(self.session.shape[0])


def identify_animals(session: np.ndarray, instance: np.ndarray,
                     track: Sequence[str]) -> Animals:
    """One animal per (session, track); samples without a track are told apart by their
    instance index (``'instance <i>'``).

    Args:
        session: (N,) session index per sample.
        instance: (N,) instance index per sample (within its frame).
        track: (N,) track names ('' when untracked).

    Returns:
        :class:`Animals`, numbered in order of (session, identity).
    """
    session = np.asarray(session, np.int64)
    instance = np.asarray(instance, np.int64)
    track = np.asarray([t.decode() if isinstance(t, bytes) else str(t) for t in track],
                       dtype=object)
    if not (session.shape == instance.shape == track.shape):
        raise ValueError(f'session, instance and track must have one entry per sample, got '
                         f'{session.shape}, {instance.shape}, {track.shape}')
    identity = np.array([t if t else f'instance {i}' for i, t in zip(instance, track)],
                        dtype=object)
    keys = np.array([f'{s}\x00{ident}' for s, ident in zip(session, identity)], dtype=object)
    unique, of_sample = np.unique(keys, return_inverse=True)
    sess = np.array([int(k.split('\x00', 1)[0]) for k in unique], np.int64)
    ident = np.array([k.split('\x00', 1)[1] for k in unique], dtype=object)
    return Animals(of_sample=of_sample.astype(np.int64), session=sess, identity=ident)


def skeleton_samples(animals: Animals, frame: np.ndarray, max_frames: int) -> List[np.ndarray]:
    """Per animal, the sample indices its skeleton is estimated from: all of its samples,
    or ``max_frames`` of them spread evenly over its frames.

    Args:
        animals: :func:`identify_animals` of the dataset.
        frame: (N,) frame index per sample.
        max_frames: the most samples per animal (>= 1).

    Returns:
        A list of A sorted index arrays.
    """
    if max_frames < 1:
        raise ValueError(f'skeleton_frames must be >= 1, got {max_frames}')
    frame = np.asarray(frame)
    out = []
    for a in range(animals.count):
        idx = np.flatnonzero(animals.of_sample == a)
        idx = idx[np.argsort(frame[idx], kind='stable')]
        if idx.size > max_frames:
            idx = idx[np.unique(np.round(np.linspace(0, idx.size - 1, max_frames)).astype(int))]
        out.append(np.sort(idx))
    return out


def pack_animals(sizes: Sequence[int], capacity: int) -> List[List[int]]:
    """Animals in calls of at most ``capacity`` samples (an animal is never split; one
    larger than ``capacity`` gets a call of its own), in order."""
    calls: List[List[int]] = []
    filled = 0
    for a, n in enumerate(sizes):
        if calls and filled + n <= capacity:
            calls[-1].append(a)
            filled += n
        else:
            calls.append([a])
            filled = n
    return calls




def load_skeleton(spec: Mapping[str, Any], names: Sequence[str],
                  shapes: Mapping[str, Tuple[int, ...]],
                  joint_names: Sequence[str]) -> Dict[str, np.ndarray]:
    """One animal's skeleton from an earlier dataset fit, to reuse (``data.skeleton``).

    A lab calibrates its strain once on a well-covered session; later sessions, with few
    cameras, fit with that skeleton held fixed (``mode='fixed'``) or start their own
    per-animal estimate from it (``mode='init'``).

    Args:
        spec: ``dict(path='.../fit_results.h5', animal=0, mode='fixed')``; ``animal`` is
            the row in the file's ``animals/`` (an int) or an identity (a track name).
        names: the shared parameters the registrant fits (each must be in the file).
        shapes: their per-animal shapes (``registrant.param_shapes()``).
        joint_names: the body model's joints (must be the file's).

    Returns:
        ``{name: (...) array}`` of the animal's parameters, plus ``mode`` and, where
        the fit placed its labels as markers, the body model's keypoint definitions
        (``keypoint_definitions``, JSON text: its offsets are in the markers' frames).

    Raises:
        FileNotFoundError, KeyError, ValueError: a missing file, animal or parameter, a
            fit of another body model, or a bad option, each naming what is wrong.
    """
    spec = dict(spec)
    unknown = sorted(set(spec) - {'path', 'animal', 'mode'})
    if unknown or 'path' not in spec:
        raise KeyError(f"data.skeleton takes path, animal, mode; got {sorted(spec)}")
    mode = spec.get('mode', 'fixed')
    if mode not in ('fixed', 'init'):
        raise ValueError(f"data.skeleton.mode must be 'fixed' or 'init', got {mode!r}")
    path = Path(spec['path'])
    if not path.is_file():
        raise FileNotFoundError(f'data.skeleton.path {path} does not exist')
    with read_h5(path, 'fit results (data.skeleton.path)', written_whole=True) as f:
        if 'animals/identity' not in f:
            raise KeyError(f'{path} holds no per-animal skeletons (animals/...): fit it with '
                           'a registrant that shares parameters')
        identities = list(f['animals/identity'].asstr()[()])
        file_joints = list(f['joint_names'].asstr()[()])
        if list(file_joints) != list(joint_names):
            raise ValueError(f'{path} was fitted with another body model (joints '
                             f'{file_joints[:4]}... vs {list(joint_names)[:4]}...)')
        animal = spec.get('animal', 0)
        if isinstance(animal, str):
            rows = [i for i, ident in enumerate(identities) if ident == animal]
            if len(rows) != 1:
                raise KeyError(f'data.skeleton.animal {animal!r}: {len(rows)} animals of that '
                               f'identity in {path} (identities: {identities}); give its row')
            animal = rows[0]
        if not 0 <= int(animal) < len(identities):
            raise KeyError(f'data.skeleton.animal {animal} out of range: {path} has '
                           f'{len(identities)} animals')
        out: Dict[str, Any] = {}
        if KEYPOINT_DEFINITIONS in f.attrs:   # its offsets: one per keypoint it defines
            out[KEYPOINT_DEFINITIONS] = str(f.attrs[KEYPOINT_DEFINITIONS])
            shapes = dict(shapes, keypoint_offsets=(
                len(definitions_from_text(out[KEYPOINT_DEFINITIONS])), 3))
        for name in names:
            key = f'animals/param_{name}'
            if key not in f:
                raise KeyError(f'{path} has no {name!r} skeleton parameter (it has '
                               f'{sorted(k for k in f["animals"] if k.startswith("param_"))})')
            value = np.asarray(f[key][int(animal)])
            if value.shape != tuple(shapes[name]):
                raise ValueError(f'{path}: {name} has shape {value.shape}, this fit needs '
                                 f'{tuple(shapes[name])}')
            out[name] = value
    out['mode'] = mode
    return out


def skeleton_matches(path: Path, stamp: str) -> bool:
    """Whether ``path`` holds skeletons estimated under this config and data, whole (a
    damaged file is estimated again)."""
    arrays = load_npz_whole(path)
    return arrays is not None and 'stamp' in arrays and str(arrays['stamp']) == stamp


def calibrated_skeletons(calibrated: Mapping[str, Any], shared, animals: Animals,
                         stamp: str) -> Dict[str, np.ndarray]:
    """A calibrated skeleton (``data.skeleton``, ``mode='fixed'``) for every animal."""
    out = {f'param_{k}': np.repeat(np.asarray(calibrated[k], np.float32)[None],
                                   animals.count, 0) for k in shared}
    out.update(session=animals.session, identity=animals.identity.astype(str),
               frames_used=np.zeros(animals.count, np.int64),
               fitted=np.ones(animals.count, bool), stamp=np.asarray(stamp))
    if calibrated.get(KEYPOINT_DEFINITIONS) is not None:
        out[KEYPOINT_DEFINITIONS] = np.asarray(str(calibrated[KEYPOINT_DEFINITIONS]))
    return out


def estimate_skeletons(registrant, read, animals: Animals, frames: np.ndarray, shared,
                       stamp: str, max_frames: int, batch_size: int, progress: bool,
                       calibrated: Optional[Mapping[str, Any]] = None
                       ) -> Dict[str, np.ndarray]:
    """Every animal's shared parameters, from up to ``max_frames`` of its frames.

    Animals are fitted together in calls of at most ``max(batch_size, max_frames)``
    samples, each animal its own group, starting from ``calibrated`` (``data.skeleton``
    with ``mode='init'``) when given. An animal whose every sample diverged keeps the
    start (the model's own skeleton: zeros), with a warning.

    Returns:
        ``param_<name>`` (A, ...) per shared parameter, ``session`` (A,), ``identity``
        (A,), ``frames_used`` (A,), ``fitted`` (A,) bool and the config ``stamp``.
    """
    import warnings

    from tqdm import tqdm
    picks = skeleton_samples(animals, frames, max_frames)
    shapes = registrant.param_shapes()
    out = {f'param_{k}': np.zeros((animals.count,) + tuple(shapes[k]), np.float32)
           if calibrated is None else
           np.repeat(np.asarray(calibrated[k], np.float32)[None], animals.count, 0)
           for k in shared}
    fitted = np.zeros(animals.count, bool)
    calls = pack_animals([p.size for p in picks], max(batch_size, max_frames))
    for call in tqdm(calls, desc='skeletons', disable=not progress):
        indices = np.concatenate([picks[a] for a in call])
        groups = np.concatenate([np.full(picks[a].size, j) for j, a in enumerate(call)])
        _, raw, _ = read(indices, warn=False)
        init = None if calibrated is None else {
            k: torch.as_tensor(np.asarray(calibrated[k]))[None].repeat(
                (len(call),) + (1,) * np.ndim(calibrated[k])) for k in shared}
        # The stages after the last one fitting the skeleton cannot change it.
        result = registrant.fit(registrant.to_tensors(raw), groups=torch.as_tensor(groups),
                                init_params=init, allow_all_diverged=True,
                                until_last_shared=True)
        diverged = result.diverged.cpu().numpy()
        for j, a in enumerate(call):
            rows = np.flatnonzero(groups == j)
            values = {k: result.params[k][int(rows[0])].detach().cpu().numpy()
                      for k in shared}
            if diverged[rows].all() or not all(np.isfinite(v).all() for v in values.values()):
                continue
            fitted[a] = True
            for k, v in values.items():
                stored = out[f'param_{k}']
                if stored.shape[1:] != v.shape:   # keypoints placed in this call: more rows
                    out[f'param_{k}'] = np.zeros(stored.shape[:1] + v.shape, stored.dtype)
                    out[f'param_{k}'][:, :stored.shape[1]] = stored
                out[f'param_{k}'][a] = v
    if not fitted.all():
        lost = [f'session {animals.session[a]} {animals.identity[a]}'
                for a in np.flatnonzero(~fitted)]
        warnings.warn(f'no skeleton could be estimated for {", ".join(lost[:10])} (every '
                      "frame diverged): their frames are fitted with the model's own "
                      'skeleton', stacklevel=3)
    out.update(session=animals.session, identity=animals.identity.astype(str),
               frames_used=np.array([p.size for p in picks], np.int64), fitted=fitted,
               stamp=np.asarray(stamp))
    if placed_points(registrant.body_model) or \
            calibrated is not None and calibrated.get(KEYPOINT_DEFINITIONS) is not None:
        # the offsets are in the frames of the markers (or labels) placed (or reused)
        out[KEYPOINT_DEFINITIONS] = keypoint_definitions_text(registrant)
    return out


__all__ = ['Animals', 'identify_animals', 'skeleton_samples', 'pack_animals', 'load_skeleton',
           'skeleton_matches', 'calibrated_skeletons', 'estimate_skeletons',
           'DEFAULT_SKELETON_FRAMES']
