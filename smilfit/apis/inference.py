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
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from ..cameras.projection import project_points_numpy
from ..datasets.ingest_images import apply_affine
from ..datasets.video_io import FrameReader, probe_video
from ..utils.atomic import atomic_path, save_npz

PathLike = Union[str, os.PathLike]
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
VIDEO_MODES = ('overlay', 'side_by_side')
CHUNK_PREFIX = 'chunk_'
STAMP_NAME = 'options.json'

__all__ = ['load_regressor', 'build_test_pipeline', 'VideoFrames', 'ImageFolderFrames',
           'SyncedVideoFrames', 'HDF5Frames', 'SleapBoxes', 'make_sample', 'predict_samples',
           'run_inference', 'InferenceError', 'CameraSmoother']


class InferenceError(ValueError):
    """Inputs or options that inference cannot use; the message names them."""


# ---------------------------------------------------------------------------- model
def load_regressor(checkpoint: PathLike, config: Optional[Union[PathLike, Any]] = None,
                   device: str = 'cpu', cfg_options: Optional[Mapping[str, Any]] = None):
    """Build a regressor and load its weights.

    Args:
        checkpoint: a checkpoint of ``tools/train.py`` (or None with a config: random
            weights, for pipeline checks).
        config: config file or ``Config``; default: the config in the checkpoint's meta.
        device: torch device.
        cfg_options: config overrides (``merge_from_dict``).

    Returns:
        ``(model, cfg)``: the model in eval mode on ``device`` and its config.
    """
    from mmengine.config import Config
    from mmengine.runner.checkpoint import load_state_dict

    from smilfit.apis.evaluation import load_checkpoint_config
    from smilfit.engine.checkpoint_io import checkpoint_state_dict, load_checkpoint_file
    from smilfit.registry import MODELS
    from smilfit.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    if config is None:
        if checkpoint is None:
            raise InferenceError('give a checkpoint, a config, or both')
        cfg = load_checkpoint_config(checkpoint)
    elif isinstance(config, (str, os.PathLike)):
        if not Path(config).is_file():
            raise FileNotFoundError(f'config {config} does not exist')
        cfg = Config.fromfile(str(config))
    else:
        cfg = config
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    if cfg.get('model') is None:
        raise InferenceError('the config has no model (a regressor) to run')
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        state = checkpoint_state_dict(load_checkpoint_file(checkpoint), checkpoint)
        load_state_dict(model, state, strict=False, logger='silent')
    return model.to(device).eval(), cfg


def build_test_pipeline(cfg) -> List[Any]:
    """The transforms the model was tested with: ``test_dataloader.dataset.pipeline``
    (else ``val_dataloader``'s, else ``test_pipeline``), without dataset-only steps;
    ``[PackInputs]`` when the config has none."""
    from smilfit.registry import TRANSFORMS
    spec = None
    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key)
        if loader is not None and loader.get('dataset', {}).get('pipeline') is not None:
            spec = loader['dataset']['pipeline']
            break
    if spec is None:
        spec = cfg.get('test_pipeline') or [dict(type='PackInputs')]
    out = [TRANSFORMS.build(dict(t)) if isinstance(t, Mapping) else t for t in spec]
    if not any(type(t).__name__ == 'PackInputs' for t in out):
        out.append(TRANSFORMS.build(dict(type='PackInputs')))
    return out


