"""Data-loading speed: smilfit's HDF5 dataset (read + JPEG decode) vs decoding the videos.

Builds HDF5 datasets from the 4-camera mouse session in ../shared (stored at 256 x 256 and at
full resolution) in a temporary folder, then times random batches (default 16 samples x 4
views) three ways:

- ``hdf5``: ``DatasetReader.read`` of the batch + ``decode_image`` of every view;
- ``video seek+read``: ``cv2.VideoCapture`` per camera (opened once, as a dataloader
  worker would), ``CAP_PROP_POS_FRAMES`` seek + ``read`` of the same frames;
- ``video seek+read+resize``: the same plus the resize to 256 x 256 the stored images have.

When ../shared is absent it says so and writes a synthetic 4-camera session (its own videos
and a matching dataset) instead. Results print as a table of samples/s and ms per batch.

Usage::

    python benchmarks/data_loading.py
    python benchmarks/data_loading.py --batch-size 16 --batches 20 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import SHARED  # noqa: E402  (benchmarks/shared_data.py)

from smilfit.datasets.hdf5_format import (DatasetReader, DatasetWriter,  # noqa: E402
                                          decode_image, encode_image)
from smilfit.datasets.ingest_sleap import ingest_sleap  # noqa: E402

SHARED_SESSION = (SHARED / 'data'
                  / 'sleap_anipose_minimal_session' / 'minimal_session')
CAMERAS = ['back', 'mid', 'side', 'top']


def synthetic_session(folder: Path, frames: int = 120, size: Tuple[int, int] = (1280, 1024)
                      ) -> Tuple[Dict[str, Path], Dict[str, Path]]:
    """Write 4 synthetic videos and matching datasets (full-res and 256 px)."""
    rng = np.random.default_rng(0)
    w, h = size
    videos = {}
    base = cv2.resize(rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8), (w, h))
    for c, cam in enumerate(CAMERAS):
        path = folder / f'{cam}.mp4'
        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 30, (w, h))
        for f in range(frames):
            img = np.roll(base, 8 * f + 100 * c, axis=1).copy()
            cv2.circle(img, (w // 2 + 5 * f - 300, h // 2), 60, (255, 255, 255), -1)
            out.write(img)
        out.release()
        videos[cam] = path
    datasets = {}
    for label, target in (('256px', 256), ('full-res', None)):
        path = folder / f'synthetic_{label}.h5'
        sw, sh = (target, target) if target else (w, h)
        caps = {cam: cv2.VideoCapture(str(p)) for cam, p in videos.items()}
        with DatasetWriter(path, keypoint_names=['a'], num_views=4, source='synthetic') as wr:
            s = wr.add_session('synthetic', CAMERAS)
            for f in range(frames):
                images = []
                for cam in CAMERAS:
                    ok, bgr = caps[cam].read()
                    rgb = cv2.cvtColor(cv2.resize(bgr, (sw, sh), interpolation=cv2.INTER_AREA),
                                       cv2.COLOR_BGR2RGB)
                    images.append(encode_image(rgb))
                wr.add_samples(dict(
                    session=[s], frame=[f], valid=np.ones((1, 4), bool),
                    keypoints_2d=np.zeros((1, 4, 1, 2)), confidence=np.ones((1, 4, 1)),
                    K=np.tile(np.eye(3), (1, 4, 1, 1)), R=np.tile(np.eye(3), (1, 4, 1, 1)),
                    t=np.zeros((1, 4, 3)), image_size=np.full((1, 4, 2), (sw, sh)),
                    images=[images]))
            wr.commit()
        for cap in caps.values():
            cap.release()
        datasets[label] = path
    return videos, datasets


def shared_session(folder: Path) -> Tuple[Dict[str, Path], Dict[str, Path]]:
    videos = {cam: next((SHARED_SESSION / cam).glob('*.mp4')) for cam in CAMERAS}
    datasets = {}
    for label, target in (('256px', 256), ('full-res', None)):
        path = folder / f'mouse_{label}.h5'
        t0 = time.perf_counter()
        ingest_sleap(SHARED_SESSION, path, target_size=target, progress=False)
        print(f'  built {path.name} ({path.stat().st_size / 1e6:.1f} MB) in '
              f'{time.perf_counter() - t0:.1f} s')
        datasets[label] = path
    return videos, datasets


def time_batches(fn: Callable[[np.ndarray], object], batches: Sequence[np.ndarray],
                 budget_s: float = 15.0, min_batches: int = 3) -> List[float]:
    """Per-batch wall times: one warm-up batch, then batches until all are done or the
    time budget is spent (at least ``min_batches``)."""
    fn(batches[-1])
    times: List[float] = []
    start = time.perf_counter()
    for b in batches:
        t0 = time.perf_counter()
        fn(b)
        times.append(time.perf_counter() - t0)
        if len(times) >= min_batches and time.perf_counter() - start > budget_s:
            break
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--batches', type=int, default=20)
    p.add_argument('--threads', type=int, default=1,
                   help='OpenCV threads (1: like one dataloader worker)')
    p.add_argument('--budget', type=float, default=15.0,
                   help='seconds per row at most (after 3 batches)')
    args = p.parse_args(argv)
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory(prefix='smilfit_bench_') as tmp:
        folder = Path(tmp)
        if SHARED_SESSION.is_dir():
            print(f'data: ../shared 4-camera mouse session ({SHARED_SESSION.name})')
            videos, datasets = shared_session(folder)
        else:
            print('data: ../shared/data/sleap_anipose_minimal_session not found: using a '
                  'synthetic 4-camera session (1280 x 1024, 120 frames) written to a temp dir')
            videos, datasets = synthetic_session(folder)
        reader = DatasetReader(datasets['256px'])
        n = len(reader)
        frames = reader.read(np.arange(n), keys=['frame'])['frame']
        rng = np.random.default_rng(0)
        batches = [rng.choice(n, size=min(args.batch_size, n), replace=False)
                   for _ in range(args.batches)]
        caps = {cam: cv2.VideoCapture(str(p)) for cam, p in videos.items()}

        def hdf5(r: DatasetReader):
            def run(idx):
                batch = r.read(idx, keys=['images', 'keypoints_2d', 'K', 'R', 't', 'dist',
                                          'visible', 'valid'])
                return [[decode_image(b) for b in row if b] for row in batch['images']]
            return run

        def video(resize: bool):
            def run(idx):
                out = []
                for fr in frames[idx]:
                    row = []
                    for cam in CAMERAS:
                        cap = caps[cam]
                        cap.set(cv2.CAP_PROP_POS_FRAMES, int(fr))
                        ok, img = cap.read()
                        if not ok:
                            raise RuntimeError(f'{videos[cam]}: cannot read frame {fr}')
                        if resize:
                            img = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)
                        row.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
                    out.append(row)
                return out
            return run

        rows = [('hdf5 256x256 (read + JPEG decode)', hdf5(reader)),
                ('hdf5 full-res (read + JPEG decode)', hdf5(DatasetReader(datasets['full-res']))),
                ('video seek+read (full-res)', video(False)),
                ('video seek+read+resize 256', video(True))]
        bs = len(batches[0])
        print(f'\nrandom batches of {bs} samples x {len(CAMERAS)} views (median of up to '
              f'{len(batches)} batches, {args.budget:g} s per row), OpenCV threads '
              f'{args.threads}, one process\n')
        print(f'| {"source":<36} | {"samples/s":>9} | {"ms/batch":>8} | {"images/s":>8} |')
        print(f'|{"-" * 38}|{"-" * 11}|{"-" * 10}|{"-" * 10}|')
        results = {}
        for name, fn in rows:
            ms = 1e3 * statistics.median(time_batches(fn, batches, args.budget))
            results[name] = ms
            print(f'| {name:<36} | {bs / ms * 1e3:9.1f} | {ms:8.1f} | '
                  f'{bs * len(CAMERAS) / ms * 1e3:8.1f} |')
        for cap in caps.values():
            cap.release()
        ratio = results['video seek+read+resize 256'] / results['hdf5 256x256 (read + JPEG decode)']
        print(f'\nhdf5 (256 px) is {ratio:.1f}x faster than seeking the videos and resizing')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
