"""The frame source of a smilfit HDF5 dataset: :class:`HDF5Frames` (stored images and
cameras, all views; maps stored pixels back to the source videos' for the ``.slp``)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .common import InferenceError, PathLike
from smilfit.cameras.projection import (distort_normalized, normalized_to_pixels,
                                        pixels_to_normalized)
from smilfit.datasets import DatasetReader


class HDF5Frames:
    """Samples of a smilfit HDF5 dataset (stored images and cameras; all views).

    Frames are the stored images; ``source_affine`` maps their pixels to the original
    videos' (the inverse of the stored ``crop``), used for the ``.slp``. The ``.slp``
    refers to one placeholder video per (session, camera).
    """

    calibrated = True

    def __init__(self, path: PathLike, frames: Optional[Sequence[int]] = None) -> None:
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
