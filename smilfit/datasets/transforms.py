"""Data transforms for multi-view samples (registered in ``TRANSFORMS``).

A sample is the dict :class:`~smilfit.datasets.MultiViewHDF5Dataset` yields (see its
docstring): per-view arrays with a leading view axis ``C`` (``images`` (C, H, W, 3)
uint8 RGB, ``masks`` (C, H, W), ``keypoints_2d`` (C, K, 2) pixels, ``visible`` (C, K),
``confidence`` (C, K), ``view_valid`` (C,), cameras ``K`` (C, 3, 3), ``dist`` (C, 5),
``R`` (C, 3, 3), ``t`` (C, 3), ``image_size`` (C, 2) as (W, H), ``crop`` (C, 3, 3)),
plus optional ``keypoints_3d`` (K, 3) and ``params``. Single-view samples use the same
layout with ``C = 1``, so every transform serves both. When the views of a sample have
different image sizes, ``images``/``masks`` are lists of per-view arrays instead of one
stacked array (``ResizeViews`` makes them equal).

Geometric transforms keep the cameras consistent with the pixels: a view warped by the
pixel affine ``A`` (3 x 3) gets a camera whose projection is ``A`` times the old one
(``K' = A @ K`` with ``camera_update='K'``; by default the in-plane rotation is folded
into a camera roll so that ``K'`` stays upper triangular, see :func:`affine_camera`) and
``crop' = A @ crop``, so projecting the 3D keypoints through the updated camera lands on
the transformed 2D keypoints. Pixel centres are at integer coordinates (OpenCV's
convention).

Randomness: with ``seed=None`` a transform draws from numpy's global generator mixed with
torch's per-worker seed (see :func:`unseeded_rng`); with an integer ``seed`` the
draws depend only on ``(seed, sample_idx)``, so the same item is augmented the same way
every time (reproducible tests and test-time augmentation).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from smilfit.registry import TRANSFORMS

__all__ = ['PhotometricAugment', 'GeometricAugment', 'ResizeViews', 'PackInputs',
           'apply_view_affine', 'affine_camera', 'flip_sample', 'unseeded_rng']

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


# --------------------------------------------------------------------------- helpers
def unseeded_rng() -> np.random.Generator:
    """A fresh generator drawn from numpy's global state *and* torch's per-worker seed.

    mmengine seeds numpy in every dataloader worker; a plain torch ``DataLoader`` does not
    (forked workers would then share numpy's state and repeat each other's augmentations)
    but gives every worker its own ``torch.initial_seed()``, so mixing both is random in
    either case and reproducible under mmengine's ``randomness.seed``.
    """
    return np.random.default_rng([np.random.randint(0, 2 ** 31 - 1),
                                  torch.initial_seed() % (2 ** 63)])


def _sample_rng(results: Dict[str, Any], seed: Optional[int], salt: int) -> np.random.Generator:
    """A generator for one sample: seeded by ``(seed, sample_idx, salt)`` or by numpy's
    global state."""
    if seed is None:
        return unseeded_rng()
    return np.random.default_rng([int(seed), int(results.get('sample_idx', 0)), salt])


def _num_views(results: Dict[str, Any]) -> int:
    return int(np.asarray(results['K']).shape[0])


def _get_views(results: Dict[str, Any], key: str) -> Optional[List[np.ndarray]]:
    value = results.get(key)
    if value is None:
        return None
    return [np.asarray(v) for v in value]


def _set_views(results: Dict[str, Any], key: str, views: List[np.ndarray]) -> None:
    """Store per-view arrays stacked when they share a shape, as a list otherwise."""
    if all(v.shape == views[0].shape for v in views):
        results[key] = np.stack(views) if views else np.zeros((0,))
    else:
        results[key] = views


def _inside(points: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Whether pixel positions fall on the image (pixel areas, centres at integers)."""
    W, H = float(size[0]), float(size[1])
    x, y = points[..., 0], points[..., 1]
    with np.errstate(invalid='ignore'):
        return (x >= -0.5) & (x < W - 0.5) & (y >= -0.5) & (y < H - 0.5)


