"""The multi-camera Ensemble Kalman Smoother (Lightning Pose's ``eks``) as a peer of the fit.

``ensemble-kalman-smoother`` smooths each keypoint's 3D track over a video with a Kalman
smoother whose observations are the 2D labels through the calibrated cameras (its
nonlinear multi-view path: a random walk in 3D per keypoint, the projection as the
observation model, the process noise from the triangulated points' frame-to-frame steps
and the smoothing parameter fitted by the smoother's own likelihood). With one set of
labels (no ensemble of networks) each label's variance is ``1 / confidence`` px^2, as the
package does for a single model.

It pins ``jax<=0.4.36`` and ``dynamax``, which do not install beside this project's
``jax``, so it runs in an interpreter of its own::

    python -m venv --system-site-packages eks-env
    eks-env/bin/pip install --no-deps ensemble-kalman-smoother==4.6.2 dynamax==1.0.1
    eks-env/bin/pip install "jax==0.4.36" "jaxlib==0.4.36" "optax==0.2.4" "chex==0.1.88" \\
        tensorflow-probability jaxtyping fastprogress scikit-learn

and :func:`eks_peer` hands it each run of an animal's consecutive frames in a file: this
module, run as a script by that interpreter (``python eks_peer.py IN.npz OUT.npz``), reads
numpy, ``aniposelib`` and ``eks`` only (no torch, no smilfit).

A label no view gives (a point not seen, an invalid view) is given to the smoother as the
projection of the point the other views triangulate, with confidence 0 (variance 1e5
px^2: no weight), since the smoother takes no missing observation; a point fewer than two
views see is NaN in the answer, as in every other peer.
"""
from __future__ import annotations

import sys

import numpy as np

#: The confidence (so the variance, 1 / confidence px^2) the smoother gives a label no view
#: has (``eks.core.ensemble`` floors confidences at 1e-5).
MISSING_CONFIDENCE = 0.0

#: How to install the smoother's own interpreter (the module docstring).
EKS_INSTALL = ('python -m venv --system-site-packages eks-env && eks-env/bin/pip install '
               '--no-deps ensemble-kalman-smoother==4.6.2 dynamax==1.0.1 && eks-env/bin/pip '
               'install "jax==0.4.36" "jaxlib==0.4.36" "optax==0.2.4" "chex==0.1.88" '
               'tensorflow-probability jaxtyping fastprogress scikit-learn')


def eks_peer(python: str):
    """The peer ``observations -> (B, K, 3)`` that runs the smoother (module docstring)
    with the interpreter ``python`` over every run of an animal's consecutive frames seen
    by the same views (``frame_index`` and ``animal`` in the observations; without them
    every sample is a run of one frame: the labels' triangulation).

    Raises:
        FileNotFoundError: ``python`` does not exist.
    """
    import os
    if not os.path.isfile(python):
        raise FileNotFoundError(f'--eks-python {python}: no such interpreter ({EKS_INSTALL})')

    def peer(obs):
        import subprocess
        import tempfile
        from pathlib import Path

        from .triangulation_peers import _observed_points, animal_runs
        kp = _observed_points(obs)
        B, _, K, _ = kp.shape
        confidence = np.asarray(obs.get('confidence', np.ones(kp.shape[:3])), np.float64)
        arrays, runs = {}, []
        for run, views in animal_runs(obs, kp):
            i, b = len(runs), run[0]
            runs.append(run)
            arrays[f'points_{i}'] = np.moveaxis(kp[run][:, views], 1, 0)       # (C, T, K, 2)
            arrays[f'confidence_{i}'] = np.moveaxis(confidence[run][:, views], 1, 0)
            for key in ('K', 'R', 't'):
                arrays[f'{key}_{i}'] = np.asarray(obs[key][b], np.float64)[views]
            arrays[f'dist_{i}'] = (np.asarray(obs['dist'][b], np.float64)[views]
                                   if 'dist' in obs else np.zeros((len(views), 5)))
        out = np.full((B, K, 3), np.nan)
        if not runs:
            return out
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / 'runs.npz', Path(tmp) / 'points.npz'
            np.savez(src, runs=len(runs), **arrays)
            done = subprocess.run([python, __file__, str(src), str(dst)], capture_output=True,
                                  text=True)
            if done.returncode:
                raise RuntimeError(f'the Ensemble Kalman Smoother ({python}) failed:\n'
                                   f'{done.stderr[-3000:]}')
            with np.load(dst) as solved:
                for i, run in enumerate(runs):
                    out[run] = solved[f'points_{i}']
        return out
    return peer


