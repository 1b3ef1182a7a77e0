"""The driver: :func:`ingest_sleap` validates options, reads the side tables, discovers the
sessions, prepares their arrays and writes them (with images from :mod:`.render`) through
an atomic, resumable :class:`~smilfit.datasets.hdf5_format.DatasetWriter`."""
from __future__ import annotations

import contextlib
import dataclasses
import json
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..hdf5_format import DatasetFormatError, DatasetWriter
from ..ingest_images import close_readers
from ..provenance import SOURCE_ATTR, sleap_source
from .discovery import discover
from .options import DataIngestError, IngestOptions, IngestSummary, PathLike, _fail
from .prepare import _keypoint_map, _prepare, _stored_pairs
from .records import _Session, _View
from .render import _pool, _render
from .tables import load_joint_lookup, load_shape_betas


def _check_output(output: Path, overwrite: bool, resume: bool) -> None:
    if output.exists() and not (overwrite or resume):
        raise _fail(output, 'already exists (use --overwrite to replace it or --resume to '
                            'add missing samples)')
    if output.is_dir():
        raise _fail(output, 'is a directory; give the dataset file path (e.g. out.h5)')


def ingest_sleap(input_path: PathLike, output_path: PathLike, *, overwrite: bool = False,
                 resume: bool = False, options: Optional[IngestOptions] = None,
                 **option_kwargs: Any) -> IngestSummary:
    """Convert SLEAP data into a smilfit HDF5 dataset (see :mod:`smilfit.datasets.ingest_sleap`).

    Args:
        input_path: a session folder, a folder of session folders, or a labels file.
        output_path: the dataset file to write (atomically, via ``<output>.partial``).
        overwrite: replace an existing output.
        resume: continue an interrupted ``--resume`` run (``<output>.partial``) or add the
            samples missing from an existing output; already written samples (same session,
            frame and instance) are skipped without decoding their video frames. The shaping
            options (crop, size, thresholds, ...) must be the same as before.
        options: :class:`IngestOptions`; or give its fields as keyword arguments.

    Returns:
        An :class:`IngestSummary`.

    Raises:
        DataIngestError: any problem with the inputs; nothing is written then.
    """
    opts = dataclasses.replace(options or IngestOptions(), **option_kwargs).validate()
    output = Path(output_path)
    _check_output(output, overwrite, resume)
    lookup = load_joint_lookup(opts.joint_lookup) if opts.joint_lookup else None
    betas = load_shape_betas(opts.shape_betas) if opts.shape_betas else None
    # Taken before anything is written: the record says what the dataset was made from.
    source = sleap_source(input_path, dataclasses.asdict(opts), output, digests=True)
    try:
        sessions = discover(input_path, opts)
        return _ingest(sessions, input_path, output, overwrite, resume, opts, lookup, betas,
                       source)
    except DatasetFormatError as e:  # e.g. resuming a file written with other options
        raise DataIngestError(str(e)) from e
    finally:
        close_readers()


def _ingest(sessions: List[_Session], input_path: PathLike, output: Path, overwrite: bool,
            resume: bool, opts: IngestOptions, lookup: Optional[List[Tuple[str, str]]],
            betas: Optional[Dict[str, np.ndarray]], source: Dict[str, Any]
            ) -> IngestSummary:
    names = [s.name for s in sessions]
    if len(set(names)) != len(names):
        raise _fail(input_path, f'session names are not unique: {names}')
    node_names = sessions[0].node_names
    for s in sessions[1:]:
        if s.node_names != node_names:
            raise _fail(s.source, f'skeleton nodes {s.node_names} differ from {node_names} '
                                  f'of {sessions[0].source}')
    out_names, kp_index = _keypoint_map(node_names, opts, lookup)
    if betas is not None:
        missing = [s.name for s in sessions if s.name not in betas]
        if missing:
            raise _fail(opts.shape_betas, f'no betas for session(s) {missing} (sessions: '
                                          f'{names})')
        for s in sessions:
            s.betas = betas[s.name]
    num_views = max(len(s.views) for s in sessions)
    prepared = [p for p in (_prepare(s, opts, num_views, kp_index) for s in sessions)
                if p is not None]
    if not prepared:
        raise _fail(input_path, 'no sample has a visible keypoint in at least '
                                f'{opts.min_views} view(s): all selected keypoints are NaN '
                                f'(or below confidence {opts.confidence_threshold})'
                                + (f' after the joint lookup {opts.joint_lookup}'
                                   if lookup else ''))
    has_images = opts.images and any(v.spec is not None for p in prepared
                                     for v in p.session.views)
    has_3d = any('keypoints_3d' in p.arrays for p in prepared)
    notes = [f'{p.session.name}/{v.camera.name}: video not found, no images'
             for p in prepared for v in p.session.views if v.spec is None and opts.images]
    attrs = {'ingest_options': opts.fingerprint(), 'crop_mode': opts.crop_mode,
             'target_size': int(opts.target_size or 0), 'undistorted': bool(opts.undistort),
             'confidence_threshold': float(opts.confidence_threshold)}
    if opts.body_model:
        attrs['body_model'] = str(opts.body_model)
    params_attrs = {'body_model': str(opts.body_model or 'unknown')}
    total = sum(len(p.frames) for p in prepared)
    with DatasetWriter(output, keypoint_names=out_names, num_views=num_views,
                       overwrite=overwrite, resume=resume, source=f'sleap: {input_path}',
                       units=opts.units, attrs=attrs, params_attrs=params_attrs,
                       created_by='smilfit.datasets.ingest_sleap',
                       checkpoint_every_s=opts.checkpoint_every_s) as writer, \
            _progress(total, opts.progress) as bar, _pool(opts.workers) as pool:
        try:
            for p in prepared:
                cams = [v.camera.name for v in p.session.views]
                p.session_index = writer.add_session(
                    p.session.name, cams,
                    video_paths=[v.video_path or '' for v in p.session.views],
                    video_shapes=[_video_shape(v) for v in p.session.views],
                    video_dist=[v.camera.dist for v in p.session.views])
            writer.set_skeleton(*_stored_pairs(sessions[0], node_names, kp_index))
            for p, block, blobs in _render(prepared, writer, opts, pool):
                arrays = {k: v[block] for k, v in p.arrays.items() if k != 'betas'}
                arrays['session'] = np.full(len(block), p.session_index, np.int32)
                if blobs is not None:
                    arrays['images'] = blobs
                if 'betas' in p.arrays:
                    arrays['params'] = {'betas': p.arrays['betas'][block]}
                writer.add_samples(arrays)
                bar.update(len(block))
            n_written = writer.num_samples
            skipped = sum(p.skipped for p in prepared)
        except (OSError, DatasetFormatError) as e:
            raise DataIngestError(str(e)) from e
        except BrokenProcessPool as e:
            raise DataIngestError(f'a video worker process died ({e}); retry with '
                                  '--workers 0') from e
        # The source record last: a file cut short has none and is never taken as current.
        writer.set_attr(SOURCE_ATTR, json.dumps(source, sort_keys=True))
        writer.commit()
    return IngestSummary(output, n_written, len(prepared), num_views, out_names, has_images,
                         has_3d, skipped, notes)


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm
    bar = tqdm(total=total, unit='sample', desc='preprocess', disable=not enabled,
               dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def _video_shape(view: _View) -> Tuple[int, int, int]:
    """``(frames, height, width)`` of a view's source video, 0 where unknown."""
    W, H = view.frame_size or view.camera.size or (0, 0)
    return int(view.num_frames or 0), int(H), int(W)
