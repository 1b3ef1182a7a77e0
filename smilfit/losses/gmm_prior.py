"""Gaussian-mixture pose prior (SMPLify's max-mixture) and learning it from fitted poses.

Shapes: B batch, C mixture components, D flattened pose size (e.g. (J - 1) * 3 for
``body_pose`` in axis-angle), N training poses.

A prior file is an ``.npz`` with ``means`` (C, D), ``covariances`` (C, D, D) and
``weights`` (C,) (``precisions`` (C, D, D) instead of ``covariances`` and SMPLify's
``covars`` name are accepted when loading), and optionally ``pose_shape`` (the
per-sample shape of the poses it was fitted on, e.g. ``[J - 1, 3]``) and
``metadata`` (a JSON string). Learn one with ``tools/learn_pose_prior.py``.
"""
from __future__ import annotations

import io
import json
import math
import os
from typing import Any, Callable, Dict, Mapping, Optional, Union

import numpy as np
import torch

from ..registry import LOSSES
from .utils import ArrayLike, BaseLoss, PathLike, as_float_tensor, like
from ..body_models.io import write_bytes_atomic


# ---------------------------------------------------------------- validation
def validate_gmm(means: ArrayLike, weights: ArrayLike,
                 covariances: Optional[ArrayLike] = None,
                 precisions: Optional[ArrayLike] = None) -> Dict[str, torch.Tensor]:
    """Check a mixture's arrays and complete them (float64 tensors).

    Weights must be positive; they are normalised to sum to 1. Exactly one of
    ``covariances`` / ``precisions`` is needed; both must be symmetric positive
    definite.

    Returns:
        dict with ``means`` (C, D), ``weights`` (C,), ``precisions`` (C, D, D),
        ``precision_cholesky`` (C, D, D) lower ``L`` with ``P = L L^T`` and
        ``log_det_cov`` (C,).
    """
    mu = as_float_tensor(means, 'means', (None, None))
    C, D = mu.shape
    w = as_float_tensor(weights, 'weights', (C,))
    if C == 0:
        raise ValueError('a mixture needs at least one component')
    if torch.any(w <= 0):
        raise ValueError('mixture weights must be positive')
    w = w / w.sum()
    if (covariances is None) == (precisions is None):
        raise ValueError('give exactly one of covariances and precisions')
    name = 'covariances' if precisions is None else 'precisions'
    m = as_float_tensor(covariances if precisions is None else precisions, name, (C, D, D))
    sym = 0.5 * (m + m.transpose(-1, -2))
    scale = float(m.abs().amax().clamp_min(1e-300))
    if not torch.allclose(m, sym, atol=1e-8 * scale, rtol=0):
        raise ValueError(f'{name} are not symmetric')
    L, info = torch.linalg.cholesky_ex(sym)
    if torch.any(info != 0):
        bad = torch.nonzero(info).flatten().tolist()
        raise ValueError(f'{name} of component(s) {bad} are not positive definite')
    log_det = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    if precisions is None:
        prec = torch.cholesky_inverse(L)
        prec = 0.5 * (prec + prec.transpose(-1, -2))
        prec_L = torch.linalg.cholesky(prec)
        log_det_cov = log_det
    else:
        prec, prec_L, log_det_cov = sym, L, -log_det
    return dict(means=mu, weights=w, precisions=prec, precision_cholesky=prec_L,
                log_det_cov=log_det_cov)


# ------------------------------------------------------------------- the prior
def mixture_component_nll(x: torch.Tensor, means: torch.Tensor,
                          precision_cholesky: torch.Tensor,
                          offsets: torch.Tensor) -> torch.Tensor:
    """Per-component ``0.5 (x - mu_c)^T P_c (x - mu_c) + offset_c``.

    Args:
        x: (B, D) poses.
        means: (C, D).
        precision_cholesky: (C, D, D) lower ``L_c`` with ``P_c = L_c L_c^T``.
        offsets: (C,) constant per component (e.g. ``-log w_c + const_c``).

    Returns:
        (B, C) values (the quadratic is ``0.5 |L_c^T (x - mu_c)|^2``, never negative).
    """
    d = x[:, None, :] - means[None]
    y = torch.einsum('cde,bcd->bce', precision_cholesky, d)
    return 0.5 * (y * y).sum(-1) + offsets


