"""Ingest SLEAP (and other sleap-io readable) pose data into smilfit's HDF5 dataset format.

Inputs (see ``docs/hdf5_schema.md`` for the output):

- **A sessions directory** in the sleap-anipose layout: a session folder holds one folder per
  camera (each with exactly one video and one ``.slp``), ``calibration.toml`` (anipose) and
  optionally ``points3d.h5`` (anipose ``tracks`` (F, T, K, 3), world units, node order of the
  skeleton). Pass the session folder itself, or a parent folder whose sub-folders are
  sessions (each with its own ``calibration.toml``).
- **A single labels file**: a ``.slp`` with recording sessions (multi-view, cameras from the
  file) and/or plain videos (single-view), or anything ``sleap_io.load_file`` reads (DLC
  csv, COCO json, analysis ``.h5``, ...): single-view, one session per video.

One sample is one instance (animal) at one frame: multi-view instances are matched by the
file's instance groups when it has them, else by track name (one untracked instance per view
is matched to the others). Single-view files give one sample per instance.

Everything is validated before anything is written: every problem raises
:class:`DataIngestError` naming the file, and leaves no output (nor partial) file.

The implementation lives in :mod:`smilfit.datasets.sleap_ingest` (``options``, ``records``,
``readers``, ``tables``, ``matching``, ``discovery``, ``prepare``, ``render``,
``pipeline``); this module is its public face, kept for every existing import. Patch
``BLOCK_SAMPLES`` and ``_run_job`` in :mod:`smilfit.datasets.sleap_ingest.render`, where
they are read.
"""
from .sleap_ingest.discovery import discover
from .sleap_ingest.options import (DEFAULT_FOCAL_FACTOR, IMAGE_EXTS, VIDEO_EXTS, DataIngestError,
                                   IngestOptions, IngestSummary, PathLike)
from .sleap_ingest.pipeline import ingest_sleap
from .sleap_ingest.render import BLOCK_SAMPLES
from .sleap_ingest.tables import load_joint_lookup, load_shape_betas

__all__ = ['IMAGE_EXTS', 'VIDEO_EXTS', 'DEFAULT_FOCAL_FACTOR', 'BLOCK_SAMPLES', 'PathLike',
           'DataIngestError', 'IngestOptions', 'IngestSummary', 'load_joint_lookup',
           'load_shape_betas', 'discover', 'ingest_sleap']
