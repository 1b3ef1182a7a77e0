"""The shipped multi-camera config on a long video of one animal: its batch size, and what
the motion prior costs and gains there, beside DLT's triangulation.

A keypoint-only synthetic video of one animal (:mod:`smilfit.datasets.synthetic_animals`:
the demo mouse, 4 cameras, poses moving about 0.05 rad a frame, its own bones and label
offsets, Gaussian label errors of ``--noise`` px; each ``--seeds`` draw its own video) is
fitted by ``configs/fitting/mouse_multiview.py`` (with the demo mouse in place of the SMIL
mouse, as ``holdout_synthetic.py`` fits it) in batches of each ``--batch-sizes``, with the
motion prior and without it (``holdout.py``'s ``no_motion`` variant). ``long_session.py``
measures the cost on two interleaved animals with ``animal_skeletons.py``; this is the
config users start from, on one animal, where a batch holds fewer chains side by side.

The table, per seed: every method's 3D error over all frames (the distance of the fitted
labels from the true ones, in % of the body length, median and 90th percentile) and, for
the fits, the whole fit's time (one thread, skeleton estimate included) and its ratio to
the same batch size without the prior. DLT (and, with ``--peers anipose``, anipose's
triangulations: every view, RANSAC, and smoothed over the video at its default weight)
sees the same noisy labels from every camera; anipose beside the fit on a video is in
``holdout_synthetic.py``'s video tables (60 frames: its RANSAC is too slow for 1,024).

Usage::

    python benchmarks/video_batches.py          # 1,024 frames, batches of 256 and 1,024
    python benchmarks/video_batches.py --seeds 0 1 2 --batch-sizes 128 256 1024 \
        --tables docs/tables                   # the docs' table
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from holdout_synthetic import VIDEO, _config  # noqa: E402  (benchmarks/holdout_synthetic.py)
from tables import command_line, emit  # noqa: E402


def make_video(path: Path, frames: int, noise: float, seed: int) -> dict:
    """Write one animal's video to ``path`` (the poses moving as in ``holdout_synthetic.py``'s
    video case, without its gaps); its true 3D labels (``keypoints_3d``, (N, K, 3)) and
    body length (``length``)."""
    from smilfit.datasets.synthetic_animals import generate_animal_session
    correlation, _ = VIDEO['video']
    made = generate_animal_session(path, num_animals=1, frames=frames, num_views=4,
                                   bone_std=0.03, offset_std=0.05, pose_std=0.25,
                                   noise_px=noise, seed=seed, return_keypoints_3d=True,
                                   pose_correlation=correlation)
    return dict(keypoints_3d=made['keypoints_3d'], length=float(made['length']))


def config(path: Path, batch_size: int, motion: bool):
    """``mouse_multiview.py`` with the demo mouse (as ``holdout_synthetic.py`` fits it) on
    the video at ``path``, in batches of ``batch_size``; without the motion prior unless
    ``motion``."""
    cfg = _config('shipped' if motion else 'no_motion', path)
    cfg.data['batch_size'] = batch_size
    return cfg


def error_stats(points, truth: dict):
    """(median, 90th percentile) of the points' distance from the truth, % of the body
    length, over the points both give."""
    import numpy as np
    distance = np.linalg.norm(np.asarray(points, np.float64) - truth['keypoints_3d'], axis=-1)
    distance = 100.0 * distance[np.isfinite(distance)] / truth['length']
    return float(np.median(distance)), float(np.percentile(distance, 90))


def triangulations(path: Path, with_anipose: bool) -> dict:
    """DLT's (and, with ``with_anipose``, aniposelib's) 3D labels of the video at ``path``:
    name -> (N, K, 3)."""
    import numpy as np

    from smilfit.apis.fitting.observations import observations_from_batch
    from smilfit.datasets import DatasetReader
    from smilfit.evaluation.triangulation_peers import aniposelib_peers, dlt_peer
    reader = DatasetReader(str(path))
    batch = reader.read(np.arange(len(reader)))
    obs = observations_from_batch(batch)
    obs.update(frame_index=np.asarray(batch['frame'], np.int64),
               animal=np.zeros(len(reader), np.int64))
    out = {'DLT': dlt_peer(obs)}
    if with_anipose:
        for name, peer in aniposelib_peers(reader.skeleton_edges).items():
            out[name] = peer(obs)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', type=int, default=1024, help='frames of the video')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[256, 1024],
                        help='samples fitted together (the shipped config: 256)')
    parser.add_argument('--noise', type=float, default=2.0, help='label errors, px')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='one video each')
    parser.add_argument('--peers', choices=['anipose', 'none'], default='none',
                        help="also anipose's triangulations beside DLT (skipped with a note "
                             'where aniposelib is not installed). Slow on a long video: '
                             'on 128 frames they were still in RANSAC triangulation (which '
                             'its smoothing starts from) after 10 minutes')
    parser.add_argument('--tables', metavar='DIR', default=None,
                        help='also write the table to DIR/video_batches.md')
    args = parser.parse_args(argv)
    if args.frames < 2 or min(args.batch_sizes) < 1:
        parser.error('--frames must be at least 2 and every --batch-sizes positive')
    if args.noise < 0:
        parser.error('--noise must be >= 0')

    import h5py
    import torch

    from smilfit.apis.fitting import fit_dataset
    from smilfit.evaluation.triangulation_peers import PEERS_INSTALL, aniposelib_available

    torch.set_num_threads(1)
    with_anipose = args.peers == 'anipose' and aniposelib_available()
    if args.peers == 'anipose' and not with_anipose:
        print(f'note: anipose rows left out, aniposelib is not installed ({PEERS_INSTALL})')
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            video = tmp / 'video.h5'
            truth = make_video(video, args.frames, args.noise, seed)
            for name, points in triangulations(video, with_anipose).items():
                rows.append([seed, name, '', '', '', '', *_cells(error_stats(points, truth))])
            for batch in args.batch_sizes:
                spent = {}
                for motion in (False, True):
                    start = time.perf_counter()
                    results = fit_dataset(config(video, batch, motion),
                                          tmp / f'fit_{batch}_{motion}', progress=False)
                    spent[motion] = time.perf_counter() - start
                    with h5py.File(results) as f:
                        fitted = f['fitted_keypoints_3d'][:]
                    ratio = f'{spent[True] / spent[False]:.2f}' if motion else ''
                    rows.append([seed, 'fit, motion prior' if motion else 'fit, frames alone',
                                 batch, f'{spent[motion]:.1f}',
                                 f'{1000 * spent[motion] / args.frames:.2f}', ratio,
                                 *_cells(error_stats(fitted, truth))])
                    print(f'seed {seed}, batches of {batch}, motion prior '
                          f'{"on" if motion else "off"} done', flush=True)
    print(f'one animal, {args.frames} frames, 4 cameras, {args.noise:g} px label errors, '
          'one thread')
    emit('video_batches', ['seed', 'method', 'batch', 'fit s', 'ms per frame',
                           'time / frames alone', '3D median % of body', '3D p90 %'],
         rows, args.tables, command_line(argv, 'video_batches.py'))
    return 0


def _cells(stats):
    return [f'{stats[0]:.3f}', f'{stats[1]:.3f}']


if __name__ == '__main__':
    raise SystemExit(main())