# ---------------------------------------------------------------------------- sources
def _rgb(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an OpenCV BGR / grey frame."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _default_camera(width: int, height: int) -> Dict[str, np.ndarray]:
    """A pinhole stand-in for an uncalibrated view (never used by predicted cameras)."""
    from smilfit.cameras.projection import default_intrinsics
    return dict(K=default_intrinsics(width, height), R=np.eye(3), t=np.zeros(3),
                dist=np.zeros(5))


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
        cam = _default_camera(*self.size)
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
        cam = _default_camera(*img_size)
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
        from smilfit.cameras import CameraGroup
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


class HDF5Frames:
    """Samples of a smilfit HDF5 dataset (stored images and cameras; all views).

    Frames are the stored images; ``source_affine`` maps their pixels to the original
    videos' (the inverse of the stored ``crop``), used for the ``.slp``. The ``.slp``
    refers to one placeholder video per (session, camera).
    """

    calibrated = True

    def __init__(self, path: PathLike, frames: Optional[Sequence[int]] = None) -> None:
        from smilfit.datasets import DatasetReader
        self.reader = DatasetReader(path)
        n = len(self.reader)
        numbers = np.arange(n) if frames is None else np.asarray(list(frames), np.int64)
        if numbers.size and (numbers.min() < 0 or numbers.max() >= n):
            raise InferenceError(f'{path} has {n} samples; rows out of range')
        self.rows = numbers
        cols = self.reader.read(numbers, keys=['session', 'frame', 'image_size'])
        self.sessions = cols['session'].astype(np.int64)
        self.frame_numbers = cols['frame'].astype(np.int64)
        self.image_sizes = cols['image_size']
        self.num_views = self.reader.num_views
        first = self.reader.camera_names[0] if self.reader.camera_names else []
        self.camera_names = [first[c] if c < len(first) else f'cam{c}'
                             for c in range(self.num_views)]
        self.size = tuple(int(s) for s in self.image_sizes[0, 0]) if n else (0, 0)
        self.fps = 25.0
        # One video per (session, view slot) for the .slp: the source video recorded at
        # ingestion, else a placeholder to relink in SLEAP.
        self.video_refs = []
        self._video_index = {}
        paths, shapes = self.reader.video_paths, self.reader.video_shapes
        for s, name in enumerate(self.reader.session_names):
            cams = self.reader.camera_names[s] if s < len(self.reader.camera_names) else []
            for c in range(self.num_views):
                cam = cams[c] if c < len(cams) else f'cam{c}'
                self._video_index[(s, c)] = len(self.video_refs)
                shape = None if shapes is None or shapes[s, c].min() <= 0 else \
                    (*shapes[s, c].tolist(), 3)
                self.video_refs.append(dict(filename=(paths[s][c] if paths else '') or
                                            f'{name}/{cam}', shape=shape))

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, i: int) -> List[np.ndarray]:
        images = self.reader.read_images(int(self.rows[i]))
        if images is None:
            raise InferenceError(f'{self.reader.path} sample {int(self.rows[i])} has no '
                                 'images')
        out = []
        for c, img in enumerate(images):
            if img is None:
                w, h = (int(x) for x in self.image_sizes[i, c])
                img = np.zeros((max(h, 1), max(w, 1), 3), np.uint8)
            out.append(img)
        return out

    def cameras(self, i: int) -> Dict[str, np.ndarray]:
        row = self.reader.read([int(self.rows[i])], keys=['K', 'R', 't', 'dist', 'valid'])
        return dict(K=row['K'][0].astype(np.float64), R=row['R'][0].astype(np.float64),
                    t=row['t'][0].astype(np.float64), dist=row['dist'][0].astype(np.float64),
                    valid=row['valid'][0].astype(bool))

    def source_affine(self, i: int) -> np.ndarray:
        """(C, 3, 3) stored pixels -> original video pixels."""
        crop = self.reader.read([int(self.rows[i])], keys=['crop'])['crop'][0]
        return np.linalg.inv(crop.astype(np.float64))

    def to_source(self, i: int, points: np.ndarray) -> np.ndarray:
        """(C, K, 2) stored pixels of sample ``i``'s views -> their source videos' pixels:
        the inverse crop, then each video's distortion where the stored images were
        undistorted at ingestion."""
        row = self.reader.read([int(self.rows[i])], keys=['K', 'crop'])
        back = np.linalg.inv(row['crop'][0].astype(np.float64))           # (C, 3, 3)
        out = np.einsum('cab,ckb->cka', back[:, :2, :2], points) + back[:, None, :2, 2]
        video_dist = self.reader.video_dist
        if not self.reader.attrs.get('undistorted') or video_dist is None:
            return out
        from smilfit.cameras.projection import (distort_normalized, normalized_to_pixels,
                                                pixels_to_normalized)
        K = torch.as_tensor(back @ row['K'][0])
        xy = pixels_to_normalized(torch.as_tensor(out, dtype=torch.float64), K)
        dist = torch.as_tensor(video_dist[int(self.sessions[i]), :points.shape[0]])
        return normalized_to_pixels(distort_normalized(xy, dist), K).numpy()

    def video_index(self, i: int, view: int) -> int:
        return self._video_index[(int(self.sessions[i]), int(view))]

    def meta(self, i: int) -> Dict[str, Any]:
        s = int(self.sessions[i])
        return dict(frame=int(self.frame_numbers[i]), session=self.reader.session_names[s],
                    index=int(self.rows[i]))

    def close(self) -> None:
        self.reader.close()


