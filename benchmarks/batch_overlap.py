"""Batches of a video fitted with context (``data.overlap``): the 3D error at the batches'
edges and inside them, and the time, against no context.

A keypoint-only synthetic video (:mod:`smilfit.datasets.synthetic_animals`: 4 cameras,
two animals interleaved, poses moving about 0.05 rad a frame, Gaussian label noise) is
fitted by :func:`smilfit.apis.fitting.fit_dataset` with ``configs/fitting/
animal_skeletons.py`` and the motion prior after its coarse stages (as
``benchmarks/long_session.py`` fits it), in batches of ``--batch-frames`` frames per
animal, with ``--overlaps`` frames of each animal on each side as context. Errors are the
fitted keypoints' mean distance to the true ones, in % of the body length, over the
frames within two of a batch's edge and over the others. One thread.

Usage::

    python benchmarks/batch_overlap.py [--frames 96] [--batch-frames 16]
        [--overlaps 0 2 4 8] [--noise 3] [--tables docs/tables]
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
from long_session import VIDEO_CORRELATION, config  # noqa: E402
from tables import command_line, emit  # noqa: E402

#: Frames within this many of a batch's first or last are its edges.
EDGE_FRAMES = 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', type=int, default=96, help='frames per animal')
    parser.add_argument('--animals', type=int, default=2)
    parser.add_argument('--batch-frames', type=int, default=16,
                        help='frames of each animal per batch')
    parser.add_argument('--overlaps', type=int, nargs='+', default=[0, 2, 4, 8],
                        help='frames of each animal fitted as context on each side')
    parser.add_argument('--noise', type=float, default=3.0, help='label noise, px')
    parser.add_argument('--tables', metavar='DIR', default=None,
                        help='also write the table to DIR/batch_overlap.md')
    args = parser.parse_args(argv)

    import h5py
    import numpy as np
    import torch

    from smilfit.apis.fitting import fit_dataset
    from smilfit.datasets.synthetic_animals import generate_animal_session

    torch.set_num_threads(1)
    A = args.animals
    batch = args.batch_frames * A
    rows, base = [], None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = generate_animal_session(tmp / 'video.h5', num_animals=A, frames=args.frames,
                                        pose_correlation=VIDEO_CORRELATION,
                                        noise_px=args.noise, return_keypoints_3d=True)
        for overlap in args.overlaps:
            cfg = config(tmp / 'video.h5', batch, 200, motion=True)
            cfg.data = dict(cfg.data, overlap=overlap * A)
            start = time.perf_counter()
            results = fit_dataset(cfg, tmp / f'overlap_{overlap}', progress=False)
            spent = time.perf_counter() - start
            with h5py.File(results) as f:
                fitted = f['keypoints'][:]
            error = 100 * np.linalg.norm(fitted - truth['keypoints_3d'], axis=-1).mean(-1) \
                / truth['length']
            place = (np.arange(len(error)) % batch) // A       # frame within its batch
            edge = (place < EDGE_FRAMES) | (place >= args.batch_frames - EDGE_FRAMES)
            base = spent if base is None else base
            rows.append([overlap, f'{error.mean():.3f}', f'{error[edge].mean():.3f}',
                         f'{error[~edge].mean():.3f}', f'{spent:.1f}', f'{spent / base:.2f}'])
            print(f'overlap {overlap} done', flush=True)
    emit('batch_overlap', ['context frames per side', '3D error % of body',
                           'at batch edges', 'inside', 'fit s', 'time / first row'], rows,
         args.tables, command_line(argv, 'batch_overlap.py'))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
