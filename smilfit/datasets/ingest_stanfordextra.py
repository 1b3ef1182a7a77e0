"""StanfordExtra (dogs: 24 keypoints, boxes, RLE silhouettes) -> smilfit HDF5 dataset.

StanfordExtra's json is a list of records::

    {'img_path': 'n02087394-Rhodesian_ridgeback/n02087394_10591.jpg',
     'img_width': 360, 'img_height': 296,
     'joints': [[x, y, visibility], ...] (24),   # pixels; (0, 0, 0) = not labelled
     'img_bbox': [x0, y0, w, h],                  # pixels
     'is_multiple_dogs': False,
     'seg': '<compressed COCO RLE of the img_height x img_width mask>'}

Each record becomes one single-view sample (:doc:`docs/hdf5_schema.md`): the image is cut
to a square around the box (side ``max(w, h) * (1 + 2 * margin)``, black outside the
frame) and resized to ``target_size``; keypoints and the mask go through the same affine
(``views/crop``). The view is uncalibrated: the schema's default camera (``R = I``,
``t = 0``, ``f = max(W, H)`` pixels of the original image, principal point at its centre,
``K_stored = crop @ K``, ``calibrated = False``). Sessions are the breed folders
(``n02087394-Rhodesian_ridgeback``), ``frame`` is the record's index in the json, and the
root attribute ``records`` (JSON) keeps each sample's ``img_path``, ``img_bbox`` and
``is_multiple_dogs`` (:func:`stored_bboxes` maps the boxes into stored pixels).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import cv2
import numpy as np

from ..body_models.quadruped import STANFORDEXTRA_KEYPOINT_NAMES
from .hdf5_format import DatasetReader, DatasetWriter, encode_image, encode_mask
from .ingest_images import apply_affine, box_affine, crop_frame
from .ingest_sleap import DataIngestError
from .masks import MaskFormatError, decode_segmentation

__all__ = ['STANFORDEXTRA_KEYPOINT_NAMES', 'load_stanfordextra', 'bbox_crop_box',
           'default_camera', 'ingest_stanfordextra', 'stored_bboxes']

PathLike = Union[str, os.PathLike]

_REQUIRED = ('img_path', 'img_width', 'img_height', 'joints', 'img_bbox')


def load_stanfordextra(json_path: PathLike) -> List[Dict[str, Any]]:
    """Read and validate a StanfordExtra json (a list of records, see the module doc).

    Raises:
        DataIngestError: unreadable json, a record missing a field, joints not (24, 3),
            a box with non-positive size.
    """
    path = Path(json_path)
    if not path.is_file():
        raise DataIngestError(f'{path}: no such StanfordExtra json file')
    try:
        with open(path) as f:
            records = json.load(f)
    except (OSError, ValueError) as e:
        raise DataIngestError(f'{path}: not a readable json file ({e})') from e
    except RecursionError:
        raise DataIngestError(f'{path}: nested too deeply to be StanfordExtra records (a '
                              'corrupt or crafted file)') from None
    if not isinstance(records, list) or not records:
        raise DataIngestError(f'{path}: expected a non-empty list of records')
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataIngestError(f'{path}: record {i} is not a dict')
        missing = [k for k in _REQUIRED if k not in rec]
        if missing:
            raise DataIngestError(f'{path}: record {i} ({rec.get("img_path", "?")}) has no '
                                  f'{missing}')
        joints = np.asarray(rec['joints'], dtype=np.float64)
        if joints.shape != (len(STANFORDEXTRA_KEYPOINT_NAMES), 3):
            raise DataIngestError(f'{path}: record {i} ({rec["img_path"]}): joints must be '
                                  f'(24, 3) x, y, visibility; got {joints.shape}')
        box = np.asarray(rec['img_bbox'], dtype=np.float64)
        if box.shape != (4,) or box[2] <= 0 or box[3] <= 0:
            raise DataIngestError(f'{path}: record {i} ({rec["img_path"]}): img_bbox must be '
                                  f'[x0, y0, w, h] with w, h > 0; got {rec["img_bbox"]}')
    return records


def bbox_crop_box(bbox: Sequence[float], margin: float = 0.1) -> tuple:
    """Square integer source box ``(x0, y0, side, side)`` centred on ``bbox`` (x0, y0, w, h),
    of side ``max(w, h) * (1 + 2 * margin)`` (rounded up)."""
    x0, y0, w, h = (float(v) for v in bbox)
    side = int(np.ceil(max(w, h) * (1.0 + 2.0 * margin)))
    cx, cy = x0 + w / 2.0, y0 + h / 2.0
    return int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side, side


def default_camera(width: int, height: int) -> np.ndarray:
    """The schema's uncalibrated (3, 3) intrinsics of a ``width x height`` original image:
    ``f = max(W, H)``, principal point ``((W - 1) / 2, (H - 1) / 2)``."""
    f = float(max(width, height))
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0],
                     [0.0, 0.0, 1.0]])


def _keypoints(joints: np.ndarray) -> tuple:
    """(24, 3) x, y, v -> (24, 2) pixels with NaN where unlabelled, (24,) confidence."""
    labelled = joints[:, 2] > 0
    xy = np.where(labelled[:, None], joints[:, :2], np.nan)
    return xy, labelled.astype(np.float32)


def ingest_stanfordextra(json_path: PathLike, out_path: PathLike,
                         image_dir: Optional[PathLike] = None, *, target_size: int = 256,
                         margin: float = 0.1, indices: Optional[Sequence[int]] = None,
                         skip_multiple_dogs: bool = False, overwrite: bool = False,
                         progress: bool = True) -> Path:
    """Convert StanfordExtra records to a smilfit HDF5 dataset (one view per sample).

    Args:
        json_path: the StanfordExtra json.
        out_path: the HDF5 file to write (atomically: ``<out>.partial``, then renamed).
        image_dir: folder the records' ``img_path`` are relative to (default: the json's
            folder, then its ``sample_imgs`` / ``Images`` sub-folder).
        target_size: side of the stored square images in pixels.
        margin: box margin on each side, as a fraction of the box's longer side.
        indices: records to take (default all), in this order.
        skip_multiple_dogs: drop records flagged ``is_multiple_dogs``.
        overwrite: replace an existing ``out_path``.
        progress: show a progress bar.

    Returns:
        The written path.

    Raises:
        DataIngestError: bad json, missing or unreadable image (named), image size that
            disagrees with the record, undecodable mask, nothing to write.
    """
    json_path = Path(json_path)
    records = load_stanfordextra(json_path)
    if target_size < 8:
        raise DataIngestError(f'target_size must be >= 8 pixels, got {target_size}')
    if margin < 0:
        raise DataIngestError(f'margin must be >= 0, got {margin}')
    order = list(range(len(records))) if indices is None else [int(i) for i in indices]
    bad = [i for i in order if not 0 <= i < len(records)]
    if bad:
        raise DataIngestError(f'{json_path}: record indices {bad} out of range '
                              f'(0..{len(records) - 1})')
    if skip_multiple_dogs:
        order = [i for i in order if not records[i].get('is_multiple_dogs', False)]
    if not order:
        raise DataIngestError(f'{json_path}: no records left to ingest')
    roots = ([Path(image_dir)] if image_dir is not None else
             [json_path.parent, json_path.parent / 'sample_imgs', json_path.parent / 'Images'])

    def find_image(rel: str) -> Path:
        for root in roots:
            if (root / rel).is_file():
                return root / rel
        raise DataIngestError(f'{json_path}: image {rel!r} not found under '
                              f'{[str(r) for r in roots]} (pass image_dir / --image-dir)')

    size = (int(target_size), int(target_size))
    meta = [dict(index=i, img_path=records[i]['img_path'],
                 img_bbox=[float(v) for v in records[i]['img_bbox']],
                 is_multiple_dogs=bool(records[i].get('is_multiple_dogs', False)))
            for i in order]
    attrs = dict(crop_mode='stanfordextra_bbox', target_size=int(target_size),
                 bbox_margin=float(margin), undistorted=False, confidence_threshold=0.5,
                 records=meta)
    iterator = order
    if progress:
        from tqdm import tqdm
        iterator = tqdm(order, desc='ingest StanfordExtra', unit='dog')
    with DatasetWriter(out_path, keypoint_names=STANFORDEXTRA_KEYPOINT_NAMES, num_views=1,
                       overwrite=overwrite, units='unknown',
                       source=f'stanfordextra: {json_path}', attrs=attrs,
                       created_by='smilfit.datasets.ingest_stanfordextra') as writer:
        sessions: Dict[str, int] = {}
        for i in iterator:
            rec = records[i]
            rel = str(rec['img_path'])
            img_file = find_image(rel)
            bgr = cv2.imread(str(img_file), cv2.IMREAD_COLOR)
            if bgr is None:
                raise DataIngestError(f'{img_file}: not an image OpenCV can read')
            h, w = bgr.shape[:2]
            if (w, h) != (int(rec['img_width']), int(rec['img_height'])):
                raise DataIngestError(f'{img_file}: image is {w} x {h}, the record says '
                                      f'{rec["img_width"]} x {rec["img_height"]}')
            box = bbox_crop_box(rec['img_bbox'], margin)
            crop = box_affine(box, size)
            rgb = cv2.cvtColor(crop_frame(bgr, box, size), cv2.COLOR_BGR2RGB)
            masks = [b'']
            if rec.get('seg') is not None:
                try:
                    mask = decode_segmentation(rec['seg'], h, w)
                except MaskFormatError as e:
                    raise DataIngestError(f'{json_path}: record {i} ({rel}): {e}') from e
                # Area-average then threshold: the stored mask is the majority label of
                # the source pixels each stored pixel covers.
                small = crop_frame(mask.astype(np.uint8) * 255, box, size)
                masks = [encode_mask(small > 127)]
            xy, conf = _keypoints(np.asarray(rec['joints'], dtype=np.float64))
            session = rel.split('/')[0] if '/' in rel else 'stanfordextra'
            if session not in sessions:
                sessions[session] = writer.add_session(session, ['camera'])
            writer.add_samples({
                'session': np.array([sessions[session]]), 'frame': np.array([i]),
                'valid': np.array([[bool(conf.any())]]),
                'calibrated': np.zeros((1, 1), dtype=bool),
                'keypoints_2d': apply_affine(crop, xy)[None, None].astype(np.float32),
                'confidence': conf[None, None],
                'visible': (conf > 0)[None, None],
                'K': (crop @ default_camera(w, h))[None, None],
                'R': np.eye(3)[None, None], 't': np.zeros((1, 1, 3)),
                'image_size': np.array([[size]], dtype=np.int32),
                'crop': crop[None, None],
                'images': [[encode_image(rgb)]], 'masks': [masks],
            })
        return writer.commit()


def stored_bboxes(dataset: Union[PathLike, DatasetReader]) -> np.ndarray:
    """The records' boxes in stored-image pixels, ``(N, 4)`` ``x0, y0, x1, y1``.

    Maps each record's ``img_bbox`` (kept in the root attribute ``records``) through the
    sample's ``views/crop`` affine, for box-normalised PCK
    (:func:`smilfit.evaluation.functional.bbox_sizes`).
    """
    reader = dataset if isinstance(dataset, DatasetReader) else DatasetReader(dataset)
    records = reader.attrs.get('records')
    if records is None:
        raise DataIngestError(f'{reader.path}: no "records" attribute (not written by '
                              'ingest_stanfordextra)')
    records = json.loads(records) if isinstance(records, str) else records
    crop = reader.read(np.arange(len(reader)), keys=['crop'])['crop'][:, 0]  # (N, 3, 3)
    box = np.array([r['img_bbox'] for r in records], dtype=np.float64)  # x0, y0, w, h
    # Box edges in the pixel-centre convention: [x0 - 0.5, x0 + w - 0.5].
    corners = np.stack([box[:, :2] - 0.5, box[:, :2] + box[:, 2:] - 0.5], 1)  # (N, 2, 2)
    mapped = np.einsum('nij,nkj->nki', crop[:, :2, :2], corners) + crop[:, None, :2, 2]
    return mapped.reshape(-1, 4)
