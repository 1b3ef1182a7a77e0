"""What an ingestion is asked and what it answers: :class:`IngestOptions` (the CLI flags of
``tools/preprocess_sleap.py``), :class:`IngestSummary`, :class:`DataIngestError` and the
file-kind constants shared by the readers and discovery."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from ..ingest_images import BBOX_MARGIN, CROP_MODES

#: Image files an image-sequence video may hold (as the .slp export reopens a folder).
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
#: Video file extensions looked for in camera folders.
VIDEO_EXTS = ('.mp4', '.avi', '.mov', '.mkv', '.mj2', '.webm', '.mpg', '.mpeg')
#: Focal length, in pixels, of an unknown camera: ``DEFAULT_FOCAL_FACTOR * max(W, H)``
#: (about 53 degrees field of view across the longer side). Flagged ``calibrated=False``.
DEFAULT_FOCAL_FACTOR = 1.0

PathLike = Union[str, Path]


class DataIngestError(ValueError):
    """Input data cannot be ingested; the message names the file and the problem."""


@dataclasses.dataclass
class IngestOptions:
    """Options of :func:`ingest_sleap` (the CLI flags of ``tools/preprocess_sleap.py``).

    Attributes:
        max_frames: keep at most this many labelled frames per session (after frame_skip).
        frame_skip: keep every n-th labelled frame of a session.
        min_views: drop samples with fewer valid views (views with a visible keypoint).
        crop_mode: ``default`` (whole frame), ``centred`` (centre square) or ``bbox_crop``
            (square around the instance's keypoints; needs ``target_size``).
        target_size: stored images are ``target_size`` x ``target_size``; None keeps the
            crop's own size (``default``: the original frame).
        bbox_margin: ``bbox_crop`` margin on each side, as a fraction of the box extent.
        undistort: undistort images and keypoints with the calibration (stored dist = 0).
        include_3d: store ``keypoints_3d`` from ``points3d.h5`` / 3D instances.
        confidence_threshold: ``visible = finite & confidence >= threshold``.
        workers: processes decoding/encoding video (0 or 1: in this process).
        jpeg_quality: JPEG quality of stored images.
        images: store images (False: keypoints and cameras only).
        joint_lookup: CSV ``model_joint,data_keypoint``: output keypoints are the model
            joints in this order (empty data name: kept, always missing); other data
            keypoints are dropped.
        shape_betas: CSV ``session,beta_0,...``: stored as ``params/betas`` per sample.
        body_model: name/path of the body model the lookup and betas refer to (stored in
            the ``params`` and root attributes only).
        video_search_paths: folders searched (by file name) for videos a labels file
            references but that do not exist at the stored path.
        points3d: anipose ``points3d.h5`` for a single ``.slp`` recording session.
        units: length unit of calibrations and 3D points (root attr ``units``).
        progress: show a tqdm progress bar.
        checkpoint_every_s: with ``resume``, checkpoint the partial output at most this
            often (0: after every block of samples); a run killed with ``kill -9``
            continues from the last checkpoint (see :class:`DatasetWriter`).
    """
    max_frames: Optional[int] = None
    frame_skip: int = 1
    min_views: int = 1
    crop_mode: str = 'default'
    target_size: Optional[int] = None
    bbox_margin: float = BBOX_MARGIN
    undistort: bool = False
    include_3d: bool = True
    confidence_threshold: float = 0.0
    workers: int = 0
    jpeg_quality: int = 90
    images: bool = True
    joint_lookup: Optional[PathLike] = None
    shape_betas: Optional[PathLike] = None
    body_model: Optional[str] = None
    video_search_paths: Sequence[PathLike] = ()
    points3d: Optional[PathLike] = None
    units: str = 'unknown'
    progress: bool = True
    checkpoint_every_s: float = 60.0

    def validate(self) -> 'IngestOptions':
        if self.crop_mode not in CROP_MODES:
            raise DataIngestError(f'crop_mode must be one of {CROP_MODES}, got '
                                  f'{self.crop_mode!r}')
        if self.crop_mode == 'bbox_crop' and not self.target_size:
            raise DataIngestError('crop_mode bbox_crop needs a target size (--target-size)')
        for name, low in (('frame_skip', 1), ('min_views', 1), ('target_size', 8),
                          ('max_frames', 1)):
            value = getattr(self, name)
            if value is not None and int(value) < low:
                raise DataIngestError(f'{name} must be >= {low}, got {value}')
        if not float(self.checkpoint_every_s) >= 0:
            raise DataIngestError(f'checkpoint_every_s must be >= 0, got '
                                  f'{self.checkpoint_every_s}')
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise DataIngestError(f'jpeg_quality must be in 1..100, got {self.jpeg_quality}')
        return self

    def fingerprint(self) -> str:
        """The options that shape the stored data (a resumed run must use the same)."""
        keys = ('frame_skip', 'min_views', 'crop_mode', 'target_size', 'bbox_margin',
                'undistort', 'include_3d', 'confidence_threshold', 'jpeg_quality', 'images')
        return json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)


@dataclasses.dataclass
class IngestSummary:
    """What :func:`ingest_sleap` wrote."""
    path: Path
    num_samples: int
    num_sessions: int
    num_views: int
    keypoint_names: List[str]
    has_images: bool
    has_keypoints_3d: bool
    skipped_existing: int = 0
    notes: List[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        extra = f', {self.skipped_existing} already present' if self.skipped_existing else ''
        return (f'{self.path}: {self.num_samples} samples{extra}, {self.num_sessions} '
                f'session(s), {self.num_views} view(s), {len(self.keypoint_names)} keypoints, '
                f"images {'yes' if self.has_images else 'no'}, 3D "
                f"{'yes' if self.has_keypoints_3d else 'no'}")


def _fail(path: Any, problem: str) -> DataIngestError:
    return DataIngestError(f'{path}: {problem}')
