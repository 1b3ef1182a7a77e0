"""Triangulation without a body model, the estimates a fit must beat: DLT and anipose's.

Each *peer* maps a batch of observations (numpy, as
:func:`smilfit.apis.fitting.observations_from_batch` gives them, the views not used
already removed by :func:`smilfit.datasets.view_selection.select_views`) to (B, K, 3) world
points, NaN where it gives none. :func:`dlt_peer` is smilfit's own weighted DLT;
:func:`aniposelib_peers` are anipose's library (``aniposelib``, an optional benchmark
dependency: ``pip install -e .[peers]`` then ``pip install --no-deps aniposelib==0.8.0``,
whose ``opencv-contrib-python`` requirement would clash with ``opencv-python``):

- ``anipose``: ``CameraGroup.triangulate``, every view that sees a point, unweighted;
- ``anipose RANSAC``: ``triangulate_ransac``, the subset of views that agree best;
- ``anipose limbs``: ``optim_points`` from the RANSAC points with the skeleton's edges as
  limb-length constraints (anipose's "spatial constraints"; no temporal term, frames are
  not assumed consecutive);
- ``anipose smooth``: the same over each run of an animal's consecutive frames
  (``frame_index`` and ``animal`` in the observations) with anipose's temporal term at
  aniposelib's default weight (``scale_smooth=4``, in units of the median-filtered
  points' mean frame-to-frame motion); what ``anipose triangulate`` does with
  ``optim = true``. Without frame indices every sample is a run of its own.

A sample's cameras are those of its own session: samples are grouped by their cameras
and fitting views, one ``CameraGroup`` per group. Limb lengths of ``anipose limbs`` are
estimated over a group's samples (anipose's own assumption: one animal per recording).
"""
from __future__ import annotations

import importlib
import warnings
from typing import Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

#: observations (numpy dict) -> (B, K, 3) world points, NaN where none
Peer = Callable[[Mapping[str, np.ndarray]], np.ndarray]

__all__ = ['Peer', 'dlt_peer', 'aniposelib_peers', 'aniposelib_available', 'PEERS_INSTALL']

PEERS_INSTALL = ('pip install -e .[peers] && pip install --no-deps aniposelib==0.8.0')


def dlt_peer(observations: Mapping[str, np.ndarray]) -> np.ndarray:
    """smilfit's DLT from the observed views, weighted by confidence (B, K, 3) float64."""
    import torch

    from smilfit.cameras.triangulation import triangulate_observations
    keys = ('keypoints_2d', 'confidence', 'visible', 'view_valid', 'K', 'R', 't', 'dist')
    return triangulate_observations({k: torch.as_tensor(np.asarray(v))
                                     for k, v in observations.items() if k in keys}
                                    ).numpy().astype(np.float64)


def aniposelib_available() -> bool:
    """Whether ``aniposelib`` (and its numba) can be imported."""
    try:
        importlib.import_module('aniposelib.cameras')
    except ImportError:
        return False
    return True