class SleapBoxes:
    """Per-frame instance keypoints of one video of a SLEAP file, for ``bbox_crop``.

    Args:
        path: a ``.slp`` (or anything ``sleap_io.load_file`` reads).
        video: index of the video in the file (default 0).

    ``points(frame)`` returns (I, K, 2) source pixels (NaN missing), I = 0 for frames
    without instances.
    """

    def __init__(self, path: PathLike, video: int = 0) -> None:
        import sleap_io as sio
        labels = sio.load_file(str(path))
        if not labels.videos:
            raise InferenceError(f'{path}: no videos in the labels file')
        if not 0 <= video < len(labels.videos):
            raise InferenceError(f'{path}: video {video} out of range ({len(labels.videos)})')
        vid = labels.videos[video]
        self.node_names = list(labels.skeletons[0].node_names) if labels.skeletons else []
        self._points: Dict[int, np.ndarray] = {}
        for lf in labels.find(vid):
            pts = [np.asarray(inst.numpy(), np.float64)[:, :2] for inst in lf.instances]
            if pts:
                self._points[int(lf.frame_idx)] = np.stack(pts)
        self.frames = np.array(sorted(self._points), np.int64)

    def points(self, frame: int) -> np.ndarray:
        pts = self._points.get(int(frame))
        return np.zeros((0, max(len(self.node_names), 1), 2)) if pts is None else pts


# ---------------------------------------------------------------------------- samples
def make_sample(images: Sequence[np.ndarray], cameras: Mapping[str, np.ndarray],
                crop_mode: str = 'default', points: Optional[np.ndarray] = None,
                target_size: Optional[int] = None, bbox_margin: float = 0.15,
                num_keypoints: int = 1) -> Dict[str, Any]:
    """One model sample from the views of a frame (before the test pipeline).

    Args:
        images: C (H, W, 3) uint8 RGB frames.
        cameras: ``K`` (C, 3, 3), ``R``, ``t``, ``dist`` in source pixels; optional
            ``valid`` (C,).
        crop_mode: ``default``, ``centred`` or ``bbox_crop``.
        points: ``bbox_crop``: (C, K, 2) keypoints per view to box (NaN missing).
        target_size: crops are resized to ``target_size`` squared (None: crop size).
        num_keypoints: N of the (all missing) ``keypoints_2d`` placeholders the
            transforms expect (the model's keypoint count).

    Returns:
        A sample dict as the HDF5 datasets give (``images``, cameras, ``image_size``,
        ``crop`` (C, 3, 3) source -> sample pixels, ``view_valid``, ``single_view``).
    """
    from smilfit.datasets.ingest_images import box_affine, crop_box, crop_frame
    C = len(images)
    if crop_mode == 'bbox_crop' and points is None:
        raise InferenceError("crop_mode 'bbox_crop' needs keypoints to box (a SLEAP file: "
                             '--bbox-slp)')
    out_imgs, crops, Ks = [], [], []
    for c, img in enumerate(images):
        h, w = img.shape[:2]
        box = crop_box(crop_mode, (w, h), None if points is None else points[c], bbox_margin)
        size = (box[2], box[3]) if target_size is None else (int(target_size),) * 2
        A = box_affine(box, size)
        out_imgs.append(img if (box == (0, 0, w, h) and size == (w, h))
                        else crop_frame(img, box, size))
        crops.append(A)
        Ks.append(A @ np.asarray(cameras['K'][c], np.float64))
    sizes = np.array([[im.shape[1], im.shape[0]] for im in out_imgs], np.int64)
    valid = np.asarray(cameras.get('valid', np.ones(C, bool)), bool)
    sample = dict(images=np.stack(out_imgs) if all(
        im.shape == out_imgs[0].shape for im in out_imgs) else out_imgs,
        K=np.stack(Ks), R=np.asarray(cameras['R'], np.float64),
        t=np.asarray(cameras['t'], np.float64), dist=np.asarray(cameras['dist'], np.float64),
        image_size=sizes, crop=np.stack(crops), view_valid=valid, single_view=C == 1,
        # No observations at inference; the transforms carry keypoints along.
        keypoints_2d=np.full((C, int(num_keypoints), 2), np.nan, np.float32),
        visible=np.zeros((C, int(num_keypoints)), bool),
        confidence=np.zeros((C, int(num_keypoints)), np.float32))
    return sample


