"""Frame sources: the :class:`FrameSource` protocol :func:`run_inference` reads, and the
sources of plain inputs: :class:`VideoFrames` (one video), :class:`ImageFolderFrames` (a
folder of images), :class:`SyncedVideoFrames` (one video per calibrated camera), plus
:class:`SleapBoxes` (instance keypoints to box for ``bbox_crop``). Frames are (H, W, 3)
uint8 RGB in source pixels. :class:`~.hdf5_source.HDF5Frames` is the HDF5 dataset source."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from ...datasets.video_io import FrameReader, probe_video
from .common import InferenceError, PathLike
from smilfit.cameras import CameraGroup
from smilfit.cameras.projection import uncalibrated_camera

#: Files :class:`ImageFolderFrames` reads.
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


@runtime_checkable
class FrameSource(Protocol):
    """What :func:`~smilfit.apis.inference.run_inference` reads: ``len(source)`` items, each
    the frames of ``num_views`` views at one frame number, in source pixels.

    Attributes:
        num_views: C, the views of every item (the model's view slots).
        camera_names: C names (of the ``.slp`` videos and the overlay video's panels).
        frame_numbers: (N,) int64 frame number of each item in its video or session.
        fps: frames per second of the overlay video.
        video_refs: the ``.slp``'s videos: paths, or dicts ``filename``/``shape``.
    """

    num_views: int
    camera_names: List[str]
    frame_numbers: np.ndarray
    fps: float
    video_refs: List[Any]

    def __len__(self) -> int:
        """N, the number of items."""
        ...

    def read(self, i: int) -> List[np.ndarray]:
        """The C views of item ``i``: (H, W, 3) uint8 RGB frames, source pixels."""
        ...

    def cameras(self, i: int) -> Dict[str, np.ndarray]:
        """Item ``i``'s cameras in source pixels: ``K`` (C, 3, 3), ``R`` (C, 3, 3), ``t``
        (C, 3), ``dist`` (C, 5) float64; optional ``valid`` (C,) bool."""
        ...

    def meta(self, i: int) -> Dict[str, Any]:
        """Item ``i``'s ``frame`` (int) and ``session`` (str)."""
        ...

    def close(self) -> None:
        """Release the readers."""
        ...


def _rgb(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an OpenCV BGR / grey frame."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class VideoFrames:
    """One video, read with :class:`smilfit.datasets.video_io.FrameReader` (forward over
    short gaps, seeks otherwise).

    Attributes: ``num_views`` 1, ``camera_names``, ``frame_numbers`` (frame numbers in the
    video), ``size`` (W, H), ``fps``, ``video_refs`` (for the ``.slp``).
    """

    calibrated = False

    def __init__(self, path: PathLike, frames: Optional[Sequence[int]] = None,
                 name: Optional[str] = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f'video {self.path} does not exist')
        try:
            info = probe_video(self.path, decode_first=False)
        except OSError as e:
            raise InferenceError(str(e)) from e
        if info.num_frames is None:
            raise InferenceError(f'{self.path}: the container does not say how many frames '
                                 'it has')
        n = info.num_frames
        self.size = info.size
        self.fps = info.fps or 25.0
        self.num_frames_in_video = n
        numbers = np.arange(n) if frames is None else np.asarray(list(frames), np.int64)
        bad = numbers[(numbers < 0) | (numbers >= n)]
        if bad.size:
            raise InferenceError(f'{self.path} has {n} frames; frames {bad[:5].tolist()} do '
                                 'not exist')
        self.frame_numbers = numbers
        self.num_views = 1
        self.camera_names = [name or self.path.stem]
        self.video_refs = [str(self.path)]
        self._reader = FrameReader(self.path)

    def __len__(self) -> int:
        return len(self.frame_numbers)

    def _read(self, number: int) -> np.ndarray:
        return self._reader.read_rgb(number)

    def read(self, i: int) -> List[np.ndarray]:
        """The views of item ``i``: a list of one (H, W, 3) uint8 RGB frame."""
        return [self._read(int(self.frame_numbers[i]))]

    def cameras(self, i: int) -> Dict[str, np.ndarray]:
        cam = uncalibrated_camera(*self.size)
        return {k: v[None] for k, v in cam.items()}

    def meta(self, i: int) -> Dict[str, Any]:
        return dict(frame=int(self.frame_numbers[i]), session=self.camera_names[0])

    def close(self) -> None:
        self._reader.close()


class ImageFolderFrames:
    """A folder of images (sorted by name); frame numbers are positions in that order."""

    calibrated = False

    def __init__(self, folder: PathLike, frames: Optional[Sequence[int]] = None) -> None:
        self.folder = Path(folder)
        files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
            if self.folder.is_dir() else []
        if not files:
            raise InferenceError(f'{self.folder} is not a folder of images '
                                 f'({", ".join(IMAGE_SUFFIXES)})')
        self.files = files
        numbers = np.arange(len(files)) if frames is None else np.asarray(list(frames))
        if numbers.size and (numbers.min() < 0 or numbers.max() >= len(files)):
            raise InferenceError(f'{self.folder} has {len(files)} images; frames out of range')
        self.frame_numbers = numbers
        first = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
        if first is None:
            raise InferenceError(f'{files[0]}: not a readable image')
        self.size = (first.shape[1], first.shape[0])
        self.fps = 25.0
        self.num_views = 1
        self.camera_names = [self.folder.name]
        self.video_refs = [str(self.folder)]

    def __len__(self) -> int:
        return len(self.frame_numbers)

    def read(self, i: int) -> List[np.ndarray]:
        path = self.files[int(self.frame_numbers[i])]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f'{path}: not a readable image')
        return [_rgb(img)]

    def cameras(self, i: int) -> Dict[str, np.ndarray]:
        img_size = self.size
        cam = uncalibrated_camera(*img_size)
        return {k: v[None] for k, v in cam.items()}

    def meta(self, i: int) -> Dict[str, Any]:
        return dict(frame=int(self.frame_numbers[i]), session=self.camera_names[0])

    def close(self) -> None:
        pass


class SyncedVideoFrames:
    """Synchronised videos of a calibrated rig: one video per camera.

    Args:
        videos: C video paths.
        calibration: anipose ``calibration.toml`` (any camera order).
        camera_names: the calibration's camera of each video; default: the camera whose
            name appears in the video's file name (or folder) — an error when that is
            ambiguous.
        frames: frame numbers (default: all frames of the shortest video).
    """

    calibrated = True

    def __init__(self, videos: Sequence[PathLike], calibration: PathLike,
                 camera_names: Optional[Sequence[str]] = None,
                 frames: Optional[Sequence[int]] = None) -> None:
        if not videos:
            raise InferenceError('no videos given')
        group = CameraGroup.from_anipose_toml(calibration)
        if camera_names is None:
            camera_names = []
            for v in videos:
                hits = [n for n in group.names if n in Path(v).stem or n == Path(v).parent.name]
                if len(hits) != 1:
                    raise InferenceError(f'{v}: cannot tell which camera of {calibration} '
                                         f'({group.names}) it is (matches {hits}); pass '
                                         'camera names')
                camera_names.append(hits[0])
        if len(camera_names) != len(videos):
            raise InferenceError(f'{len(videos)} videos but {len(camera_names)} camera names')
        self.group = group.subset(list(camera_names))
        self.views = [VideoFrames(v, name=n) for v, n in zip(videos, camera_names)]
        n = min(v.num_frames_in_video for v in self.views)
        numbers = np.arange(n) if frames is None else np.asarray(list(frames), np.int64)
        if numbers.size and (numbers.min() < 0 or numbers.max() >= n):
            raise InferenceError(f'the shortest video has {n} frames; frames out of range')
        self.frame_numbers = numbers
        for v in self.views:
            v.frame_numbers = numbers
        self.num_views = len(self.views)
        self.camera_names = list(camera_names)
        self.size = self.views[0].size
        self.fps = self.views[0].fps
        self.video_refs = [str(v.path) for v in self.views]
        g = self.group
        self._cams = dict(K=g.K.double().numpy(), R=g.R.double().numpy(),
                          t=g.t.double().numpy(), dist=g.dist.double().numpy())

    def __len__(self) -> int:
        return len(self.frame_numbers)

    def read(self, i: int) -> List[np.ndarray]:
        return [v.read(i)[0] for v in self.views]

    def cameras(self, i: int) -> Dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._cams.items()}

    def meta(self, i: int) -> Dict[str, Any]:
        return dict(frame=int(self.frame_numbers[i]), session='rig')

    def close(self) -> None:
        for v in self.views:
            v.close()


class SleapBoxes:
    """Per-frame instance keypoints of one video of a SLEAP file, for ``bbox_crop``.

    Args:
        path: a ``.slp`` (or anything ``sleap_io.load_file`` reads).
        video: index of the video in the file (default 0).

    ``points(frame)`` returns (I, K, 2) source pixels (NaN missing), I = 0 for frames
    without instances; ``tracks(frame)`` the I instances' track names ('' untracked).
    """

    num_views = 1

    def __init__(self, path: PathLike, video: int = 0, labels: Any = None) -> None:
        import sleap_io as sio
        labels = sio.load_file(str(path)) if labels is None else labels
        if not labels.videos:
            raise InferenceError(f'{path}: no videos in the labels file')
        if not 0 <= video < len(labels.videos):
            raise InferenceError(f'{path}: video {video} out of range ({len(labels.videos)})')
        vid = labels.videos[video]
        self.video_name = Path(str(getattr(vid, 'filename', ''))).name
        self.node_names = list(labels.skeletons[0].node_names) if labels.skeletons else []
        self._points: Dict[int, np.ndarray] = {}
        self._tracks: Dict[int, List[str]] = {}
        for lf in labels.find(vid):
            pts = [np.asarray(inst.numpy(), np.float64)[:, :2] for inst in lf.instances]
            if pts:
                self._points[int(lf.frame_idx)] = np.stack(pts)
                self._tracks[int(lf.frame_idx)] = [
                    inst.track.name if inst.track is not None else ''
                    for inst in lf.instances]
        self.frames = np.array(sorted(self._points), np.int64)

    def tracks(self, frame: int) -> List[str]:
        return list(self._tracks.get(int(frame), []))

    def points(self, frame: int) -> np.ndarray:
        pts = self._points.get(int(frame))
        return np.zeros((0, max(len(self.node_names), 1), 2)) if pts is None else pts


class RigBoxes:
    """Per-frame keypoints of each animal in every camera of a rig, for ``bbox_crop`` on
    synchronised videos: SLEAP predictions (or labels) of each camera's video.

    Args:
        paths: one SLEAP file per camera, in the videos' order; or one file holding a
            video per camera, matched to ``video_names`` by file name.
        video_names: the rig's video file names (matching a one-file input).

    Instances are matched across cameras by track name; files without tracks may hold
    at most one instance per frame and camera (one animal). ``points(frame)`` returns
    (I, C, K, 2) source pixels, NaN where a camera does not see that animal.

    Raises:
        InferenceError: files and cameras do not match, or untracked instances cannot
            be told apart.
    """

    def __init__(self, paths: Sequence[PathLike], video_names: Sequence[str]) -> None:
        C = len(video_names)
        if len(paths) == C:
            self.views = [SleapBoxes(p) for p in paths]
        elif len(paths) == 1:
            import sleap_io as sio
            labels = sio.load_file(str(paths[0]))
            names = [Path(str(getattr(v, 'filename', ''))).name for v in labels.videos]
            index = []
            for name in video_names:
                hits = [i for i, n in enumerate(names) if n == Path(name).name]
                if len(hits) != 1:
                    raise InferenceError(
                        f'{paths[0]}: no single video named {Path(name).name} (it has '
                        f'{names}); pass one SLEAP file per camera instead')
                index.append(hits[0])
            self.views = [SleapBoxes(paths[0], i, labels=labels) for i in index]
        else:
            raise InferenceError(f'{len(paths)} SLEAP files for {C} cameras: pass one per '
                                 'camera (in the videos\' order) or one holding every video')
        self.num_views = C
        self.num_keypoints = max(max(len(v.node_names) for v in self.views), 1)

    def points(self, frame: int) -> np.ndarray:
        C, K = self.num_views, self.num_keypoints
        per_view = [(v.points(frame), v.tracks(frame)) for v in self.views]
        names = sorted({t for _, tracks in per_view for t in tracks})
        if names == [''] or not names:
            for c, (pts, _) in enumerate(per_view):
                if len(pts) > 1:
                    raise InferenceError(
                        f'frame {frame}: camera {c} has {len(pts)} untracked instances; '
                        'track them (SLEAP tracking) so cameras can be matched')
            names = [''] if names else []
        out = np.full((len(names), C, K, 2), np.nan)
        for c, (pts, tracks) in enumerate(per_view):
            for i, track in enumerate(tracks):
                if track in names:
                    out[names.index(track), c, :pts.shape[1]] = pts[i]
        return out