def _map_points(A: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3 x 3 pixel affine to (..., 2) points (NaNs stay NaN)."""
    return points @ A[:2, :2].T + A[:2, 2]


CAMERA_UPDATES = ('roll', 'K')


def affine_camera(A: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
                  dist: Optional[np.ndarray], mode: str = 'roll'
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """The camera that sees the image warped by the pixel affine ``A``.

    Both modes give exactly ``project'(X) = A project(X)`` (distortion included):

    - ``'K'``: ``K' = A @ K`` (R, t, dist unchanged). A rotated ``A`` makes ``K'[1, 0]``
      non-zero, which is not a canonical intrinsic matrix (``PinholeCameras`` refuses it).
    - ``'roll'`` (default): ``K'`` stays ``[[fx, skew, cx], [0, fy, cy], [0, 0, 1]]``; the
      in-plane rotation of ``A`` becomes a roll of the camera about its optical axis.
      With ``M = A[:2, :2] K[:2, :2] = U Q`` (RQ: ``U`` upper triangular with a positive
      diagonal, ``Q`` a 2D rotation): ``K'[:2, :2] = U``, ``K'[:2, 2] = A (cx, cy, 1)``,
      ``R' = Rz R``, ``t' = Rz t`` with ``Rz = diag(Q, 1)``, and the tangential distortion
      vector ``(p2, p1)`` rotated by ``Q`` (OpenCV's radial-tangential model is
      equivariant under rotations about the optical axis, so this is exact). Needs
      ``det(A[:2, :2]) > 0`` (mirrors go through :func:`flip_sample`).

    Returns:
        ``(K', R', t', dist')`` as float64 arrays (``dist'`` None when ``dist`` is None).
    """
    if mode not in CAMERA_UPDATES:
        raise ValueError(f'camera update must be one of {CAMERA_UPDATES}, got {mode!r}')
    A, K = np.asarray(A, np.float64), np.asarray(K, np.float64)
    R, t = np.asarray(R, np.float64), np.asarray(t, np.float64)
    dist = None if dist is None else np.array(dist, np.float64)
    if mode == 'K':
        return A @ K, R, t, dist
    M = A[:2, :2] @ K[:2, :2]
    if np.linalg.det(M) <= 0:
        raise ValueError('affine_camera: the affine mirrors the image; use flip_sample')
    q1 = M[1] / np.linalg.norm(M[1])
    Q = np.array([[q1[1], -q1[0]], q1])                  # rotation, second row q1
    U = M @ Q.T                                          # upper triangular
    K2 = np.eye(3)
    K2[0, 0], K2[0, 1], K2[1, 1] = U[0, 0], U[0, 1], U[1, 1]
    K2[:2, 2] = (A @ K[:, 2])[:2]
    Rz = np.eye(3)
    Rz[:2, :2] = Q
    if dist is not None:
        dist[..., [3, 2]] = dist[..., [3, 2]] @ Q.T
    return K2, Rz @ R, Rz @ t, dist


def apply_view_affine(results: Dict[str, Any], view: int, A: np.ndarray,
                      out_size: Optional[Sequence[int]] = None, *,
                      interpolation: int = cv2.INTER_LINEAR,
                      border_value: Union[int, Sequence[int]] = 0,
                      resize: bool = False, camera_update: str = 'roll') -> None:
    """Warp one view of a sample in place by the pixel affine ``A`` (3 x 3).

    The image (``interpolation``) and mask (nearest) are warped with
    :func:`cv2.warpAffine` (or :func:`cv2.resize` when ``resize`` says that ``A`` is the
    exact pixel-centre resize to ``out_size``), keypoints are mapped by ``A``, keypoints
    that leave the image keep their coordinates but become invisible, and the camera is
    updated so that it projects onto the new pixels (see :func:`affine_camera` for
    ``camera_update``), ``crop' = A @ crop``, ``image_size' = out_size``.

    Args:
        results: the sample; changed in place.
        view: view index.
        A: (3, 3) affine taking the view's current pixels to its new pixels.
        out_size: (W, H) of the new image; the current size if None.
    """
    A = np.asarray(A, dtype=np.float64)
    size = np.asarray(results['image_size'])
    W, H = (int(size[view, 0]), int(size[view, 1])) if out_size is None else \
        (int(out_size[0]), int(out_size[1]))
    for key, interp in (('images', interpolation), ('masks', cv2.INTER_NEAREST)):
        views = _get_views(results, key)
        if views is None:
            continue
        img = views[view]
        if resize:
            if interp != cv2.INTER_NEAREST and (W < img.shape[1] or H < img.shape[0]):
                interp = cv2.INTER_AREA
            elif interp == cv2.INTER_NEAREST:
                interp = cv2.INTER_NEAREST_EXACT
            src = img.view(np.uint8) if img.dtype == bool else img
            out = cv2.resize(src, (W, H), interpolation=interp)
        else:
            src = img.view(np.uint8) if img.dtype == bool else img
            bv = border_value if key == 'images' else 0
            if key == 'images' and np.ndim(bv) == 0:
                bv = (bv,) * 3
            out = cv2.warpAffine(src, A[:2], (W, H), flags=interp,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=bv)
        if img.dtype == bool:
            out = out.astype(bool)
        views[view] = out.reshape((H, W) + img.shape[2:])
        _set_views(results, key, views)

    kp = np.array(results['keypoints_2d'], dtype=np.float32, copy=True)
    kp[view] = _map_points(A, kp[view].astype(np.float64)).astype(np.float32)
    results['keypoints_2d'] = kp
    vis = np.array(results['visible'], dtype=bool, copy=True)
    vis[view] &= _inside(kp[view], (W, H))
    results['visible'] = vis
    if 'crop' in results:
        crop = np.array(results['crop'], copy=True)
        crop[view] = (A @ crop[view].astype(np.float64)).astype(crop.dtype)
        results['crop'] = crop
    keys = ('K', 'R', 't', 'dist') if results.get('dist') is not None else ('K', 'R', 't')
    cam = {k: np.array(results[k], copy=True) for k in keys}
    K2, R2, t2, d2 = affine_camera(A, cam['K'][view], cam['R'][view], cam['t'][view],
                                   cam['dist'][view] if 'dist' in cam else None, camera_update)
    for key, value in (('K', K2), ('R', R2), ('t', t2), ('dist', d2)):
        if key in cam:
            cam[key][view] = value
            results[key] = cam[key]
    size = np.array(results['image_size'], copy=True)
    size[view] = (W, H)
    results['image_size'] = size


def _pair_indices(flip_pairs: Sequence[Sequence[Union[str, int]]],
                  names: Optional[Sequence[str]], num_keypoints: int) -> np.ndarray:
    """Permutation of keypoint indices that swaps each left/right pair."""
    perm = np.arange(num_keypoints)
    for a, b in flip_pairs:
        idx = []
        for item in (a, b):
            if isinstance(item, str):
                if names is None:
                    raise KeyError('flip_pairs are given by name but the sample has no '
                                   "'keypoint_names'")
                if item not in names:
                    raise KeyError(f'flip_pairs: unknown keypoint {item!r}; known: '
                                   f'{list(names)}')
                idx.append(list(names).index(item))
            else:
                idx.append(int(item))
        perm[idx[0]], perm[idx[1]] = idx[1], idx[0]
    return perm


# World mirror used by horizontal flips: x -> -x.
_WORLD_MIRROR = np.diag([-1.0, 1.0, 1.0])


def flip_sample(results: Dict[str, Any], perm: np.ndarray) -> None:
    """Mirror every view of a sample horizontally, in place.

    A mirror image is the view of a mirrored world, so all views flip together: images
    and masks are flipped (``x -> W - 1 - x``), keypoints are mapped and their left/right
    labels swapped by ``perm``, ``keypoints_3d`` are mirrored (``x -> -x``) and swapped,
    and each camera becomes the proper camera seeing the mirrored world:
    ``K' = F K D``, ``R' = D R M``, ``t' = D t``, ``dist`` with ``p2`` negated,
    ``crop' = F crop``, with ``F`` the pixel flip, ``D = diag(-1, 1, 1)`` in the camera
    and ``M = diag(-1, 1, 1)`` in the world. GT ``params`` are NOT mirrored (that needs
    the body model's symmetry); ``results['flipped']`` is set to True so consumers can
    tell.
    """
    C = _num_views(results)
    size = np.asarray(results['image_size'])
    D = np.diag([-1.0, 1.0, 1.0])
    for key in ('images', 'masks'):
        views = _get_views(results, key)
        if views is not None:
            views = [np.ascontiguousarray(v[:, ::-1]) for v in views]
            _set_views(results, key, views)
    kp = np.array(results['keypoints_2d'], dtype=np.float32, copy=True)
    K = np.array(results['K'], copy=True)
    crop = np.array(results['crop'], copy=True) if 'crop' in results else None
    for c in range(C):
        F = np.array([[-1.0, 0.0, size[c, 0] - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        kp[c] = _map_points(F, kp[c].astype(np.float64))
        K[c] = F @ K[c].astype(np.float64) @ D
        if crop is not None:
            crop[c] = F @ crop[c].astype(np.float64)
    results['keypoints_2d'] = kp[:, perm]
    results['K'] = K
    if crop is not None:
        results['crop'] = crop
    for key in ('visible', 'confidence'):
        if key in results:
            results[key] = np.asarray(results[key])[:, perm].copy()
    R = np.asarray(results['R'])
    results['R'] = (D @ R.astype(np.float64) @ _WORLD_MIRROR).astype(R.dtype)
    t = np.asarray(results['t'])
    results['t'] = (t.astype(np.float64) @ D.T).astype(t.dtype)
    if results.get('dist') is not None:
        dist = np.array(results['dist'], copy=True)
        dist[:, 3] *= -1
        results['dist'] = dist
    if results.get('keypoints_3d') is not None:
        k3 = np.asarray(results['keypoints_3d'])
        results['keypoints_3d'] = (k3.astype(np.float64) @ _WORLD_MIRROR.T)[perm].astype(
            k3.dtype)
    results['flipped'] = not results.get('flipped', False)


# --------------------------------------------------------------------------- transforms
@TRANSFORMS.register_module()
class PhotometricAugment:
    """Random brightness, contrast, saturation, hue, Gaussian noise and blur, per view.

    Images only (uint8 RGB in and out); masks, keypoints and cameras are untouched.

    Args:
        brightness: the image is multiplied by a factor in ``[1 - b, 1 + b]``.
        contrast: blended with its mean grey by a factor in ``[1 - c, 1 + c]``.
        saturation: blended with its grey image by a factor in ``[1 - s, 1 + s]``.
        hue: hue shifted by up to ``+-hue`` of the full circle (0.5 = 180 degrees).
        noise_std: Gaussian pixel noise with a std drawn from ``[0, noise_std]``
            (0-255 units).
        blur_prob: probability of a Gaussian blur with sigma drawn from ``blur_sigma``.
        blur_sigma: ``(min, max)`` blur sigma in pixels.
        prob: probability that a view is augmented at all.
        seed: see the module docstring.
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 hue: float = 0.02, noise_std: float = 4.0, blur_prob: float = 0.2,
                 blur_sigma: Tuple[float, float] = (0.3, 1.5), prob: float = 1.0,
                 seed: Optional[int] = None) -> None:
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.hue, self.noise_std = hue, noise_std
        self.blur_prob, self.blur_sigma = blur_prob, tuple(blur_sigma)
        self.prob, self.seed = prob, seed

    def _augment(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = img.astype(np.float32)
        if self.brightness:
            x *= rng.uniform(1 - self.brightness, 1 + self.brightness)
        if self.contrast:
            grey = float((x @ np.float32([0.299, 0.587, 0.114])).mean())
            x = (x - grey) * rng.uniform(1 - self.contrast, 1 + self.contrast) + grey
        if self.saturation:
            grey = (x @ np.float32([0.299, 0.587, 0.114]))[..., None]
            x = (x - grey) * rng.uniform(1 - self.saturation, 1 + self.saturation) + grey
        if self.hue:
            hsv = cv2.cvtColor(np.clip(x / 255.0, 0, 1).astype(np.float32), cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0] + 360.0 * rng.uniform(-self.hue, self.hue)) % 360.0
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
        if self.noise_std:
            x = x + rng.normal(0.0, rng.uniform(0, self.noise_std), x.shape).astype(np.float32)
        if self.blur_prob and rng.uniform() < self.blur_prob:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(*self.blur_sigma))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def __call__(self, results: Dict[str, Any]) -> Dict[str, Any]:
        views = _get_views(results, 'images')
        if views is None:
            return results
        rng = _sample_rng(results, self.seed, salt=1)
        for c, img in enumerate(views):
            if rng.uniform() < self.prob:
                views[c] = self._augment(img, rng)
        _set_views(results, 'images', views)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(brightness={self.brightness}, contrast={self.contrast}, '
                f'saturation={self.saturation}, hue={self.hue}, noise_std={self.noise_std}, '
                f'blur_prob={self.blur_prob}, prob={self.prob}, seed={self.seed})')


@TRANSFORMS.register_module()
class GeometricAugment:
    """Random scale, rotation and translation per view (optionally a horizontal flip of
    the whole sample), keeping cameras consistent.

    Each view gets its own affine ``A`` about the image centre: scale ``s`` (log-uniform
    in ``scale_range``), rotation ``theta`` (uniform in ``+-rotation`` degrees) and shift
    (uniform in ``+-translate`` times the image width / height). Image and mask are
    warped (``cv2.warpAffine``), keypoints mapped, the camera updated (see
    :func:`affine_camera`; ``crop' = A crop``); keypoints that leave the image keep their
    coordinates and become invisible. See :func:`apply_view_affine`.

    A horizontal flip mirrors the animal, so it needs the left/right keypoint pairs to
    swap: ``flip_prob > 0`` requires ``flip_pairs`` (names, resolved with the sample's
    ``keypoint_names``, or indices). It flips every view of the sample together (see
    :func:`flip_sample`; GT params are not mirrored, ``results['flipped']`` tells).

    Args:
        scale_range: ``(min, max)`` scale factor.
        rotation: maximum absolute rotation in degrees.
        translate: maximum shift as a fraction of the image size.
        flip_prob: probability of a horizontal flip of the sample.
        flip_pairs: left/right keypoint pairs, e.g. ``[('ear_L', 'ear_R'), ...]``.
        prob: probability that a view is transformed at all.
        same_for_all_views: draw one affine for all views instead of one per view.
        border_value: image fill outside the source (masks get 0).
        camera_update: ``'roll'`` (canonical ``K``, rotation folded into ``R``) or
            ``'K'`` (``K' = A K``); see :func:`affine_camera`.
        seed: see the module docstring.
    """

    def __init__(self, scale_range: Tuple[float, float] = (0.85, 1.15), rotation: float = 15.0,
                 translate: float = 0.05, flip_prob: float = 0.0,
                 flip_pairs: Optional[Sequence[Sequence[Union[str, int]]]] = None,
                 prob: float = 1.0, same_for_all_views: bool = False,
                 border_value: Union[int, Sequence[int]] = 0, camera_update: str = 'roll',
                 seed: Optional[int] = None) -> None:
        if camera_update not in CAMERA_UPDATES:
            raise ValueError(f'camera_update must be one of {CAMERA_UPDATES}, got '
                             f'{camera_update!r}')
        if flip_prob > 0 and not flip_pairs:
            raise ValueError('GeometricAugment: flip_prob > 0 needs flip_pairs (left/right '
                             'keypoint pairs to swap); a flip without them would mislabel '
                             'every lateral keypoint')
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f'scale_range must satisfy 0 < min <= max, got {scale_range}')
        self.scale_range = tuple(float(s) for s in scale_range)
        self.rotation, self.translate = float(rotation), float(translate)
        self.flip_prob = float(flip_prob)
        self.flip_pairs = [tuple(p) for p in flip_pairs] if flip_pairs else []
        self.prob, self.same_for_all_views = float(prob), bool(same_for_all_views)
        self.border_value, self.seed = border_value, seed
        self.camera_update = camera_update

    def random_affine(self, rng: np.random.Generator, size: Sequence[int]) -> np.ndarray:
        """A (3, 3) random affine for an image of ``size`` (W, H)."""
        W, H = float(size[0]), float(size[1])
        lo, hi = math.log(self.scale_range[0]), math.log(self.scale_range[1])
        s = math.exp(rng.uniform(lo, hi))
        th = math.radians(rng.uniform(-self.rotation, self.rotation))
        dx, dy = rng.uniform(-self.translate, self.translate, 2) * (W, H)
        cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
        c, sn = s * math.cos(th), s * math.sin(th)
        return np.array([[c, -sn, cx + dx - c * cx + sn * cy],
                         [sn, c, cy + dy - sn * cx - c * cy],
                         [0.0, 0.0, 1.0]])

    def __call__(self, results: Dict[str, Any]) -> Dict[str, Any]:
        rng = _sample_rng(results, self.seed, salt=2)
        results.setdefault('flipped', False)
        if self.flip_prob and rng.uniform() < self.flip_prob:
            K = np.asarray(results['keypoints_2d']).shape[1]
            perm = _pair_indices(self.flip_pairs, results.get('keypoint_names'), K)
            flip_sample(results, perm)
        size = np.asarray(results['image_size'])
        shared = self.random_affine(rng, size[0]) if self.same_for_all_views else None
        for c in range(_num_views(results)):
            if rng.uniform() >= self.prob:
                continue
            A = shared if shared is not None else self.random_affine(rng, size[c])
            apply_view_affine(results, c, A, border_value=self.border_value,
                              camera_update=self.camera_update)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(scale_range={self.scale_range}, '
                f'rotation={self.rotation}, translate={self.translate}, '
                f'flip_prob={self.flip_prob}, prob={self.prob}, seed={self.seed})')


