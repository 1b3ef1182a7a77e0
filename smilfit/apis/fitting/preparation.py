"""Make the dataset a fitting config names, when it is missing: ingest ``data.sleap`` or
generate ``data.synthetic`` into ``data.path``, once per run (:func:`prepare_data`,
:func:`prepare_data_once`) and once among processes that start together on one
``data.path``; a dataset prepared from other sources is refused, never overwritten."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from smilfit.datasets import generate_synthetic_dataset
from smilfit.datasets.hdf5_format import (DatasetBusyError, DatasetFormatError, partial_path,
                                          wait_for_writer)
from smilfit.datasets.provenance import (expected_source, read_source, source_changes,
                                         source_notes)

from .config import StaleDataError


def prepare_data(cfg: Mapping[str, Any], progress: bool = True,
                 wait_s: float = 24 * 3600.0) -> None:
    """Make the config's dataset when it is missing or stale: ``data.sleap`` ingests a
    SLEAP session or labels file given directly; ``data.synthetic`` generates synthetic data.

    ``data.synthetic = dict(num_sessions=..., ...)`` (options of
    :func:`smilfit.datasets.generate_synthetic_dataset`) makes ``data.path`` from the
    config's body model, so a demo needs no data files. The source (input files with
    their sizes, times and digests, options, body model) is recorded in the dataset
    (:mod:`smilfit.datasets.provenance`); an existing ``data.path`` is reused only when
    its record matches, also when the input folder moved with the same files (a note on
    standard error says so). Where another process is making the same ``data.path`` (jobs
    of one array started together), this one waits for it, up to ``wait_s`` seconds, and
    then uses its dataset.

    Raises:
        FileNotFoundError: ``data.sleap.input`` does not exist.
        StaleDataError: ``data.path`` exists but was not prepared from what the config
            asks for now (other input files or options, or no record); the message says
            what differs and what to do.
        TimeoutError: another process was still making ``data.path`` after ``wait_s``.
    """
    data_cfg = cfg.get('data') or {}
    expected = expected_source(data_cfg, cfg.get('body_model'))
    if expected is None:
        return
    path = Path(data_cfg['path'])
    while True:
        try:
            return _prepare(cfg, path, expected, progress)
        except DatasetBusyError:
            print(f'{path}: another process is writing it; waiting for it to finish',
                  file=sys.stderr)
            wait_for_writer(partial_path(path), wait_s)


def _prepare(cfg: Mapping[str, Any], path: Path, expected: Mapping[str, Any],
             progress: bool) -> None:
    """:func:`prepare_data`'s one try: reuse ``path``, refuse it, or write it."""
    data_cfg = cfg['data']
    if path.exists():
        stored = read_source(path)
        changes = source_changes(stored, expected)
        if not changes:
            for note in source_notes(stored, expected):
                print(f'{path}: {note}', file=sys.stderr)
            return
        # Never overwrite a dataset silently: it may be one the user means to fit.
        kind = 'data.sleap' if expected['kind'] == 'sleap' else 'data.synthetic'
        raise StaleDataError(
            f'{path} does not hold what {kind} asks for ({"; ".join(changes)}). Delete it to '
            f'prepare it again, point data.path elsewhere, or set {kind}=None to fit the '
            'file as it is')
    path.parent.mkdir(parents=True, exist_ok=True)
    if expected['kind'] == 'sleap':
        # A SLEAP session (folder of camera folders + calibration) or labels file given
        # directly: ingest its keypoints and cameras (no images) into data.path.
        # Imported here: SLEAP ingestion (its readers, matching and process pool) is only
        # loaded by a config with data.sleap, not by every fit.
        from smilfit.datasets.ingest_sleap import ingest_sleap
        sleap = dict(data_cfg['sleap'])
        # The ingestion records its own source (as tools/preprocess_sleap.py's does).
        ingest_sleap(sleap.pop('input'), path, overwrite=True,
                     **dict(dict(images=False, progress=progress), **sleap))
    else:
        # the record is written with the data, so the dataset never appears without it
        generate_synthetic_dataset(path, body_model=cfg.get('body_model'), overwrite=True,
                                   progress=progress, source_record=expected,
                                   **dict(data_cfg['synthetic']))


def prepare_data_once(cfg: Mapping[str, Any], progress: bool = True,
                      timeout_s: float = 3600.0) -> None:
    """:func:`prepare_data` once per run: under a launcher every rank runs this before the
    Runner exists, so only rank 0 writes and the others wait until the dataset at
    ``data.path`` records the expected source."""
    if os.environ.get('RANK', '0') == '0':
        prepare_data(cfg, progress=progress)
        return
    data_cfg = cfg.get('data') or {}
    expected = expected_source(data_cfg, cfg.get('body_model'))
    if expected is None:
        return
    path = Path(data_cfg['path'])
    start = time.monotonic()
    while True:
        try:
            if path.exists() and not source_changes(read_source(path), expected):
                return
        except (OSError, DatasetFormatError):  # rank 0 is writing or replacing the file
            pass
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f'rank {os.environ.get("RANK")}: rank 0 did not write '
                               f'{path} within {timeout_s:.0f} s')
        time.sleep(1.0)


__all__ = ['prepare_data', 'prepare_data_once']