def _observed_points(obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """(B, C, K, 2) labels, NaN where a view does not see the point (not visible, zero
    confidence, invalid view)."""
    kp = np.asarray(obs['keypoints_2d'], np.float64).copy()
    seen = np.isfinite(kp).all(-1)
    if 'visible' in obs:
        seen &= np.asarray(obs['visible'], bool)
    if 'confidence' in obs:
        seen &= np.asarray(obs['confidence'], np.float64) > 0
    if 'view_valid' in obs:
        seen &= np.asarray(obs['view_valid'], bool)[..., None]
    kp[~seen] = np.nan
    return kp


def _camera_groups(obs: Mapping[str, np.ndarray], kp: np.ndarray
                   ) -> Dict[bytes, Tuple[np.ndarray, np.ndarray]]:
    """Samples with the same cameras and used views: key -> (sample indices, view indices)."""
    used = np.isfinite(kp).all(-1).any(-1)                       # (B, C) a view with a label
    if 'view_valid' in obs:
        used &= np.asarray(obs['view_valid'], bool)
    B, C = used.shape
    dist = np.asarray(obs.get('dist', np.zeros((B, C, 5))), np.float64).reshape(B, C, -1)
    cams = np.concatenate([np.asarray(obs['K'], np.float64).reshape(B, C, -1),
                           np.asarray(obs['R'], np.float64).reshape(B, C, -1),
                           np.asarray(obs['t'], np.float64).reshape(B, C, -1), dist], -1)
    groups: Dict[bytes, list] = {}
    for b in range(B):
        views = np.flatnonzero(used[b])
        key = views.tobytes() + cams[b, views].tobytes()
        groups.setdefault(key, [[], views])[0].append(b)
    return {key: (np.asarray(s), v) for key, (s, v) in groups.items()}


def _camera_group(obs: Mapping[str, np.ndarray], b: int, views: np.ndarray):
    """aniposelib's ``CameraGroup`` of sample ``b``'s ``views`` (OpenCV conventions, as
    smilfit's: ``x_cam = R X + t``, distortion ``k1 k2 p1 p2 k3``)."""
    import cv2
    from aniposelib.cameras import Camera, CameraGroup
    cams = []
    for c in views:
        R = np.asarray(obs['R'][b, c], np.float64)
        rvec = cv2.Rodrigues(R)[0].ravel()
        dist = (np.asarray(obs['dist'][b, c], np.float64).ravel() if 'dist' in obs
                else np.zeros(5))
        cams.append(Camera(matrix=np.asarray(obs['K'][b, c], np.float64), dist=dist,
                           rvec=rvec, tvec=np.asarray(obs['t'][b, c], np.float64).ravel(),
                           name=str(c)))
    return CameraGroup(cams)


def _by_group(obs: Mapping[str, np.ndarray], solve) -> np.ndarray:
    """(B, K, 3): ``solve(group, points (Cg, Bg, K, 2)) -> (Bg, K, 3)`` per camera group;
    NaN for samples with fewer than two views."""
    kp = _observed_points(obs)
    B, _, K, _ = kp.shape
    out = np.full((B, K, 3), np.nan)
    for samples, views in _camera_groups(obs, kp).values():
        if len(views) < 2:
            continue
        group = _camera_group(obs, samples[0], views)
        points = np.moveaxis(kp[samples][:, views], 1, 0)        # (Cg, Bg, K, 2)
        out[samples] = solve(group, points)
    return out


def _triangulate(group, points: np.ndarray) -> np.ndarray:
    Cg, Bg, K, _ = points.shape
    p3 = group.triangulate(points.reshape(Cg, Bg * K, 2), undistort=True)
    return p3.reshape(Bg, K, 3)


def _ransac(group, points: np.ndarray) -> np.ndarray:
    """RANSAC over the points at least two views see (aniposelib fails on a point no view
    sees)."""
    Cg, Bg, K, _ = points.shape
    flat = points.reshape(Cg, Bg * K, 2)
    two = np.isfinite(flat).all(-1).sum(0) >= 2
    out = np.full((Bg * K, 3), np.nan)
    if two.any():
        out[two] = group.triangulate_ransac(flat[:, two], undistort=True, min_cams=2)[0]
    return out.reshape(Bg, K, 3)


def aniposelib_peers(edges: Sequence[Tuple[int, int]]) -> Dict[str, Peer]:
    """anipose's triangulations (see the module docstring) by name.

    Args:
        edges: the skeleton's (keypoint, keypoint) edges, the limb-length constraints of
            ``anipose limbs`` (without edges it is left out).

    Raises:
        ImportError: aniposelib is not installed (the message says how to install it).
    """
    if not aniposelib_available():
        raise ImportError(f'the anipose peers need aniposelib: {PEERS_INSTALL}')
    edges = [list(map(int, e)) for e in edges]

    def quiet(solve):
        """``solve`` without numba's compilation warnings (aniposelib's ``forceobj`` jit)."""
        def run(obs):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                return _by_group(obs, solve)
        return run

    def limbs(group, points: np.ndarray) -> np.ndarray:
        start = _ransac(group, points)
        if not np.isfinite(start).any():
            return start
        import io
        from contextlib import redirect_stdout
        with redirect_stdout(io.StringIO()):     # aniposelib prints its progress
            out = group.optim_points(points, start, constraints=edges, scale_smooth=0.0)
        # A point no view sees stays unknown (optim_points interpolates it from others).
        return np.where(np.isfinite(start), out, np.nan)

    def smooth(obs):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return _smoothed_runs(obs, edges)

    peers: Dict[str, Peer] = {
        'anipose': quiet(_triangulate),
        'anipose RANSAC': quiet(_ransac),
    }
    if edges:
        peers['anipose limbs'] = quiet(limbs)
    peers['anipose smooth'] = smooth
    return peers


#: aniposelib's default weight of its temporal term (``optim_points``).
ANIPOSE_SCALE_SMOOTH = 4.0


def _smoothed_runs(obs: Mapping[str, np.ndarray], edges) -> np.ndarray:
    """(B, K, 3) ``optim_points`` with its temporal term over every run of consecutive
    frames of one animal seen by the same views (a run of one frame has no temporal
    term)."""
    import io
    from contextlib import redirect_stdout
    kp = _observed_points(obs)
    B, _, K, _ = kp.shape
    out = np.full((B, K, 3), np.nan)
    for run, views in animal_runs(obs, kp):
        group = _camera_group(obs, run[0], views)
        points = np.moveaxis(kp[run][:, views], 1, 0)          # (Cg, T, K, 2)
        start = _ransac(group, points)
        if len(run) < 2 or not np.isfinite(start).any():
            out[run] = start
            continue
        with redirect_stdout(io.StringIO()):     # aniposelib prints its progress
            solved = group.optim_points(points, start, constraints=edges,
                                        scale_smooth=ANIPOSE_SCALE_SMOOTH)
        out[run] = np.where(np.isfinite(start), solved, np.nan)
    return out


def animal_runs(obs: Mapping[str, np.ndarray], kp: np.ndarray):
    """Every run of an animal's consecutive frames seen by the same views (at least two):
    ``(samples (T,) in frame order, views)``, from ``frame_index`` and ``animal`` (without
    them every sample is a run of its own); ``kp`` from :func:`_observed_points`."""
    B = kp.shape[0]
    frames = np.asarray(obs.get('frame_index', np.arange(B) * 2), np.int64)
    animals = np.asarray(obs.get('animal', np.zeros(B)), np.int64)
    for samples, views in _camera_groups(obs, kp).values():
        if len(views) < 2:
            continue
        s = samples[np.lexsort((frames[samples], animals[samples]))]
        cut = np.flatnonzero((np.diff(frames[s]) != 1) | (np.diff(animals[s]) != 0)) + 1
        for run in np.split(s, cut):
            yield run, views