def predict_samples(model, samples: Sequence[Mapping[str, Any]], pipeline: Sequence[Any]
                    ) -> List[Dict[str, Any]]:
    """Run ``model`` (eval mode, no gradients) on prepared samples.

    Returns:
        The model's prediction dicts, each with ``crop`` (C, 3, 3): source pixels ->
        model-input pixels (the sample's crop composed with the pipeline's resize).
    """
    from mmengine.dataset import default_collate
    packed = []
    for s in samples:
        x = dict(s)
        for t in pipeline:
            x = t(x)
        packed.append(x)
    batch = default_collate(packed)
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        preds = model(data['inputs'], data['data_samples'], mode='predict')
    crops = batch['data_samples']['crop']
    crops = crops[:, None] if crops.ndim == 3 else crops
    for p, c in zip(preds, crops):
        p['crop'] = c.double().numpy()
    return preds


# ---------------------------------------------------------------------------- smoothing
class CameraSmoother:
    """Causal exponential smoothing of predicted cameras, per instance slot.

    ``K`` and ``t`` (source pixels) become ``s = alpha s_prev + (1 - alpha) x``; the
    state is kept between chunks (and saved in them, so a resumed run continues it).
    """

    def __init__(self, alpha: float) -> None:
        if not 0.0 <= alpha < 1.0:
            raise InferenceError(f'camera smoothing must be in [0, 1), got {alpha}')
        self.alpha = float(alpha)
        self.state: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, slot: int, K: np.ndarray, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        prev = self.state.get(int(slot))
        if prev is not None and self.alpha > 0:
            K = self.alpha * prev[0] + (1 - self.alpha) * K
            t = self.alpha * prev[1] + (1 - self.alpha) * t
        self.state[int(slot)] = (K, t)
        return K, t

    def to_arrays(self) -> Dict[str, np.ndarray]:
        slots = sorted(self.state)
        if not slots:
            return {}
        return dict(smooth_slots=np.array(slots, np.int64),
                    smooth_K=np.stack([self.state[s][0] for s in slots]),
                    smooth_t=np.stack([self.state[s][1] for s in slots]))

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        if 'smooth_slots' in arrays:
            self.state = {int(s): (arrays['smooth_K'][i], arrays['smooth_t'][i])
                          for i, s in enumerate(arrays['smooth_slots'])}