@LOSSES.register_module()
class MaxMixturePosePrior(BaseLoss):
    """SMPLify's max-mixture Gaussian pose prior.

    ``loss = min_c [0.5 (x - mu_c)^T P_c (x - mu_c) - log w_c + const_c]`` on the
    flattened pose ``x`` (B, D), with ``const_c = 0.5 log det(2 pi S_c)`` (``S_c`` the
    covariance, ``P_c`` its inverse) when ``include_det`` (then the loss is
    ``min_c -log(w_c N(x; mu_c, S_c))``, the negative log of the most likely
    component's weighted density), else ``const_c = 0``. The minimum approximates the
    mixture's negative log-likelihood and keeps one component's gradient.

    Args:
        means: (C, D) component means.
        covariances: (C, D, D) covariances, or
        precisions: (C, D, D) precisions (inverse covariances).
        weights: (C,) positive mixture weights (normalised to sum 1).
        path: an ``.npz`` prior file (see the module docstring) instead of arrays.
        include_det: include ``const_c`` (see above).
        loss_weight, reduction: see :class:`~smilfit.losses.utils.BaseLoss`.
    """

    def __init__(self, means: Optional[ArrayLike] = None,
                 covariances: Optional[ArrayLike] = None,
                 precisions: Optional[ArrayLike] = None,
                 weights: Optional[ArrayLike] = None, path: Optional[PathLike] = None,
                 include_det: bool = True, loss_weight: float = 1.0,
                 reduction: str = 'none') -> None:
        super().__init__(loss_weight, reduction)
        if path is not None:
            if means is not None or weights is not None:
                raise ValueError('give path or arrays, not both')
            stored = load_gmm_prior(path)
            means, weights = stored['means'], stored['weights']
            covariances, precisions = stored['covariances'], None
        if means is None or weights is None:
            raise ValueError('MaxMixturePosePrior needs means and weights (or a path)')
        gmm = validate_gmm(means, weights, covariances, precisions)
        self.include_det = bool(include_det)
        D = gmm['means'].shape[1]
        offsets = -torch.log(gmm['weights'])
        if self.include_det:
            offsets = offsets + 0.5 * (D * math.log(2.0 * math.pi) + gmm['log_det_cov'])
        self.register_buffer('means', gmm['means'])
        self.register_buffer('weights', gmm['weights'])
        self.register_buffer('precision_cholesky', gmm['precision_cholesky'])
        self.register_buffer('offsets', offsets)

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def component_nll(self, pose: torch.Tensor) -> torch.Tensor:
        """(B, ...) pose flattening to (B, D) -> (B, C) per-component values."""
        x = pose.reshape(pose.shape[0], -1)
        if x.shape[1] != self.dim:
            raise ValueError(f'pose flattens to {x.shape[1]} values, prior has {self.dim}')
        return mixture_component_nll(x, like(self.means, x), like(self.precision_cholesky, x),
                                     like(self.offsets, x))

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        """(B, ...) pose (e.g. (B, J - 1, 3) axis-angle) -> (B,) loss (or reduced)."""
        return self.finish(self.component_nll(pose).amin(-1))

    def extra_repr(self) -> str:
        return (f'components={self.num_components}, dim={self.dim}, '
                f'include_det={self.include_det}, ' + super().extra_repr())


