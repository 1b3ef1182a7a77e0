"""SLEAP ingestion in small rooms, in the order data flows through them:

- ``options``: :class:`IngestOptions`, :class:`IngestSummary`, :class:`DataIngestError`.
- ``records``: the internal model (cameras, views, samples, sessions, prepared arrays).
- ``readers`` and ``tables``: labels, calibrations, videos, instances, 3D points; the CSV
  side inputs (joint lookup, shape betas).
- ``matching``: instances of the views of a frame matched into samples.
- ``discovery``: inputs (session folders, labels files) into validated sessions.
- ``prepare``: a session's samples as stored arrays (keypoint map, crops, cameras).
- ``render`` and ``pipeline``: images in blocks on a worker pool; :func:`ingest_sleap`.

:mod:`smilfit.datasets.ingest_sleap` re-exports the public names.
"""