# ---------------------------------------------------------------------------- outputs
def _chunk_arrays(model, preds: Sequence[Mapping[str, Any]], items: Sequence[Tuple[int, int]],
                  source, smoother: Optional[CameraSmoother], save_features: bool,
                  want_vertices: bool) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
    """Per-item arrays of one chunk (source pixels), and vertices when wanted."""
    n = len(preds)
    params = {k: torch.stack([p['pred_params'][k] for p in preds]) for k in preds[0]['pred_params']}
    body = model.body_model
    with torch.no_grad():
        out = body(**{k: v.to(body.dtype) for k, v in params.items()},
                   return_vertices=want_vertices)
    arrays: Dict[str, np.ndarray] = {
        'frame': np.array([source.meta(i)['frame'] for i, _ in items], np.int64),
        'item': np.array([i for i, _ in items], np.int64),
        'instance': np.array([j for _, j in items], np.int64),
        'joints': out.joints.float().numpy(),
        'keypoints_3d': np.stack([p['pred_keypoints_3d'].double().numpy() for p in preds]),
    }
    for k, v in params.items():
        arrays[f'param_{k}'] = v.float().numpy()
    kp2d, cams = [], {k: [] for k in ('K', 'R', 't', 'dist')}
    for r, ((i, j), p) in enumerate(zip(items, preds)):
        Ainv = np.linalg.inv(p['crop'])                          # model input -> source
        pc = {k: p['pred_cameras'][k].double().numpy() for k in cams}
        K = Ainv @ pc['K']
        t = pc['t']
        if smoother is not None:
            # Smoothed in source pixels (crops move between frames), then re-projected.
            K, t = smoother(j, K, t)
            uv = project_points_numpy(arrays['keypoints_3d'][r][None], K, pc['R'], t,
                                      pc['dist'])[0]
        else:
            uv = apply_affine(Ainv, p['pred_keypoints_2d'].double().numpy())
        kp2d.append(uv)
        for k, v in (('K', K), ('R', pc['R']), ('t', t), ('dist', pc['dist'])):
            cams[k].append(v)
    arrays['keypoints_2d'] = np.stack(kp2d).astype(np.float32)
    for k, v in cams.items():
        arrays[f'camera_{k}'] = np.stack(v)
    arrays['crop'] = np.stack([p['crop'] for p in preds])
    if save_features:
        for k in preds[0].get('features', {}):
            arrays[f'feature_{k}'] = torch.stack(
                [p['features'][k] for p in preds]).float().numpy()
    if smoother is not None:
        arrays.update(smoother.to_arrays())
    verts = out.vertices.float().numpy() if want_vertices and out.vertices is not None \
        else None
    assert len(arrays['frame']) == n
    return arrays, verts


def _mesh_name(session: str, frame: int, instance: int) -> str:
    """``<session>_frame_<n>_inst<i>`` with the characters file names allow."""
    import re
    safe = re.sub(r'[^A-Za-z0-9_.-]+', '_', str(session)).strip('.') or 'session'
    return f'{safe}_frame_{int(frame):06d}_inst{int(instance)}'


def _chunk_paths(chunk_dir: Path) -> List[Path]:
    return sorted(chunk_dir.glob(f'{CHUNK_PREFIX}*.npz'))


def _chunk_len(path: Path) -> int:
    """Items in a chunk file (0 for a chunk of frames without instances)."""
    with np.load(path) as z:
        return int(z['frame'].shape[0])


def _merge_h5(chunk_paths: Sequence[Path], out_path: Path, attrs: Mapping[str, Any]) -> None:
    """Stream the chunk files into one HDF5 file (one chunk in memory at a time)."""
    import h5py
    skip = ('smooth_slots', 'smooth_K', 'smooth_t')
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, 'w') as f:
            for k, v in attrs.items():
                f.attrs[k] = json.dumps(v) if not isinstance(v, (str, int, float)) else v
            for path in chunk_paths:
                with np.load(path) as z:
                    for key in z.files:
                        if key in skip:
                            continue
                        data = z[key]
                        group, _, name = key.partition('_')
                        dest = {'param': f'params/{name}', 'camera': f'cameras/{name}',
                                'feature': f'features/{name}'}.get(group, key) if name else key
                        if dest not in f:
                            f.create_dataset(dest, data=data, maxshape=(None,) + data.shape[1:],
                                             chunks=True)
                        else:
                            ds = f[dest]
                            ds.resize(ds.shape[0] + data.shape[0], axis=0)
                            ds[-data.shape[0]:] = data


