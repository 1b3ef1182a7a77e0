"""Datasets: smilfit's HDF5 format, mmengine datasets over it, transforms, synthetic data.

- :mod:`.hdf5_format`: the schema, :class:`DatasetWriter` and :class:`DatasetReader`.
- :class:`MultiViewHDF5Dataset` / :class:`SingleViewHDF5Dataset` (``DATASETS``): lazy,
  session-split datasets yielding multi-view or single-view samples.
- :mod:`.transforms` (``TRANSFORMS``): photometric and camera-consistent geometric
  augmentation, resizing, packing to tensors.
- :mod:`.synthetic`: rendered ground-truth datasets from a body model (drawn by the z-buffer
  rasteriser of :mod:`smilfit.renderers.zbuffer`).
"""
from .clip_dataset import ClipHDF5Dataset, stack_frames
from .hdf5_format import DatasetFormatError, DatasetReader, DatasetWriter
from .multiview_dataset import MultiViewHDF5Dataset, split_sessions_by_ratio
from .singleview_dataset import SingleViewHDF5Dataset
from .masks import MaskFormatError, load_mask_png, masks_from_hdf5, rle_decode, rle_encode
from .slp_export import SlpExportError, SlpPredictionWriter, write_predictions_slp
from .synthetic import generate_synthetic_dataset
from .transforms import (GeometricAugment, PackInputs, PhotometricAugment, ResizeViews,
                         apply_view_affine, flip_sample)

__all__ = [
    'DatasetFormatError', 'DatasetReader', 'DatasetWriter', 'MultiViewHDF5Dataset',
    'SingleViewHDF5Dataset', 'split_sessions_by_ratio', 'generate_synthetic_dataset',
    'GeometricAugment', 'PackInputs', 'PhotometricAugment', 'ResizeViews',
    'apply_view_affine', 'flip_sample', 'SlpExportError', 'SlpPredictionWriter',
    'write_predictions_slp', 'MaskFormatError', 'load_mask_png', 'masks_from_hdf5',
    'rle_decode', 'rle_encode', 'ClipHDF5Dataset', 'stack_frames',
]
