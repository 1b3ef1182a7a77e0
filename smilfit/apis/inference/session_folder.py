"""Inputs from a recording's own layout and from the network's checkpoint.

A sleap-anipose *session folder* (what ``tools/preprocess_sleap.py`` and ``tools/fit.py``
read) holds ``calibration.toml`` and one folder per camera, named as in the calibration,
with the camera's video and SLEAP's 2D labels or predictions (``.slp``).
:func:`read_session_folder` turns it into the rig's videos, calibration and box files, so
``tools/infer.py CHECKPOINT SESSION_DIR`` runs on every frame of the videos.

A network learns on crops made one way (``tools/preprocess_sleap.py --crop-mode
bbox_crop --target-size 128``, say) and sees nothing else in training, so it must be run
on crops made the same way. The prepared dataset records how (its ``crop_mode``,
``target_size`` and ingest options); the training dataset's metadata carries that into
every checkpoint (``meta['dataset_meta']['input_crops']``), and :func:`crop_settings`
fills in what the command line leaves open.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional

from smilfit.datasets.ingest_images import BBOX_MARGIN
from smilfit.datasets.sleap_ingest.options import VIDEO_EXTS

from .common import InferenceError, PathLike

#: The crops of inference when neither the command line nor the checkpoint says.
DEFAULT_CROPS = dict(crop_mode='default', target_size=None, bbox_margin=BBOX_MARGIN)


@dataclass
class SessionFolder:
    """A session folder's inputs, in the calibration's camera order.

    Attributes:
        calibration: the anipose ``calibration.toml``.
        camera_names: the calibration's cameras.
        videos: each camera's video.
        labels: each camera's ``.slp`` (None where its folder holds none, or several).
    """

    calibration: Path
    camera_names: List[str]
    videos: List[Path]
    labels: List[Optional[Path]]

    def boxes(self) -> List[Path]:
        """Each camera's SLEAP file, for ``bbox_crop`` boxes.

        Raises:
            InferenceError: a camera folder holds no ``.slp`` or several.
        """
        missing = [c for c, p in zip(self.camera_names, self.labels) if p is None]
        if missing:
            raise InferenceError(
                f'bbox_crop boxes each frame with SLEAP\'s 2D keypoints of every camera, and '
                f'the camera folder(s) {missing} of {self.calibration.parent} hold no single '
                '.slp file: pass one per camera with --bbox-slp')
        return list(self.labels)


def is_session_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding an anipose ``calibration.toml``."""
    path = Path(path)
    return path.is_dir() and (path / 'calibration.toml').is_file()


def read_session_folder(folder: PathLike) -> SessionFolder:
    """The videos, calibration and SLEAP files of a session folder (module docstring).

    Raises:
        InferenceError: no calibration, a camera of the calibration without its folder,
            a camera folder without a video or with several.
    """
    from smilfit.cameras import load_anipose_calibration
    folder = Path(folder)
    calibration = folder / 'calibration.toml'
    if not calibration.is_file():
        raise InferenceError(f'{folder} is not a session folder: it holds no calibration.toml')
    names = [str(n) for n in load_anipose_calibration(calibration).names]
    videos, labels = [], []
    for name in names:
        cam = folder / name
        if not cam.is_dir():
            raise InferenceError(f'{folder}: the calibration\'s camera {name!r} has no folder '
                                 f'{cam.name}/ (camera folders are named as in '
                                 'calibration.toml)')
        found = sorted(p for p in cam.iterdir() if p.suffix.lower() in VIDEO_EXTS)
        if not found:
            raise InferenceError(f'{cam}: no video ({", ".join(VIDEO_EXTS)}); a camera folder '
                                 'holds its video')
        if len(found) > 1:
            raise InferenceError(f'{cam}: several videos ({", ".join(p.name for p in found)}); '
                                 'a camera folder holds one')
        slps = sorted(cam.glob('*.slp'))
        videos.append(found[0])
        labels.append(slps[0] if len(slps) == 1 else None)
    return SessionFolder(calibration, names, videos, labels)


def trained_crops(dataset_meta: Optional[Mapping[str, Any]]) -> Optional[dict]:
    """How the network's training crops were made (``crop_mode``, ``target_size``,
    ``bbox_margin``), from its checkpoint's dataset metadata; None where it does not say
    (older checkpoints, data made another way)."""
    crops = (dataset_meta or {}).get('input_crops')
    if not isinstance(crops, Mapping) or crops.get('crop_mode') not in (
            'default', 'centred', 'bbox_crop'):
        return None
    size = crops.get('target_size')
    return dict(crop_mode=str(crops['crop_mode']),
                target_size=None if size in (None, 0) else int(size),
                bbox_margin=float(crops.get('bbox_margin', DEFAULT_CROPS['bbox_margin'])))


def training_data_crops(cfg) -> Optional[dict]:
    """How the images of the config's training dataset file were cropped, where that file
    still exists (for checkpoints saved before they recorded it); None elsewhere."""
    from smilfit.datasets import DatasetReader
    try:
        dataset = cfg.train_dataloader.dataset
        path = Path(dataset.get('data_root') or '') / dataset.ann_file
    except (AttributeError, KeyError, TypeError):
        return None
    if path.suffix.lower() not in ('.h5', '.hdf5') or not path.is_file():
        return None
    try:
        with DatasetReader(path) as reader:
            return reader.input_crops
    except (OSError, ValueError):
        return None


def crop_settings(asked: Mapping[str, Any], trained: Optional[Mapping[str, Any]]
                  ) -> tuple:
    """``(settings, notes)``: the crops to run with, each entry the command line's
    (``asked``, None where not given), else the training crops' (``trained``), else
    :data:`DEFAULT_CROPS`; and a line for each asked entry that differs from training."""
    settings, notes = {}, []
    for key, default in DEFAULT_CROPS.items():
        mine = asked.get(key)
        theirs = None if trained is None else trained.get(key)
        settings[key] = mine if mine is not None else (
            theirs if trained is not None else default)
        if mine is not None and trained is not None and mine != theirs:
            notes.append(f'{key.replace("_", "-")} {mine} differs from the network\'s '
                         f'training crops ({theirs}): its predictions may be far off')
    return settings, notes


__all__ = ['SessionFolder', 'is_session_folder', 'read_session_folder', 'trained_crops',
           'training_data_crops', 'crop_settings', 'DEFAULT_CROPS']