def _write_slp(chunk_paths: Sequence[Path], out_path: Path, source, node_names: Sequence[str],
               edges: Sequence[Tuple[int, int]], tracks: Optional[int]) -> Path:
    from smilfit.datasets.slp_export import SlpPredictionWriter
    writer = SlpPredictionWriter(node_names, source.video_refs, edges=edges, tracks=tracks,
                                 provenance=dict(model='smilfit regressor'))
    hdf5 = isinstance(source, HDF5Frames)
    for path in chunk_paths:
        with np.load(path) as z:
            kp, frames, items, inst = z['keypoints_2d'], z['frame'], z['item'], z['instance']
        for r in range(len(frames)):
            views = kp[r].astype(np.float64)                     # (C, K, 2)
            if hdf5:
                views = source.to_source(int(items[r]), views)
            for c in range(kp.shape[1]):
                pts = views[c]
                video = source.video_index(int(items[r]), c) if hdf5 else c
                writer.add(video, int(frames[r]), pts[None],
                           track_ids=[int(inst[r])] if tracks else None)
    return writer.save(out_path)


def _skeleton_edges(model) -> List[Tuple[int, int]]:
    """Edges between data keypoints that are joints whose parent joint is also one."""
    body = model.body_model
    names = list(model.keypoint_names)
    joint_names = list(body.joint_names)
    parents = body.parents.tolist() if hasattr(body.parents, 'tolist') else list(body.parents)
    index = {n: i for i, n in enumerate(names)}
    edges = []
    for j, name in enumerate(joint_names):
        p = parents[j]
        if p is None or p < 0:
            continue
        if name in index and joint_names[p] in index:
            edges.append((index[joint_names[p]], index[name]))
    return edges


def _render_video(chunk_paths: Sequence[Path], out_path: Path, source, model, mode: str,
                  scale: float, mesh: bool, edges, progress: bool) -> Path:
    """Second pass over the source: draw predictions (and meshes) on every frame."""
    from tqdm import tqdm

    from smilfit.visualization import VideoWriter, draw_keypoints, view_grid
    faces = model.body_model.faces.cpu().numpy()
    total = sum(_chunk_len(p) for p in chunk_paths)
    bar = tqdm(total=total, desc='video', disable=not progress)
    with VideoWriter(out_path, fps=source.fps) as video:
        for path in chunk_paths:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            items = arrays['item']
            verts = None
            if mesh:
                params = {k[6:]: torch.as_tensor(v) for k, v in arrays.items()
                          if k.startswith('param_')}
                body = model.body_model
                with torch.no_grad():
                    verts = body(**{k: v.to(body.dtype) for k, v in params.items()},
                                 return_vertices=True).vertices.double().numpy()
            for item in np.unique(items):
                rows = np.flatnonzero(items == item)
                frames = source.read(int(item))
                panels = []
                for c, img in enumerate(frames):
                    S = np.diag([scale, scale, 1.0])
                    h, w = img.shape[:2]
                    H, W = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
                    base = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA) \
                        if (H, W) != (h, w) else img.copy()
                    drawn = base.copy()
                    for r in rows:
                        if verts is not None:
                            from smilfit.visualization import overlay_mesh, render_mesh
                            Ks = S @ arrays['camera_K'][r, c]
                            Ks[:2, 2] += 0.5 * scale - 0.5
                            rend = render_mesh(verts[r], faces, Ks, arrays['camera_R'][r, c],
                                               arrays['camera_t'][r, c],
                                               arrays['camera_dist'][r, c], height=H, width=W)
                            drawn = overlay_mesh(drawn, rend, alpha=0.5)
                        pts = arrays['keypoints_2d'][r, c].astype(np.float64)
                        pts = (pts + 0.5) * scale - 0.5
                        drawn = draw_keypoints(drawn, None, pts, skeleton=edges,
                                               scale_bar=False, radius=max(1, int(3 * scale)))
                    panels.append(np.concatenate([base, drawn], 1) if mode == 'side_by_side'
                                  else drawn)
                frame = panels[0] if len(panels) == 1 else view_grid(
                    panels, labels=list(source.camera_names))
                video.write(frame)
                bar.update(len(rows))
    bar.close()
    return out_path


