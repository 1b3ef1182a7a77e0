"""Convert SLEAP pose data (multi-camera sessions or single labels files) to smilfit's HDF5
dataset format.

Usage::

    python tools/preprocess_sleap.py INPUT OUTPUT.h5 [options]

INPUT is a session folder (one folder per camera with a video and a ``.slp``, plus the anipose
``calibration.toml`` and optionally ``points3d.h5``), a folder of such session folders, or a
single labels file (``.slp``, DLC ``.csv``, COCO ``.json``, SLEAP analysis ``.h5``, ...).
The output is written to ``OUTPUT.h5.partial`` and renamed into place at the end: a failed or
interrupted run leaves nothing behind (with ``--resume``, the partial file is kept and
continued next time). The format is described in ``docs/hdf5_schema.md``.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import List, Optional

from . import prog_name
from .errors import SmilfitUserError

#: smilfit.datasets.ingest_images.CROP_MODES, restated so that --help imports no torch
#: (tests/tools/test_entry_points.py checks they agree).
CROP_MODES = ('default', 'centred', 'bbox_crop')

PROG = 'preprocess_sleap'
#: Errors caused by the inputs or the command line: one line on stderr, exit status 1.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name('preprocess_sleap'), description=__doc__.split('\n\n')[0].replace('\n', ' '),
        epilog='Output format: docs/hdf5_schema.md. Errors print one line and exit with '
               'status 1, leaving no output file.')
    p.add_argument('input', type=Path, help='session folder, folder of sessions, or a labels '
                                            'file (.slp, DLC .csv/.h5 or project config.yaml, COCO '
                                            '.json, analysis .h5)')
    p.add_argument('output', type=Path, help='dataset file to write (.h5)')
    sel = p.add_argument_group('sample selection')
    sel.add_argument('--max-frames', type=int, default=None,
                     help='at most this many labelled frames per session (after --frame-skip)')
    sel.add_argument('--frame-skip', type=int, default=1,
                     help='keep every n-th labelled frame of each session (default 1)')
    sel.add_argument('--min-views', type=int, default=1,
                     help='drop samples with fewer views that have a visible keypoint (default 1)')
    sel.add_argument('--confidence-threshold', type=float, default=0.0,
                     help='keypoints are visible when finite and confidence >= this (default 0)')
    img = p.add_argument_group('images and cameras')
    img.add_argument('--crop-mode', choices=CROP_MODES, default='default',
                     help='default: whole frame; centred: centre square; bbox_crop: square '
                          'around the instance keypoints with --bbox-margin (needs '
                          '--target-size), padded at image borders (default: default)')
    img.add_argument('--target-size', type=int, default=None,
                     help='stored images are S x S pixels (default: the crop\'s own size)')
    img.add_argument('--bbox-margin', type=float, default=0.15,
                     help='bbox_crop margin on each side, fraction of the keypoint extent '
                          '(default 0.15)')
    img.add_argument('--undistort', action=argparse.BooleanOptionalAction, default=False,
                     help='undistort images and keypoints with the calibration (stored '
                          'distortion is then zero; default: off)')
    img.add_argument('--no-images', dest='images', action='store_false',
                     help='store keypoints and cameras only')
    img.add_argument('--jpeg-quality', type=int, default=90, help='JPEG quality 1-100 (default 90)')
    img.add_argument('--video-dir', dest='video_search_paths', action='append', default=[],
                     type=Path, metavar='DIR',
                     help='folder to look in for videos a labels file references but that '
                          'are not at the stored path (repeatable)')
    data = p.add_argument_group('keypoints, 3D and shape')
    data.add_argument('--joint-lookup', type=Path, default=None,
                      help='CSV model_joint,data_keypoint: keypoints become these model '
                           'joints in this order (empty data name: always missing)')
    data.add_argument('--shape-betas', type=Path, default=None,
                      help='CSV session,beta_0,...: stored as params/betas')
    data.add_argument('--body-model', default=None,
                      help='name of the body model the lookup/betas refer to (stored as an '
                           'attribute)')
    data.add_argument('--no-3d', dest='include_3d', action='store_false',
                      help='do not store keypoints_3d (points3d.h5 / 3D instances)')
    data.add_argument('--points3d', type=Path, default=None,
                      help='anipose points3d.h5 for a single .slp recording session')
    data.add_argument('--units', default='unknown',
                      help='length unit of the calibration and 3D points, e.g. mm (default '
                           'unknown)')
    run = p.add_argument_group('running')
    run.add_argument('--workers', type=int, default=0,
                     help='processes decoding and encoding video (0: this process)')
    run.add_argument('--overwrite', action='store_true', help='replace OUTPUT if it exists')
    run.add_argument('--resume', action='store_true',
                     help='resumable run: keep OUTPUT.partial when interrupted and continue '
                          'it (or add missing samples to an existing OUTPUT), skipping samples '
                          'already written; use the same options as before. Even after '
                          'kill -9 it continues, from the last checkpoint')
    run.add_argument('--checkpoint-every', dest='checkpoint_every_s', type=float, default=60.0,
                     metavar='SECONDS',
                     help='with --resume, copy the partial output to OUTPUT.partial.ok at '
                          'most this often (0: after every block of samples; default 60)')
    run.add_argument('--no-progress', dest='progress', action='store_false',
                     help='no progress bar')
    return p


def _terminate(signum, frame) -> None:
    # SIGTERM unwinds like Ctrl-C, so the writer deletes (or keeps, with --resume) its
    # partial file instead of dying mid-write.
    raise KeyboardInterrupt(f'signal {signum}')


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from smilfit.datasets.hdf5_format import DatasetFormatError  # not at the top: fast --help
    from smilfit.datasets.ingest_sleap import DataIngestError, IngestOptions, ingest_sleap
    expected_errors = (DataIngestError, DatasetFormatError, FileExistsError, OSError,
                       SmilfitUserError)  # SmilfitUserError: e.g. a refused model pickle
    opts = IngestOptions(
        max_frames=args.max_frames, frame_skip=args.frame_skip, min_views=args.min_views,
        crop_mode=args.crop_mode, target_size=args.target_size, bbox_margin=args.bbox_margin,
        undistort=args.undistort, include_3d=args.include_3d,
        confidence_threshold=args.confidence_threshold, workers=args.workers,
        jpeg_quality=args.jpeg_quality, images=args.images, joint_lookup=args.joint_lookup,
        shape_betas=args.shape_betas, body_model=args.body_model,
        video_search_paths=args.video_search_paths, points3d=args.points3d,
        units=args.units, progress=args.progress, checkpoint_every_s=args.checkpoint_every_s)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        summary = ingest_sleap(args.input, args.output, overwrite=args.overwrite,
                               resume=args.resume, options=opts)
    except expected_errors as e:
        print(f'{PROG}: error: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        kept = ' (partial file kept for --resume)' if args.resume else ''
        print(f'{PROG}: interrupted, nothing written{kept}', file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary)
    for note in summary.notes:
        print(f'  note: {note}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