def _camera_group(K, R, t, dist):
    """aniposelib's ``CameraGroup`` (OpenCV conventions, as smilfit's)."""
    import cv2
    from aniposelib.cameras import Camera, CameraGroup
    return CameraGroup([Camera(matrix=K[c], dist=dist[c], rvec=cv2.Rodrigues(R[c])[0].ravel(),
                               tvec=t[c].ravel(), name=str(c)) for c in range(len(K))])


def smooth_run(points: np.ndarray, confidence: np.ndarray, group) -> np.ndarray:
    """(T, K, 3) the smoother's points of one run, ``points`` (C, T, K, 2) NaN where a view
    gives none, ``confidence`` (C, T, K); NaN where fewer than two views see a point."""
    import io
    import warnings
    from contextlib import redirect_stderr, redirect_stdout

    from eks.marker_array import MarkerArray
    from eks.multicam_smoother import ensemble_kalman_smoother_multicam
    C, T, K, _ = points.shape
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        # (as eks triangulates: without aniposelib turning on jax's 64 bits, which the
        # smoother's float32 arrays then fail)
        seen = group.triangulate(points.reshape(C, T * K, 2), undistort=True, fast=True,
                                 disable_64bit=True)
    seen = seen.reshape(T, K, 3)
    known = np.isfinite(seen).all(-1)                               # (T, K)
    out = np.full((T, K, 3), np.nan)
    if T < 2 or not known.any():
        out[known] = seen[known]
        return out
    keep = np.flatnonzero(known.any(0))          # keypoints some frame triangulates
    # a frame's point nobody triangulates: the run's nearest triangulated frame's
    filled = seen[:, keep].copy()
    for j in range(len(keep)):
        have = np.flatnonzero(known[:, keep[j]])
        nearest = have[np.abs(np.arange(T)[:, None] - have[None, :]).argmin(1)]
        filled[:, j] = seen[nearest, keep[j]]
    projected = group.project(filled.reshape(-1, 3)).reshape(C, T, len(keep), 2)
    xy = points[:, :, keep]
    missing = ~np.isfinite(xy).all(-1)
    xy = np.where(missing[..., None], projected, xy)
    conf = np.where(missing, MISSING_CONFIDENCE, confidence[:, :, keep])
    array = MarkerArray(np.concatenate([xy, conf[..., None]], -1)[None].astype(np.float32),
                        data_fields=['x', 'y', 'likelihood'])
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        _, _, df_3d = ensemble_kalman_smoother_multicam(
            array, keypoint_names=[f'k{k}' for k in keep],
            camera_names=[str(c) for c in range(C)], camgroup=group)
    smoothed = df_3d.to_numpy().reshape(T, len(keep), 6)[..., :3]
    out[:, keep] = smoothed
    out[~known] = np.nan
    return out


def main(argv) -> int:
    """``IN.npz OUT.npz``: every run of ``IN`` smoothed (run by the smoother's interpreter)."""
    src, dst = argv
    result = {}
    with np.load(src) as data:
        for i in range(int(data['runs'])):
            group = _camera_group(data[f'K_{i}'], data[f'R_{i}'], data[f't_{i}'],
                                  data[f'dist_{i}'])
            result[f'points_{i}'] = smooth_run(data[f'points_{i}'],
                                               data[f'confidence_{i}'], group)
    np.savez(dst, **result)
    return 0


if __name__ == '__main__':
    raise SystemExit(main(sys.argv[1:]))
