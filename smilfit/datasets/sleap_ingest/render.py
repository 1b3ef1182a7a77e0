"""The stored images: samples in blocks of :data:`BLOCK_SAMPLES`, one decode/crop/encode
job per view and block (:func:`_run_job`), run here or on a ``spawn`` process pool.

Tests patch :data:`BLOCK_SAMPLES` and :func:`_run_job` here: :func:`_render` looks both up
in this module at call time."""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from ..hdf5_format import DatasetWriter
from ..ingest_images import VideoSpec, render_view_block, worker_init
from .options import IngestOptions
from .records import _Prepared

#: Samples per written block (and per decoding job of one view).
BLOCK_SAMPLES = 64


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[Optional[Any]]:
    """A ``spawn`` process pool for video jobs (None for ``workers <= 1``).

    Not ``fork``: a child forked after this process has used OpenCV's (or FFmpeg's) thread
    pools can deadlock. Spawned workers import smilfit once (a few seconds) and run OpenCV
    single-threaded; a worker that dies raises ``BrokenProcessPool`` instead of hanging.
    """
    if workers is None or workers <= 1:
        yield None
        return
    pool = concurrent.futures.ProcessPoolExecutor(
        int(workers), mp_context=multiprocessing.get_context('spawn'), initializer=worker_init)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _render(prepared: List[_Prepared], writer: DatasetWriter, opts: IngestOptions,
            pool: Optional[Any]) -> Iterator[Tuple[_Prepared, np.ndarray,
                                                   Optional[List[List[bytes]]]]]:
    """Yield (session, sample indices of a block, images per sample and view) in order.

    Blocks of up to BLOCK_SAMPLES samples; each view of a block is one job. With a pool,
    jobs run in parallel and come back in submission order (deterministic output)."""
    plan: List[Tuple[_Prepared, np.ndarray]] = []
    for p in prepared:
        todo = np.array([i for i in range(len(p.frames))
                         if not writer.contains(p.session.name, int(p.frames[i]),
                                                int(p.arrays['instance'][i]))], np.int64)
        p.skipped = len(p.frames) - len(todo)
        for s in range(0, len(todo), BLOCK_SAMPLES):
            plan.append((p, todo[s:s + BLOCK_SAMPLES]))
    c = writer.num_views

    def job(p: _Prepared, block: np.ndarray, j: int):
        view = p.session.views[j]
        spec = view.spec
        if opts.undistort and view.camera.calibrated and np.any(view.camera.dist != 0):
            spec = dataclasses.replace(spec, K=tuple(map(tuple, view.camera.K)),
                                       dist=tuple(view.camera.dist))
        items = [(int(p.frames[i]), tuple(int(x) for x in p.boxes[i, j]),
                  tuple(int(x) for x in p.out_sizes[i, j])) for i in block]
        return spec, items, opts.jpeg_quality

    def jobs_for_pool():
        for p, block in plan:
            for j, view in enumerate(p.session.views):
                if view.spec is not None and view.spec.kind == 'cv2':
                    yield job(p, block, j)

    results = None
    if pool is not None and opts.images:
        results = pool.map(_run_job, jobs_for_pool())
    for p, block in plan:
        if not opts.images or all(v.spec is None for v in p.session.views):
            yield p, block, None
            continue
        blobs = [[b''] * c for _ in block]
        for j, view in enumerate(p.session.views):
            if view.spec is None:
                continue
            if results is not None and view.spec.kind == 'cv2':
                encoded = next(results)
            else:
                encoded = _run_job(job(p, block, j))
            for r, data in enumerate(encoded):
                blobs[r][j] = data
        yield p, block, blobs


def _run_job(args: Tuple[VideoSpec, list, int]) -> List[bytes]:
    """One job, ``(spec, [(frame, box (x0, y0, w, h), stored (W, H)), ...], quality)``:
    one JPEG per item (:func:`smilfit.datasets.ingest_images.render_view_block`)."""
    spec, items, quality = args
    return render_view_block(spec, items, quality)
