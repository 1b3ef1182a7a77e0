"""The internal model of an ingestion: cameras (:class:`_Camera`), views (:class:`_View`),
samples before geometry (:class:`_Obs`), sessions (:class:`_Session`) and a session's
stored arrays without images (:class:`_Prepared`). Plain dataclasses of numpy arrays."""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..ingest_images import VideoSpec


@dataclasses.dataclass
class _Camera:
    name: str
    K: np.ndarray            # (3, 3) original-image intrinsics
    dist: np.ndarray         # (5,)
    R: np.ndarray            # (3, 3)
    t: np.ndarray            # (3,)
    size: Optional[Tuple[int, int]]  # (W, H) of the calibration
    calibrated: bool


@dataclasses.dataclass
class _View:
    camera: _Camera
    source: str                              # file the labels came from (for messages)
    spec: Optional[VideoSpec] = None         # None: no images for this view
    frame_size: Optional[Tuple[int, int]] = None  # (W, H) of decoded frames
    pre_affine: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
    num_frames: Optional[int] = None
    video_path: Optional[str] = None          # the source video, stored for exports


@dataclasses.dataclass
class _Obs:
    """One sample before geometry: per view (points (Kd, 2), confidence (Kd,)) or None."""
    frame: int
    instance: int
    track: str
    views: List[Optional[Tuple[np.ndarray, np.ndarray]]]
    kp3d: Optional[np.ndarray] = None       # (Kd, 3) world units


@dataclasses.dataclass
class _Session:
    name: str
    source: str
    views: List[_View]
    node_names: List[str]
    obs: List[_Obs]
    betas: Optional[np.ndarray] = None
    # The SLEAP skeleton's edges and symmetries as node-name pairs (kept for exports).
    edges: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    symmetries: List[Tuple[str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Prepared:
    """Everything but the images, for the kept samples of one session."""
    session: _Session
    arrays: Dict[str, np.ndarray]
    boxes: np.ndarray          # (N, C, 4) int crop boxes in decoded-frame pixels
    out_sizes: np.ndarray      # (N, C, 2) stored (W, H)
    frames: np.ndarray         # (N,)
    session_index: int = -1    # index in the written file
    skipped: int = 0           # samples already in the file (resume)
