"""Frames of media files (mp4, avi, mov...) by index, with OpenCV: the one reader of
ingestion (:mod:`.ingest_sleap`, :mod:`.ingest_images`), inference
(:class:`smilfit.apis.inference.VideoFrames`) and ``tools/infer.py``.

What ``sleap_io.Video`` still decodes (``read_frame_bgr`` in :mod:`.ingest_images`):
embedded images of ``.pkg.slp`` files, image sequences and cropped videos, which only it
understands. Why not ``sleap_io.Video`` for plain media files too (sleap-io 0.9.5, measured
on the shared test videos, one thread): its OpenCV backend seeks for every frame that is
not the next one, and an OpenCV seek decodes again from the previous key frame, so reading
every fourth frame (subsampled ingestion, ``--frames ::4``) is about 20x slower -- 100
frames: 4.1 s against 0.17 s (384x384 H.264), 17.9 s against 0.84 s (1024x1024). It also
returns one channel for videos whose frames look grey (a frame's shape depends on its
content) and chooses its decoder by which modules happen to be imported. This reader reads
forward (``grab``) over short gaps and seeks only backwards or over long gaps.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Tuple, Union

import cv2
import numpy as np

PathLike = Union[str, 'os.PathLike[str]']

#: Seek instead of reading forward when the next wanted frame is further than this.
SEEK_GAP = 48


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a media file's container says about it.

    Attributes:
        num_frames: frame count; None where the container does not know its length.
        size: (W, H) of a decoded frame in pixels.
        fps: frames per second; None where the container does not say.
    """
    num_frames: Optional[int]
    size: Tuple[int, int]
    fps: Optional[float]


def _open(path: PathLike) -> 'cv2.VideoCapture':
    cap = cv2.VideoCapture(os.fspath(path))
    if not cap.isOpened():
        cap.release()
        raise OSError(f'{os.fspath(path)}: OpenCV cannot open the video (corrupt or '
                      'unsupported)')
    return cap


def probe_video(path: PathLike, decode_first: bool = True) -> VideoInfo:
    """Frame count, frame size and frame rate of a video.

    Args:
        path: media file.
        decode_first: also decode the first frame, so that a video OpenCV opens but
            cannot decode fails here rather than mid-way through the work.

    Raises:
        OSError: naming ``path``: OpenCV cannot open it, or cannot decode its first frame.
    """
    cap = _open(path)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        if decode_first:
            ok, frame = cap.read()
            if not ok or frame is None or min(size) <= 0:
                raise OSError(f'{os.fspath(path)}: OpenCV cannot decode the first frame '
                              '(corrupt video?)')
    finally:
        cap.release()
    return VideoInfo(num_frames=n if n > 0 else None, size=size,
                     fps=fps if fps > 0 else None)


class FrameReader:
    """Frames of one video by index, as OpenCV decodes them: (H, W, 3) uint8 BGR.

    Sequential-friendly: it reads forward over gaps up to ``seek_gap`` frames (exact, and
    faster than a seek, which decodes from the previous key frame) and seeks only backwards
    or further ahead; asking for the same frame twice decodes it once. The video is opened
    on the first read, so a reader can be made in one process and read in another.

    Args:
        path: media file.
        seek_gap: longest forward gap read through rather than seeked over.
    """

    def __init__(self, path: PathLike, seek_gap: int = SEEK_GAP) -> None:
        self.path = os.fspath(path)
        self.seek_gap = int(seek_gap)
        self._cap: Optional['cv2.VideoCapture'] = None
        self._pos = 0
        self._last: Optional[Tuple[int, np.ndarray]] = None

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as (H, W, 3) uint8 BGR.

        Raises:
            OSError: naming the file: it cannot be opened, or frame ``index`` cannot be
                decoded (a truncated video, or an index past its end).
        """
        index = int(index)
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        if self._cap is None:
            self._cap, self._pos = _open(self.path), 0
        if index < self._pos or index - self._pos > self.seek_gap:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            self._pos = index
        while self._pos < index:
            if not self._cap.grab():
                raise OSError(f'{self.path}: cannot decode frame {self._pos} (truncated '
                              'video?)')
            self._pos += 1
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise OSError(f'{self.path}: cannot decode frame {index} (truncated video?)')
        if frame.ndim == 2 or frame.shape[2] == 1:  # some backends decode grey as 1 channel
            frame = cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
        self._pos = index + 1
        self._last = (index, frame)
        return frame

    def read_rgb(self, index: int) -> np.ndarray:
        """Frame ``index`` as (H, W, 3) uint8 RGB (a new array)."""
        return cv2.cvtColor(self.read(index), cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        """Release the decoder (a later read opens the video again)."""
        if self._cap is not None:
            self._cap.release()
        self._cap, self._pos, self._last = None, 0, None

    def __enter__(self) -> 'FrameReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()
