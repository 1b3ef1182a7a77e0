"""3D scans for registration: I/O, normalisation and synthetic scans.

- :mod:`smilfit.datasets.scan_io`: load meshes / point clouds with trimesh (``.obj``,
  ``.ply``, ``.stl``, ...), resample surfaces, batch scans of different sizes (padded +
  mask), write scans.
- :mod:`.normalization`: centre / scale / PCA-align scans in a batch, with a manual
  rotation override, and the similarity transform to map results back.
- :mod:`.synthetic`: point clouds sampled from posed model meshes with noise (ground
  truth for round-trip tests).

The surface losses live in :mod:`smilfit.losses.surface` (their geometry in
:mod:`smilfit.ops`), the handlers in
:mod:`smilfit.handlers.surface`, shape-space learning in :mod:`smilfit.model_learning`.
"""
from .normalization import SimilarityTransform, normalize_scans, principal_axes
from smilfit.datasets.scan_io import (SCAN_EXTENSIONS, Scan, ScanError, batch_scans, load_scan,
                                      load_scans, sample_mesh_surface, save_scan)
from .synthetic import SyntheticScans, generate_synthetic_scans, sample_surface_points

__all__ = ['Scan', 'ScanError', 'load_scan', 'load_scans', 'batch_scans', 'save_scan',
           'sample_mesh_surface', 'SCAN_EXTENSIONS', 'SimilarityTransform', 'normalize_scans',
           'principal_axes', 'sample_surface_points', 'generate_synthetic_scans',
           'SyntheticScans']
