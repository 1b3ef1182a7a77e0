"""Principal component analysis for shape spaces, and subspace comparison.

Everything is float64 numpy: a shape space is learned once, from at most a few
thousand registrations, and its accuracy matters more than its speed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class PCAResult:
    """A PCA of N samples of D features.

    Attributes:
        mean: (D,) feature mean.
        components: (K, D) orthonormal principal directions, by decreasing variance.
        variances: (K,) variance of the data along each direction (N - 1 normalised).
        explained_ratio: (K,) fraction of the total variance each direction explains.
        scores: (N, K) coordinates of the samples along the directions.
        total_variance: sum of all variances (before truncation).
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    explained_ratio: np.ndarray
    scores: np.ndarray
    total_variance: float

    @property
    def num_components(self) -> int:
        return int(self.components.shape[0])


def choose_num_components(explained_ratio: np.ndarray, threshold: float) -> int:
    """Smallest K whose first K ratios sum to at least ``threshold`` (0 < threshold <= 1)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f'explained-variance threshold must be in (0, 1], got {threshold}')
    if explained_ratio.size == 0:
        return 0
    cum = np.cumsum(explained_ratio)
    # Round-off can leave the full sum a hair below 1.
    return int(min(np.searchsorted(cum, threshold - 1e-12) + 1, explained_ratio.size))


def fit_pca(features: np.ndarray, num_components: Optional[int] = None,
            explained_variance: float = 0.99, max_components: Optional[int] = None,
            rank_tol: float = 1e-10) -> PCAResult:
    """PCA by a thin SVD of the centred data.

    The number of components is ``num_components`` when given, else the smallest
    number explaining ``explained_variance`` of the total; always capped by
    ``max_components`` and the data's numerical rank (directions with variance below
    ``rank_tol`` times the largest are dropped).

    Args:
        features: (N, D) samples.

    Returns:
        :class:`PCAResult`.
    """
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f'features must be (N, D), got shape {X.shape}')
    if not np.all(np.isfinite(X)):
        bad = np.flatnonzero(~np.isfinite(X).all(1))
        raise ValueError(f'features of sample(s) {bad[:10].tolist()} contain NaN/inf')
    N, D = X.shape
    if N == 0:
        raise ValueError('PCA needs at least one sample')
    mean = X.mean(0)
    Xc = X - mean
    if N < 2:
        empty = np.zeros((0, D))
        return PCAResult(mean, empty, np.zeros(0), np.zeros(0), np.zeros((N, 0)), 0.0)
    _, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    var = S ** 2 / (N - 1)
    total = float(var.sum())
    rank = int(np.sum(var > rank_tol * max(var[0], 1e-300))) if total > 0 else 0
    ratio = var / total if total > 0 else np.zeros_like(var)
    if num_components is not None:
        if num_components < 0:
            raise ValueError(f'num_components must be >= 0, got {num_components}')
        K = int(num_components)
        if K > rank:
            raise ValueError(f'num_components={K} but the data have rank {rank} '
                             f'({N} samples)')
    else:
        K = min(choose_num_components(ratio[:rank], explained_variance), rank)
    if max_components is not None:
        K = min(K, int(max_components))
    comps = Vt[:K]
    # A sign convention makes repeated runs comparable: largest-magnitude entry positive.
    signs = np.sign(comps[np.arange(K), np.abs(comps).argmax(1)]) if K else np.zeros(0)
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    return PCAResult(mean=mean, components=comps, variances=var[:K],
                     explained_ratio=ratio[:K], scores=Xc @ comps.T, total_variance=total)


def orthonormal_basis(vectors: np.ndarray) -> np.ndarray:
    """(D, K) columns -> (D, r) orthonormal basis of their span (r = numerical rank)."""
    A = np.asarray(vectors, dtype=np.float64)
    if A.ndim != 2:
        raise ValueError(f'expected a (D, K) matrix, got shape {A.shape}')
    if A.shape[1] == 0:
        return A
    U, S, _ = np.linalg.svd(A, full_matrices=False)
    r = int(np.sum(S > 1e-10 * S[0])) if S.size and S[0] > 0 else 0
    return U[:, :r]


def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the spans of (D, Ka) and (D, Kb).

    ``min(rank a, rank b)`` angles; 0 means a shared direction, pi/2 an orthogonal one.
    Computed from the singular values (cosines) and, for accuracy at small angles, the
    sines of the projection residual (Bjorck & Golub).
    """
    qa, qb = orthonormal_basis(a), orthonormal_basis(b)
    if qa.shape[0] != qb.shape[0]:
        raise ValueError(f'subspaces live in different spaces: D={qa.shape[0]} vs '
                         f'{qb.shape[0]}')
    if qa.shape[1] > qb.shape[1]:
        qa, qb = qb, qa
    if qa.shape[1] == 0:
        return np.zeros(0)
    # sin of the angles: singular values of the part of qa outside span(qb).
    resid = qa - qb @ (qb.T @ qa)
    sines = np.linalg.svd(resid, compute_uv=False)
    cosines = np.linalg.svd(qb.T @ qa, compute_uv=False)
    small = np.arcsin(np.clip(np.sort(sines), 0.0, 1.0))
    large = np.arccos(np.clip(np.sort(cosines)[::-1], -1.0, 1.0))
    return np.where(small < np.pi / 4, small, large)


__all__ = ['PCAResult', 'fit_pca', 'choose_num_components', 'orthonormal_basis',
           'principal_angles']