@TRANSFORMS.register_module()
class ResizeViews:
    """Resize every view to ``size`` (W, H), updating keypoints and cameras.

    Args:
        size: output ``(W, H)``, or one int for a square.
        keep_ratio: scale uniformly to fit inside ``size`` and pad (centred) with
            ``pad_value``; otherwise stretch to ``size``.
        pad_value: image fill of the padding (masks get 0).
    """

    def __init__(self, size: Union[int, Sequence[int]], keep_ratio: bool = False,
                 pad_value: int = 0) -> None:
        self.size = (int(size), int(size)) if np.ndim(size) == 0 else \
            (int(size[0]), int(size[1]))
        self.keep_ratio, self.pad_value = bool(keep_ratio), pad_value

    def __call__(self, results: Dict[str, Any]) -> Dict[str, Any]:
        W, H = self.size
        sizes = np.asarray(results['image_size'])
        for c in range(_num_views(results)):
            w, h = int(sizes[c, 0]), int(sizes[c, 1])
            if self.keep_ratio:
                s = min(W / w, H / h)
                nw, nh = max(1, round(w * s)), max(1, round(h * s))
                ox, oy = (W - nw) // 2, (H - nh) // 2
            else:
                nw, nh, ox, oy = W, H, 0, 0
            sx, sy = nw / w, nh / h
            # Pixel-centre-exact resize (cv2.resize's mapping), then a shift to pad.
            A = np.array([[sx, 0.0, 0.5 * sx - 0.5 + ox], [0.0, sy, 0.5 * sy - 0.5 + oy],
                          [0.0, 0.0, 1.0]])
            if (nw, nh) == (W, H):
                apply_view_affine(results, c, A, (W, H), resize=True)
            else:
                # Resize exactly, then pad by a pure translation (no resampling).
                S = A.copy()
                S[:2, 2] -= (ox, oy)
                apply_view_affine(results, c, S, (nw, nh), resize=True)
                T = np.array([[1.0, 0.0, ox], [0.0, 1.0, oy], [0.0, 0.0, 1.0]])
                apply_view_affine(results, c, T, (W, H), interpolation=cv2.INTER_NEAREST,
                                  border_value=self.pad_value)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, keep_ratio={self.keep_ratio})'


