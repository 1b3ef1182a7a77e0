"""What cutting the motion prior's chains costs: the 3D error at the cuts and the time,
against chains as long as the batch allows.

A keypoint-only synthetic video without gaps (:mod:`smilfit.datasets.synthetic_animals`:
4 cameras, ``--animals`` animals interleaved, poses moving about 0.05 rad a frame,
Gaussian label noise of ``--noise`` px) is fitted by
:func:`smilfit.apis.fitting.fit_dataset` with ``configs/fitting/animal_skeletons.py`` and
the motion prior after its coarse stages (as ``benchmarks/long_session.py`` fits it), with
``MotionPriorHandler(chain_frames=)`` each of ``--chain-frames`` (``0``: chains uncut, as
long as an animal's frames in a batch). Each animal's frames of a batch are one chain; a
chain is cut every ``chain_frames`` frames, where a frame loses its link to the one before.

Errors are the fitted keypoints' mean distance to the true ones, in % of the body length:
over all frames, over the frames within two of a cut (not counting the batches' own
edges, which every row has), and over those same frames fitted with uncut chains. Time is
the whole fit's (skeletons included), one thread, the rows run one after another.

Usage::

    python benchmarks/chain_cuts.py [--frames 1024] [--chain-frames 0 32 64 128 256]
        [--noise 3] [--tables docs/tables]
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

#: Frames within this many of a cut (or of a batch's first or last frame) are at it.
EDGE_FRAMES = 2


def cut_frames(num_frames: int, frames_per_batch: int, chain_frames: int):
    """(num_frames,) bool: the frames of one animal within :data:`EDGE_FRAMES` of a cut of
    chains of ``chain_frames`` frames (0: uncut), leaving out those at a batch's edge."""
    import numpy as np
    place = np.arange(num_frames) % frames_per_batch          # frame within its batch
    batch_edge = (place < EDGE_FRAMES) | (place >= frames_per_batch - EDGE_FRAMES)
    if not chain_frames or chain_frames >= frames_per_batch:
        return np.zeros(num_frames, bool)
    piece = place % chain_frames
    at_cut = (piece < EDGE_FRAMES) | (piece >= chain_frames - EDGE_FRAMES)
    return at_cut & ~batch_edge


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', type=int, default=1024, help='frames per animal')
    parser.add_argument('--animals', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=None,
                        help="samples fitted together (default: the config's, 1024)")
    parser.add_argument('--chain-frames', type=int, nargs='+', default=[0, 32, 64, 128, 256],
                        help="the motion prior's longest chain in frames (0: uncut)")
    parser.add_argument('--noise', type=float, default=3.0, help='label noise, px')
    parser.add_argument('--tables', metavar='DIR', default=None,
                        help='also write the table to DIR/chain_cuts.md')
    args = parser.parse_args(argv)
    if any(c != 0 and c < 2 for c in args.chain_frames):
        parser.error('--chain-frames: 0 (uncut) or at least 2')
    if args.frames < 1 or args.animals < 1:
        parser.error('--frames and --animals must be positive')

    import h5py
    import numpy as np
    import torch

    from smilfit.apis.fitting import fit_dataset
    from smilfit.datasets.synthetic_animals import generate_animal_session

    torch.set_num_threads(1)
    A = args.animals
    settings = [0] + [c for c in args.chain_frames if c != 0]     # uncut first: the base
    errors, spent = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = generate_animal_session(tmp / 'video.h5', num_animals=A, frames=args.frames,
                                        pose_correlation=VIDEO_CORRELATION,
                                        noise_px=args.noise, return_keypoints_3d=True)
        for chain in settings:
            cfg = config(tmp / 'video.h5', args.batch_size, 200, motion=True)
            for handler in cfg.registrant.handlers:
                if handler['type'] == 'MotionPriorHandler':
                    handler['chain_frames'] = chain or None
            batch = cfg.data.batch_size
            start = time.perf_counter()
            results = fit_dataset(cfg, tmp / f'chain_{chain}', progress=False)
            spent[chain] = time.perf_counter() - start
            with h5py.File(results) as f:
                fitted = f['keypoints'][:]
            errors[chain] = 100 * np.linalg.norm(fitted - truth['keypoints_3d'],
                                                 axis=-1).mean(-1) / truth['length']
            print(f'chains of {chain or "all"} frames done', flush=True)
    frames_per_batch = batch // A
    rows = []
    for chain in settings:
        # samples are interleaved: sample i is frame i // A of animal i % A
        near = np.repeat(cut_frames(args.frames, frames_per_batch, chain), A)
        at_cut = (f'{errors[chain][near].mean():.3f}', f'{errors[0][near].mean():.3f}') \
            if near.any() else ('', '')
        rows.append([chain or f'uncut ({min(frames_per_batch, args.frames)})',
                     f'{errors[chain].mean():.3f}', *at_cut, int(near.sum()),
                     f'{spent[chain]:.1f}', f'{spent[chain] / spent[0]:.2f}'])
    emit('chain_cuts', ['chain frames', '3D error % of body', 'at the cuts',
                        'same frames, uncut', 'samples at cuts', 'fit s', 'time / uncut'],
         rows, args.tables, command_line(argv, 'chain_cuts.py'))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