# -------------------------------------------------------------------- learning
def _as_samples(poses: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    if isinstance(poses, torch.Tensor):
        poses = poses.detach().cpu().numpy()
    X = np.asarray(poses, dtype=np.float64)
    if X.ndim < 2:
        raise ValueError(f'poses: expected (N, D) or (N, ...), got shape {X.shape}')
    return X.reshape(X.shape[0], -1)


def _kmeans_pp(X: np.ndarray, C: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: C rows of X, each drawn with probability ~ squared distance."""
    centers = [X[rng.integers(X.shape[0])]]
    d2 = ((X - centers[0]) ** 2).sum(1)
    for _ in range(1, C):
        total = d2.sum()
        idx = rng.choice(X.shape[0], p=d2 / total) if total > 0 else rng.integers(X.shape[0])
        centers.append(X[idx])
        d2 = np.minimum(d2, ((X - X[idx]) ** 2).sum(1))
    return np.stack(centers)


def _m_step(X: np.ndarray, resp: np.ndarray, reg: float):
    N, D = X.shape
    nk = resp.sum(0) + 10.0 * np.finfo(np.float64).eps
    means = resp.T @ X / nk[:, None]
    covs = np.empty((resp.shape[1], D, D))
    for c in range(resp.shape[1]):  # loop over components (few), not samples
        diff = X - means[c]
        covs[c] = (resp[:, c, None] * diff).T @ diff / nk[c]
        covs[c].flat[::D + 1] += reg
    return nk / N, means, covs


def _log_prob(X: np.ndarray, weights, means, covs) -> np.ndarray:
    """(N, C) ``log w_c + log N(x_n; mu_c, S_c)``."""
    from scipy.linalg import solve_triangular
    N, D = X.shape
    out = np.empty((N, len(weights)))
    for c in range(len(weights)):
        L = np.linalg.cholesky(covs[c])
        y = solve_triangular(L, (X - means[c]).T, lower=True)
        log_det = 2.0 * np.log(np.diag(L)).sum()
        out[:, c] = (np.log(weights[c]) - 0.5 * (D * np.log(2 * np.pi) + log_det)
                     - 0.5 * (y * y).sum(0))
    return out


def fit_gmm_pose_prior(poses: Union[np.ndarray, torch.Tensor], n_components: int,
                       iters: int = 100, reg: float = 1e-4, seed: int = 0,
                       tol: float = 1e-6,
                       progress: Optional[Callable[[int, float], None]] = None
                       ) -> Dict[str, np.ndarray]:
    """Fit a full-covariance Gaussian mixture to poses by EM (numpy, no sklearn).

    Seeding by k-means++ (with ``seed``), then EM until the mean log-likelihood per
    sample improves by less than ``tol`` or after ``iters`` iterations. ``reg`` is
    added to every covariance's diagonal (in squared pose units, radians^2) so
    components stay positive definite. Components are returned by decreasing weight.

    Args:
        poses: (N, D) or (N, ...) poses (flattened per sample); must be finite.
        n_components: C >= 1, at most N.
        iters: maximum EM iterations.
        reg: covariance regularisation, >= 0 (> 0 recommended).
        seed: random seed of the initialisation.
        tol: convergence threshold on the mean log-likelihood.
        progress: optional ``callback(iteration, mean_log_likelihood)``.

    Returns:
        dict with ``means`` (C, D), ``covariances`` (C, D, D), ``weights`` (C,), float64.
    """
    X = _as_samples(poses)
    N, D = X.shape
    C = int(n_components)
    if C < 1:
        raise ValueError(f'n_components must be >= 1, got {n_components}')
    if N < C:
        raise ValueError(f'{N} poses cannot fit {C} components')
    if D == 0:
        raise ValueError('poses have no values')
    if not np.all(np.isfinite(X)):
        bad = int(np.count_nonzero(~np.isfinite(X).all(1)))
        raise ValueError(f'{bad} pose(s) contain NaN/inf; drop them first')
    if reg < 0:
        raise ValueError(f'reg must be >= 0, got {reg}')
    rng = np.random.default_rng(seed)
    centers = _kmeans_pp(X, C, rng)
    d2 = np.stack([((X - m) ** 2).sum(1) for m in centers], 1)  # (N, C)
    resp = np.zeros((N, C))
    resp[np.arange(N), d2.argmin(1)] = 1.0
    weights, means, covs = _m_step(X, resp, reg)
    prev = -np.inf
    from scipy.special import logsumexp
    for it in range(int(iters)):
        log_p = _log_prob(X, weights, means, covs)
        lse = logsumexp(log_p, axis=1)
        ll = float(lse.mean())
        resp = np.exp(log_p - lse[:, None])
        weights, means, covs = _m_step(X, resp, reg)
        if progress is not None:
            progress(it + 1, ll)
        if abs(ll - prev) < tol:
            break
        prev = ll
    order = np.argsort(-weights, kind='stable')
    weights = weights[order] / weights.sum()
    return dict(means=means[order], covariances=covs[order], weights=weights)


def gmm_log_likelihood(poses: Union[np.ndarray, torch.Tensor],
                       gmm: Mapping[str, Any]) -> float:
    """Mean log-likelihood per pose of a mixture dict (``means``, ``covariances``,
    ``weights``) on (N, ...) poses, in nats."""
    from scipy.special import logsumexp
    X = _as_samples(poses)
    log_p = _log_prob(X, np.asarray(gmm['weights']), np.asarray(gmm['means']),
                      np.asarray(gmm['covariances']))
    return float(logsumexp(log_p, axis=1).mean())


# ------------------------------------------------------------------------- IO
def save_gmm_prior(path: PathLike, gmm: Mapping[str, Any],
                   metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Validate a mixture and write it atomically as ``.npz``.

    Args:
        path: output ``.npz`` path (its directory must exist).
        gmm: ``means``, ``covariances``, ``weights`` and optionally ``pose_shape``.
        metadata: optional JSON-serialisable information (source, settings), stored
            as a JSON string under ``metadata``.
    """
    if not str(path).lower().endswith('.npz'):
        raise ValueError(f'prior files end in .npz, got {path}')
    checked = validate_gmm(gmm['means'], gmm['weights'], covariances=gmm['covariances'])
    arrays = dict(means=checked['means'].numpy(), weights=checked['weights'].numpy(),
                  covariances=np.asarray(gmm['covariances'], dtype=np.float64))
    if gmm.get('pose_shape') is not None:
        shape = np.asarray(gmm['pose_shape'], dtype=np.int64)
        if int(np.prod(shape)) != arrays['means'].shape[1]:
            raise ValueError(f'pose_shape {shape.tolist()} does not hold '
                             f'{arrays["means"].shape[1]} values')
        arrays['pose_shape'] = shape
    if metadata is not None:
        arrays['metadata'] = np.asarray(json.dumps(dict(metadata), sort_keys=True))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes_atomic(path, buf.getvalue())


def load_gmm_prior(path: PathLike) -> Dict[str, Any]:
    """Read and validate an ``.npz`` prior file (never unpickles anything).

    Returns:
        dict with ``means`` (C, D), ``covariances`` (C, D, D), ``weights`` (C,)
        (numpy float64, weights normalised), ``pose_shape`` (tuple or ``None``) and
        ``metadata`` (dict, empty when absent).

    Raises:
        FileNotFoundError, KeyError (a missing array, naming the ones present),
        ValueError (inconsistent or invalid arrays).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'pose prior file not found: {path}')
    with np.load(path, allow_pickle=False) as f:
        stored = {k: f[k] for k in f.files}
    missing = [k for k in ('means', 'weights') if k not in stored]
    cov_key = next((k for k in ('covariances', 'covars', 'precisions') if k in stored), None)
    if missing or cov_key is None:
        raise KeyError(f'{path}: a GMM prior needs means, weights and covariances (or '
                       f'precisions); found {sorted(stored)}')
    kind = 'precisions' if cov_key == 'precisions' else 'covariances'
    gmm = validate_gmm(stored['means'], stored['weights'], **{kind: stored[cov_key]})
    if kind == 'precisions':
        cov = torch.cholesky_inverse(gmm['precision_cholesky'])
        cov = 0.5 * (cov + cov.transpose(-1, -2))
    else:
        cov = as_float_tensor(stored[cov_key], cov_key)
    shape = stored.get('pose_shape')
    meta = json.loads(str(stored['metadata'])) if 'metadata' in stored else {}
    return dict(means=gmm['means'].numpy(), covariances=cov.numpy(),
                weights=gmm['weights'].numpy(),
                pose_shape=None if shape is None else tuple(int(s) for s in shape),
                metadata=meta)


__all__ = ['validate_gmm', 'mixture_component_nll', 'MaxMixturePosePrior',
           'fit_gmm_pose_prior', 'gmm_log_likelihood', 'save_gmm_prior', 'load_gmm_prior']
