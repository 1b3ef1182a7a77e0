"""Prediction-like errors added to clean 2D labels: what a pose estimator's output looks like.

A SLEAP (or DLC) model's predictions differ from proofread labels in three ways, each
independent per view: a small Gaussian error on every point, a few points far off (a
paw found on the other paw, a tail tip on the bedding) and, now and then, a whole
instance with its left and right keypoints exchanged. :class:`LabelNoise` draws all
three, seeded, so that a fit and a triangulation can be scored on labels with such
errors against the clean ones (``benchmarks/holdout.py --noise``,
:func:`smilfit.apis.holdout.evaluate_holdout_views`).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from smilfit.body_models.keypoint_naming import left_right_order, left_right_pairs
from smilfit.utils.atomic import temp_beside

PathLike = Union[str, os.PathLike]

__all__ = ['LabelNoise', 'left_right_pairs', 'swap_left_right', 'write_noisy_dataset']


@dataclass(frozen=True)
class LabelNoise:
    """Per-view label errors.

    Args:
        sigma_px: standard deviation of the Gaussian error of every point, pixels.
        outliers: share of the observed points (per view) moved far: by a distance drawn
            uniformly from ``outlier_px`` in a uniformly drawn direction.
        swaps: share of the (sample, view) instances whose left and right keypoints are
            exchanged (before the other errors are added).
        seed: the random generator's seed.
        outlier_px: (low, high) pixels, the distance an outlier is moved.
    """

    sigma_px: float
    outliers: float = 0.0
    swaps: float = 0.0
    seed: int = 0
    outlier_px: Tuple[float, float] = (20.0, 60.0)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.sigma_px) and self.sigma_px >= 0):
            raise ValueError(f'label noise: sigma must be >= 0 px, got {self.sigma_px}')
        for name in ('outliers', 'swaps'):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f'label noise: {name} is a share from 0 to 1, got {share}')
        low, high = self.outlier_px
        if not 0 <= low <= high:
            raise ValueError(f'label noise: outlier_px must be 0 <= low <= high, got '
                             f'{self.outlier_px}')

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> 'LabelNoise':
        """``'SIGMA,OUTLIERS,SWAPS'`` (e.g. ``'3,0.05,0.03'``: 3 px, 5 % outliers, 3 % of
        the instances with left and right exchanged); missing shares are 0."""
        parts = [p.strip() for p in str(text).split(',')]
        if not 1 <= len(parts) <= 3 or not all(parts):
            raise ValueError(f'label noise {text!r}: expected SIGMA[,OUTLIERS[,SWAPS]], e.g. '
                             "'3,0.05,0.03'")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f'label noise {text!r}: SIGMA, OUTLIERS and SWAPS are numbers, '
                             "e.g. '3,0.05,0.03'") from None
        return cls(*values, seed=int(seed))

    def describe(self) -> str:
        """One line for a report: ``'3 px, 5 % outliers (20-60 px), 3 % left/right swaps'``."""
        return (f'{self.sigma_px:g} px, {100 * self.outliers:g} % outliers '
                f'({self.outlier_px[0]:g}-{self.outlier_px[1]:g} px), '
                f'{100 * self.swaps:g} % left/right swaps, seed {self.seed}')

    def apply(self, keypoints_2d: np.ndarray, pairs: Optional[np.ndarray]
              ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """Labels with these errors.

        Args:
            keypoints_2d: (N, C, K, 2) pixels, NaN where not observed.
            pairs: (P, 2) indices of left/right keypoint pairs (None or empty: no pairs;
                then ``swaps`` must be 0).

        Returns:
            ``(noisy (N, C, K, 2), record)``: ``record['swapped']`` (N, C) bool, the
            instances exchanged, and ``record['outliers']`` (N, C, K) bool, the points moved
            far. Unobserved points stay NaN; a swapped pair where one side is unobserved
            moves the observed label to the other keypoint.
        """
        kp = np.asarray(keypoints_2d, np.float64)
        if kp.ndim != 4 or kp.shape[-1] != 2:
            raise ValueError(f'keypoints_2d must be (N, C, K, 2), got {kp.shape}')
        N, C, K, _ = kp.shape
        pairs = np.zeros((0, 2), np.int64) if pairs is None else np.asarray(pairs, np.int64)
        if self.swaps > 0 and not len(pairs):
            raise ValueError('label noise: left/right swaps need left/right keypoint pairs; '
                             'none are known for these keypoints (name them *_L/*_R or '
                             '*_left/*_right, or store skeleton symmetries)')
        rng = np.random.default_rng(self.seed)
        swapped = rng.random((N, C)) < self.swaps
        noisy = swap_left_right(kp, swapped, pairs)
        observed = np.isfinite(noisy).all(-1)
        noisy = noisy + rng.normal(0.0, self.sigma_px, noisy.shape)
        far = observed & (rng.random((N, C, K)) < self.outliers)
        angle = rng.uniform(0.0, 2 * np.pi, (N, C, K))
        reach = rng.uniform(*self.outlier_px, (N, C, K))
        step = np.stack([np.cos(angle), np.sin(angle)], -1) * reach[..., None]
        noisy = np.where(far[..., None], noisy + step, noisy)
        return noisy, dict(swapped=swapped, outliers=far)


def swap_left_right(values: np.ndarray, swapped: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``values`` (N, C, K, ...) with each pair's two keypoints exchanged where ``swapped``
    (N, C) is true."""
    values = np.asarray(values)
    order = left_right_order(values.shape[2], pairs)
    mask = np.asarray(swapped, bool).reshape(swapped.shape + (1,) * (values.ndim - 2))
    return np.where(mask, values[:, :, order], values)


def write_noisy_dataset(src: PathLike, dst: PathLike, noise: LabelNoise,
                        attrs: Optional[Dict[str, str]] = None) -> Dict[str, np.ndarray]:
    """A copy of the smilfit dataset ``src`` at ``dst`` with ``noise`` added to every view's
    2D labels (``views/keypoints_2d``; everything else as it was, the noise stated in the
    file's ``label_noise`` attribute, with ``attrs`` beside it, and which instances were
    swapped and which points moved far in ``label_noise/swapped`` (N, C) and
    ``label_noise/outliers`` (N, C, K)). Written to a temporary file of this process's own
    and moved into place, so ``dst`` is never a partial file, also where two processes
    write it at once.

    Returns:
        :meth:`LabelNoise.apply`'s record (which instances were swapped, which points moved
        far).
    """
    import h5py

    from .hdf5.reader import DatasetReader
    reader = DatasetReader(src)
    pairs = left_right_pairs(reader.keypoint_names, reader.skeleton_symmetries)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(temp_beside(dst, '.h5'))
    shutil.copyfile(src, partial)
    try:
        with h5py.File(partial, 'r+') as f:
            labels = f['views/keypoints_2d']
            noisy, record = noise.apply(labels[()], pairs)
            labels[...] = noisy.astype(labels.dtype)
            for key in ('views/visible', 'views/confidence'):   # they follow their labels
                if key in f:
                    f[key][...] = swap_left_right(f[key][()], record['swapped'], pairs)
            f.attrs['label_noise'] = json.dumps(asdict(noise))
            # what was done, to score a fit's findings against (not read by a fit)
            f.create_dataset('label_noise/swapped', data=record['swapped'])
            f.create_dataset('label_noise/outliers', data=record['outliers'])
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
        os.replace(partial, dst)
    finally:
        if partial.exists():
            partial.unlink()
    return record
