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
from typing import List, Sequence

import numpy as np


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


__all__ = ['Animals', 'identify_animals', 'skeleton_samples', 'pack_animals']