def run_inference(model, pipeline: Sequence[Any], source, out_dir: PathLike, *,
                  crop_mode: str = 'default', bbox: Optional[SleapBoxes] = None,
                  bbox_margin: float = 0.15, target_size: Optional[int] = None,
                  camera_smoothing: float = 0.0, chunk_size: int = 64, batch_size: int = 16,
                  save_meshes: bool = False, save_features: bool = False,
                  video: Optional[str] = 'overlay', video_scale: float = 1.0,
                  mesh_overlay: bool = False, slp: bool = True, resume: bool = False,
                  overwrite: bool = False, progress: bool = True) -> Dict[str, Any]:
    """Stream ``source`` through ``model`` and write the outputs to ``out_dir``.

    Args:
        model: a regressor from :func:`load_regressor` (eval mode).
        pipeline: its test transforms (:func:`build_test_pipeline`).
        source: :class:`VideoFrames`, :class:`ImageFolderFrames`,
            :class:`SyncedVideoFrames` or :class:`HDF5Frames`; its ``num_views`` must
            equal the model's.
        crop_mode: ``default``, ``centred`` or ``bbox_crop`` (single view; needs
            ``bbox``: one item per SLEAP instance, frames without instances skipped).
        camera_smoothing: ``alpha`` of :class:`CameraSmoother` for predicted cameras
            (0: off; refused for calibrated, fixed cameras).
        chunk_size: frames per chunk file (memory and resume granularity).
        batch_size: items per model call.
        save_meshes: one ``.obj`` per item in ``meshes/``.
        save_features: the model's features in the outputs.
        video: ``'overlay'``, ``'side_by_side'`` or None: ``overlay.mp4``.
        video_scale: output video scale (e.g. 0.5 for half size: faster).
        mesh_overlay: draw the mesh in the video (z-buffer render; slower).
        slp: write ``predictions.slp``.
        resume: keep finished chunks of an earlier run with the same options.
        overwrite: start again in an ``out_dir`` that holds results.

    Returns:
        ``dict(predictions=path, slp=path|None, video=path|None, meshes=[paths],
        num_items=..., num_frames=...)``.
    """
    from tqdm import tqdm
    out_dir = Path(out_dir)
    C = int(getattr(model, 'num_views', 1))
    if source.num_views != C:
        raise InferenceError(f'the model has {C} view slots but the input has '
                             f'{source.num_views} views ({source.camera_names})')
    if video is not None and video not in VIDEO_MODES:
        raise InferenceError(f'video must be one of {VIDEO_MODES} or None, got {video!r}')
    if crop_mode == 'bbox_crop' and (bbox is None or C != 1):
        raise InferenceError("crop_mode 'bbox_crop' needs a SLEAP file with instances "
                             '(--bbox-slp) and a single-view model')
    codec = getattr(model, 'camera_codec', None)
    if camera_smoothing > 0 and codec is not None and not codec.predict and \
            codec.uses_calibration:
        raise InferenceError('camera smoothing smooths predicted cameras; this model uses '
                             'the calibrated cameras as they are')
    chunk_dir = out_dir / 'chunks'
    stamp = json.dumps(dict(crop_mode=crop_mode, bbox=bbox is not None, margin=bbox_margin,
                            target_size=target_size, smoothing=camera_smoothing,
                            chunk_size=chunk_size, frames=[int(x) for x in
                                                           source.frame_numbers[:1]] + [
                                len(source)], features=save_features), sort_keys=True)
    existing = _chunk_paths(chunk_dir) if chunk_dir.exists() else []
    if existing or (out_dir / 'predictions.h5').exists():
        if overwrite:
            for p in existing:
                p.unlink()
            existing = []
        elif not resume:
            raise FileExistsError(f'{out_dir} holds results; pass resume=True (--resume) or '
                                  'overwrite=True (--overwrite)')
        elif (chunk_dir / STAMP_NAME).exists() and \
                (chunk_dir / STAMP_NAME).read_text() != stamp:
            raise FileExistsError(f'{chunk_dir} was written with other options; use '
                                  '--overwrite')
    chunk_dir.mkdir(parents=True, exist_ok=True)
    (chunk_dir / STAMP_NAME).write_text(stamp)
    smoother = CameraSmoother(camera_smoothing) if camera_smoothing > 0 else None
    mesh_dir = out_dir / 'meshes'
    mesh_paths: List[Path] = []
    faces = model.body_model.faces.cpu().numpy()
    n_frames = len(source)
    starts = range(0, n_frames, int(chunk_size))
    bar = tqdm(total=n_frames, desc='inference', disable=not progress)
    try:
        for k, start in enumerate(starts):
            path = chunk_dir / f'{CHUNK_PREFIX}{k:05d}.npz'
            stop = min(start + int(chunk_size), n_frames)
            if resume and path.exists():
                if smoother is not None:
                    with np.load(path) as z:
                        smoother.load({x: z[x] for x in z.files})
                bar.update(stop - start)
                continue
            samples, items = [], []
            preds: List[Dict[str, Any]] = []
            for i in range(start, stop):
                frames = source.read(i)
                cams = source.cameras(i)
                if crop_mode == 'bbox_crop':
                    inst_points = bbox.points(source.meta(i)['frame'])
                    boxes = [p[None] for p in inst_points]
                else:
                    boxes = [None]
                for j, pts in enumerate(boxes):
                    samples.append(make_sample(frames, cams, crop_mode, pts, target_size,
                                               bbox_margin, len(model.keypoint_names)))
                    items.append((i, j))
                    if len(samples) == batch_size:
                        preds += predict_samples(model, samples, pipeline)
                        samples = []
                bar.update(1)
            if samples:
                preds += predict_samples(model, samples, pipeline)
            if not preds:       # no instance in this chunk: an empty marker chunk
                save_npz(path, dict(frame=np.zeros(0, np.int64)))
                continue
            arrays, verts = _chunk_arrays(model, preds, items, source, smoother,
                                          save_features, save_meshes)
            if save_meshes:
                from smilfit.visualization import export_meshes
                names = [_mesh_name(source.meta(int(i))['session'], f, j) for i, f, j in
                         zip(arrays['item'], arrays['frame'], arrays['instance'])]
                mesh_paths += export_meshes(mesh_dir, verts, faces, names=names)
            save_npz(path, arrays)
    finally:
        bar.close()
    chunks = [p for p in _chunk_paths(chunk_dir) if _chunk_len(p)]
    if not chunks:
        raise InferenceError('nothing was predicted (no frames, or no SLEAP instances in '
                             'the selected frames)')
    result: Dict[str, Any] = dict(meshes=mesh_paths or sorted(mesh_dir.glob('*.obj')))
    names = list(model.keypoint_names)
    attrs = dict(format='smilfit-inference', keypoint_names=names,
                 camera_names=list(source.camera_names), joint_names=list(
                     model.body_model.joint_names), crop_mode=crop_mode,
                 camera_smoothing=camera_smoothing, coordinates='source pixels')
    pred_path = out_dir / 'predictions.h5'
    _merge_h5(chunks, pred_path, attrs)
    result['predictions'] = pred_path
    edges = _skeleton_edges(model)
    tracks = None
    if crop_mode == 'bbox_crop':
        tracks = 0
        for p in chunks:
            with np.load(p) as z:
                tracks = max(tracks, int(z['instance'].max()) + 1)
    result['slp'] = _write_slp(chunks, out_dir / 'predictions.slp', source, names, edges,
                               tracks) if slp else None
    result['video'] = _render_video(chunks, out_dir / 'overlay.mp4', source, model, video,
                                    video_scale, mesh_overlay, edges, progress) \
        if video else None
    import h5py
    with h5py.File(pred_path, 'r') as f:
        result['num_items'] = int(f['frame'].shape[0])
        result['num_frames'] = int(len(np.unique(f['item'][()])))
    source.close()
    return result