# Keys PackInputs converts to tensors when present (in data_samples).
PACK_KEYS = ('keypoints_2d', 'visible', 'confidence', 'view_valid', 'K', 'dist', 'R', 't',
             'image_size', 'crop', 'keypoints_3d', 'masks', 'mask_valid', 'view_indices')
# Metadata passed through as they are (``camera_names``: one per view, so that reports
# name the cameras).
META_KEYS = ('session', 'session_index', 'frame', 'instance', 'index', 'sample_idx',
             'flipped', 'camera_names')


@TRANSFORMS.register_module()
class PackInputs:
    """Turn a sample into ``dict(inputs=..., data_samples=...)`` of torch tensors.

    ``inputs``: images as float32 (C, 3, H, W), ``(image - mean) / std`` (mean and std in
    0-255 units; ImageNet's by default; ``mean=None`` only scales to [0, 1]). Absent
    when the sample has no images (``load_images=False``).
    ``data_samples``: a dict with the ``PACK_KEYS`` present in the sample as tensors
    (float32; bool for ``visible``, ``view_valid``, ``masks`` and ``mask_valid``; int64
    for ``image_size`` and ``view_indices``), ``params`` as a dict of float32 tensors,
    and ``META_KEYS`` unchanged. With ``collate_fn=dict(type='default_collate')``
    batches stack along a new first axis.

    Args:
        mean, std: per-channel normalisation (RGB, 0-255 units).
        squeeze_single_view: for single-view samples (``results['single_view']``) drop
            the view axis: images (3, H, W), keypoints_2d (K, 2), K (3, 3), ...
        meta_keys: metadata keys to pass through (missing ones are skipped).
    """

    def __init__(self, mean: Optional[Sequence[float]] = IMAGENET_MEAN,
                 std: Optional[Sequence[float]] = IMAGENET_STD,
                 squeeze_single_view: bool = True,
                 meta_keys: Sequence[str] = META_KEYS) -> None:
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)
        self.squeeze_single_view = bool(squeeze_single_view)
        self.meta_keys = tuple(meta_keys)

    def __call__(self, results: Dict[str, Any]) -> Dict[str, Any]:
        squeeze = self.squeeze_single_view and bool(results.get('single_view', False))
        packed: Dict[str, Any] = {}
        views = _get_views(results, 'images')
        if views is not None:
            if any(v.shape != views[0].shape for v in views):
                raise ValueError('PackInputs: views have different image sizes '
                                 f'{[v.shape[:2] for v in views]}; add ResizeViews first')
            x = np.stack(views).astype(np.float32)
            if self.mean is not None:
                x = (x - self.mean) / (self.std if self.std is not None else 1.0)
            else:
                x = x / 255.0
            x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
            packed['inputs'] = x[0] if squeeze else x
        samples: Dict[str, Any] = {}
        for key in PACK_KEYS:
            if results.get(key) is None:
                continue
            value = results[key]
            if key == 'masks':
                mviews = _get_views(results, 'masks')
                if any(v.shape != mviews[0].shape for v in mviews):
                    raise ValueError('PackInputs: masks have different sizes; add ResizeViews')
                arr = np.stack(mviews) > 0
            else:
                arr = np.asarray(value)
            if key in ('visible', 'view_valid', 'mask_valid'):
                arr = arr.astype(bool)
            elif key in ('image_size', 'view_indices'):
                arr = arr.astype(np.int64)
            elif arr.dtype != bool:
                arr = arr.astype(np.float32)
            tensor = torch.from_numpy(np.ascontiguousarray(arr))
            if squeeze and key != 'keypoints_3d':
                tensor = tensor[0]
            samples[key] = tensor
        if results.get('params') is not None:
            samples['params'] = {k: torch.from_numpy(np.asarray(v, dtype=np.float32).copy())
                                 for k, v in results['params'].items()}
        for key in self.meta_keys:
            if key in results:
                samples[key] = results[key]
        packed['data_samples'] = samples
        return packed

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(mean={None if self.mean is None else self.mean.tolist()},'
                f' std={None if self.std is None else self.std.tolist()})')
