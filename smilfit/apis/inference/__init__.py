"""Run a trained regressor on videos, image folders, calibrated rigs or HDF5 datasets.

The engine behind ``tools/infer.py``, usable from notebooks:

- :func:`load_regressor` builds a regressor from a checkpoint (config from the
  checkpoint's metadata or a file) and :func:`build_test_pipeline` the transforms it was
  tested with (resize + packing).
- Frame sources yield frames in *source pixels* (the pixels of the video / image / stored
  HDF5 image): :class:`VideoFrames` (one video), :class:`ImageFolderFrames` (a folder of
  images), :class:`SyncedVideoFrames` (one video per calibrated camera, anipose
  ``calibration.toml``), :class:`HDF5Frames` (a smilfit dataset, any number of views).
- :func:`predict_samples` runs the model on prepared samples; :func:`run_inference`
  streams a whole source in chunks: each chunk's outputs go to ``chunks/chunk_*.npz``
  (atomic) as soon as they are computed, so memory stays flat on long videos and an
  interrupted run continues with ``resume=True``. Then ``predictions.h5`` is assembled
  from the chunks, the ``.slp`` (model keypoints as SLEAP predicted instances) and the
  overlay video are written, each atomically.

Geometry: a view's crop (``crop_mode`` as in preprocessing: ``default`` whole frame,
``centred`` centre square, ``bbox_crop`` a square around an instance's SLEAP keypoints)
is a pixel affine ``A`` (source -> model input, resize included). Predicted 2D keypoints
are mapped back with ``A^-1`` and predicted cameras with ``K_source = A^-1 K_input``, so
everything written is in source pixels.

The package's rooms, in the order a run goes through them: ``common`` (the error type),
``model`` (loading), ``sources`` and ``hdf5_source`` (:class:`FrameSource` and its
implementations, :class:`SleapBoxes`), ``following_boxes`` (boxes that follow the
network where SLEAP gives none), ``session_folder`` (a sleap-anipose session
folder's videos and SLEAP files; the crops a checkpoint was trained on), ``samples``
(crops, model calls), ``smoothing`` (:class:`CameraSmoother`), ``outputs`` (chunk files,
``predictions.h5``, ``.slp``, overlay video) and ``streaming`` (:func:`run_inference`).
Everything is re-exported here.
"""
from .common import InferenceError, PathLike
from .following_boxes import FollowingBoxes
from .hdf5_source import HDF5Frames
from .model import build_test_pipeline, load_regressor
from .outputs import CHUNK_PREFIX
from .samples import make_sample, predict_samples
from .session_folder import (DEFAULT_CROPS, SessionFolder, crop_settings, is_session_folder,
                             read_session_folder, trained_crops, training_data_crops)
from .smoothing import CameraSmoother
from .sources import (IMAGE_SUFFIXES, FrameSource, ImageFolderFrames, RigBoxes, SleapBoxes,
                      SyncedVideoFrames, VideoFrames)
from .streaming import STAMP_NAME, VIDEO_MODES, run_inference

__all__ = ['load_regressor', 'build_test_pipeline', 'FrameSource', 'VideoFrames',
           'ImageFolderFrames', 'SyncedVideoFrames', 'HDF5Frames', 'SleapBoxes', 'RigBoxes',
           'make_sample', 'predict_samples', 'run_inference', 'InferenceError',
           'CameraSmoother', 'PathLike', 'IMAGE_SUFFIXES', 'VIDEO_MODES', 'CHUNK_PREFIX',
           'STAMP_NAME', 'SessionFolder', 'is_session_folder', 'read_session_folder',
           'trained_crops', 'training_data_crops', 'crop_settings', 'DEFAULT_CROPS',
           'FollowingBoxes']
