"""Silhouette masks from COCO/StanfordExtra RLE, polygons, PNG files and smilfit HDF5 files.

Everything returns masks as numpy ``(H, W)`` bool arrays (or stacks of them), the form the
silhouette handler and the metrics take (``torch.as_tensor(mask).float()``).

**COCO run-length encoding** (``{'size': [H, W], 'counts': ...}``): runs of 0s and 1s,
starting with 0s, over the pixels in **column-major** (Fortran) order. ``counts`` is a
list of ints (uncompressed) or a string/bytes (compressed: pycocotools' ``rleToString``
format: each count, after the first two, is stored as the difference to the count two
before, in 5-bit groups with a continuation bit, each group offset by 48 into printable
ASCII). StanfordExtra stores the compressed string alone in ``seg``, with the image size
in ``img_height`` / ``img_width``. Decoding is pure numpy (pycocotools is not needed).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..utils.atomic import atomic_open
from .hdf5_format import DatasetReader, decode_mask

__all__ = ['MaskFormatError', 'rle_string_to_counts', 'counts_to_rle_string', 'rle_decode',
           'rle_encode', 'polygons_to_mask', 'decode_segmentation', 'load_mask_png',
           'save_mask_png', 'masks_from_hdf5']

PathLike = Union[str, os.PathLike]


class MaskFormatError(ValueError):
    """A mask (RLE, polygon, PNG or HDF5 entry) cannot be decoded; the message says why."""


# ------------------------------------------------------------------------------- COCO RLE
def rle_string_to_counts(counts: Union[str, bytes]) -> np.ndarray:
    """Decode a compressed COCO RLE string (pycocotools' ``rleFrString``) to run lengths.

    Args:
        counts: the compressed ``counts`` string (str or ASCII bytes).

    Returns:
        (R,) int64 run lengths, alternating 0-runs and 1-runs, starting with 0s.

    Raises:
        MaskFormatError: a character outside the code range, a truncated number or a
            negative run.
    """
    if isinstance(counts, (bytes, bytearray)):
        counts = counts.decode('ascii')
    codes = np.frombuffer(counts.encode('ascii'), dtype=np.uint8).astype(np.int64) - 48
    if codes.size and (codes.min() < 0 or codes.max() > 63):
        bad = counts[int(np.argmax((codes < 0) | (codes > 63)))]
        raise MaskFormatError(f'compressed RLE has a character {bad!r} outside the code '
                              "range '0'..'o'")
    runs: List[int] = []
    value, shift = 0, 0
    # One pass over the characters (a few hundred per mask, not pixels).
    for c in codes.tolist():
        value |= (c & 0x1F) << shift
        shift += 5
        if c & 0x20:  # continuation bit: more 5-bit groups follow
            continue
        if c & 0x10:  # sign bit of the last group
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value, shift = 0, 0
    if shift:
        raise MaskFormatError('compressed RLE ends inside a number (truncated string)')
    out = np.asarray(runs, dtype=np.int64)
    if out.size and out.min() < 0:
        raise MaskFormatError(f'compressed RLE decodes to a negative run length '
                              f'({int(out.min())}): not a COCO RLE string')
    return out


def counts_to_rle_string(counts: Sequence[int]) -> str:
    """Compress run lengths to a COCO RLE string (pycocotools' ``rleToString``)."""
    counts = [int(c) for c in counts]
    chars: List[str] = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            group = x & 0x1F
            x >>= 5  # arithmetic shift: negatives stay negative
            more = not ((x == 0 and not group & 0x10) or (x == -1 and group & 0x10))
            if more:
                group |= 0x20
            chars.append(chr(group + 48))
    return ''.join(chars)


def rle_decode(rle: Union[Mapping[str, Any], str, bytes, Sequence[int]],
               height: Optional[int] = None, width: Optional[int] = None) -> np.ndarray:
    """Decode a COCO RLE mask to an (H, W) bool array.

    Args:
        rle: ``{'size': [H, W], 'counts': str | bytes | list}`` (COCO), or the bare
            ``counts`` (compressed string or list of ints) with ``height``/``width``.
        height, width: the mask size; required for bare counts, and when given with a
            dict they must agree with its ``size``.

    Raises:
        MaskFormatError: missing size, runs that do not add up to ``H * W``, bad counts.
    """
    counts: Any = rle
    if isinstance(rle, Mapping):
        if 'counts' not in rle:
            raise MaskFormatError(f'RLE dict has no "counts" (keys: {sorted(rle)})')
        counts = rle['counts']
        size = rle.get('size')
        if size is not None:
            if len(size) != 2:
                raise MaskFormatError(f'RLE "size" must be [H, W], got {size!r}')
            if (height is not None and int(size[0]) != height) or (
                    width is not None and int(size[1]) != width):
                raise MaskFormatError(f'RLE size {list(size)} disagrees with the given '
                                      f'height, width = {height}, {width}')
            height, width = int(size[0]), int(size[1])
    if height is None or width is None:
        raise MaskFormatError('RLE needs the mask size: a dict with "size" [H, W], or '
                              'height= and width=')
    if isinstance(counts, (str, bytes, bytearray)):
        runs = rle_string_to_counts(counts)
    else:
        runs = np.asarray(counts, dtype=np.int64).reshape(-1)
        if runs.size and runs.min() < 0:
            raise MaskFormatError(f'RLE counts must be >= 0, got {int(runs.min())}')
    total = int(runs.sum())
    if total != height * width:
        raise MaskFormatError(f'RLE runs cover {total} pixels, but the mask is {height} x '
                              f'{width} = {height * width} (wrong size or corrupt counts)')
    values = (np.arange(runs.size) % 2).astype(bool)
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T.copy()  # column-major runs


def rle_encode(mask: np.ndarray) -> Dict[str, Any]:
    """Encode an (H, W) mask as an uncompressed COCO RLE ``{'size': [H, W], 'counts': [...]}``.

    Pass ``counts`` through :func:`counts_to_rle_string` for the compressed form.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise MaskFormatError(f'rle_encode: expected an (H, W) mask, got {mask.shape}')
    flat = (mask != 0).T.reshape(-1)  # column-major
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds)
    if flat.size and flat[0]:  # runs start with 0s
        runs = np.concatenate([[0], runs])
    return {'size': [int(mask.shape[0]), int(mask.shape[1])], 'counts': runs.tolist()}


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int
                     ) -> np.ndarray:
    """Rasterise COCO polygons (``[[x0, y0, x1, y1, ...], ...]``, pixels) to (H, W) bool.

    Polygons are filled together (COCO's union of parts); vertices use OpenCV's pixel-
    centre convention, rounded to the nearest pixel.
    """
    mask = np.zeros((int(height), int(width)), dtype=np.uint8)
    pts = []
    for i, poly in enumerate(polygons):
        arr = np.asarray(poly, dtype=np.float64).reshape(-1)
        if arr.size < 6 or arr.size % 2:
            raise MaskFormatError(f'polygon {i} needs x, y pairs for at least 3 points, '
                                  f'got {arr.size} numbers')
        pts.append(np.round(arr.reshape(-1, 2)).astype(np.int32))
    if pts:
        cv2.fillPoly(mask, pts, 1)
    return mask.astype(bool)


def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    """Any COCO/StanfordExtra segmentation -> (H, W) bool.

    Accepts a compressed RLE string (StanfordExtra's ``seg``), an RLE dict with string or
    list counts, or a list of polygons.
    """
    if isinstance(seg, (str, bytes, bytearray, Mapping)):
        return rle_decode(seg, height, width)
    if isinstance(seg, (list, tuple)) and seg and isinstance(seg[0], (list, tuple)):
        return polygons_to_mask(seg, height, width)
    raise MaskFormatError(f'unknown segmentation of type {type(seg).__name__}: expected an '
                          'RLE string, an RLE dict or a list of polygons')


# ------------------------------------------------------------------------------ PNG files
def load_mask_png(path: PathLike, threshold: int = 127) -> np.ndarray:
    """Read a mask image (PNG or any format OpenCV reads) as (H, W) bool.

    Grayscale and colour images are foreground where their (first channel or grayscale)
    value exceeds ``threshold``; an image with an alpha channel uses the alpha.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'mask file {path} does not exist')
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise MaskFormatError(f'mask file {path} is not an image OpenCV can read')
    if img.ndim == 3:
        img = img[..., 3] if img.shape[2] == 4 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img > threshold


def save_mask_png(path: PathLike, mask: np.ndarray) -> None:
    """Write an (H, W) mask as a 0/255 PNG, atomically (temp file, then rename)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise MaskFormatError(f'save_mask_png: expected an (H, W) mask, got {mask.shape}')
    ok, buf = cv2.imencode('.png', (mask != 0).astype(np.uint8) * 255)
    if not ok:
        raise MaskFormatError(f'PNG encoding failed for {path}')
    with atomic_open(path, 'wb') as f:
        f.write(buf.tobytes())


# --------------------------------------------------------------------------- HDF5 datasets
def masks_from_hdf5(dataset: Any, indices: Union[int, Sequence[int], np.ndarray],
                    size: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Masks of samples of a smilfit HDF5 dataset, as the silhouette handler reads them.

    Args:
        dataset: a path or an open :class:`~smilfit.datasets.hdf5_format.DatasetReader`.
        indices: sample indices.
        size: optional ``(W, H)`` to resize every mask to (nearest neighbour, e.g. a
            lower fitting resolution: map the cameras' ``K`` by the same resize,
            ``crop_affine`` of the pixel-centre convention). Without it every view of
            the batch must have the same stored image size.

    Returns:
        ``masks`` (N, C, H, W) float32 in {0, 1}, NaN for views without a mask (unknown
        pixels), and ``mask_valid`` (N, C) bool.

    Raises:
        MaskFormatError: the file has no masks, or stored sizes differ without ``size``.
    """
    reader = dataset if isinstance(dataset, DatasetReader) else DatasetReader(dataset)
    if not getattr(reader, 'has_masks', False):
        raise MaskFormatError(f'{reader.path}: the dataset has no masks (views/masks)')
    batch = reader.read(indices, keys=['masks', 'image_size'])
    blobs = batch['masks']
    sizes = np.asarray(batch['image_size'])  # (N, C, 2) (W, H)
    n, c = sizes.shape[:2]
    present = np.array([[len(b) > 0 for b in row] for row in blobs], dtype=bool).reshape(n, c)
    if size is None:
        wh = {tuple(s) for s in sizes[present].tolist()}
        if len(wh) > 1:
            raise MaskFormatError(f'{reader.path}: masks of the requested samples have '
                                  f'different sizes {sorted(wh)}; pass size=(W, H)')
        if not wh:
            raise MaskFormatError(f'{reader.path}: none of the requested samples has a mask')
        size = next(iter(wh))
    w, h = int(size[0]), int(size[1])
    out = np.full((n, c, h, w), np.nan, dtype=np.float32)
    for i in range(n):  # per stored PNG: decoding is per blob anyway
        for j in range(c):
            if not present[i, j]:
                continue
            m = decode_mask(blobs[i][j])
            if m.shape != (h, w):
                m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
            out[i, j] = (m > 127).astype(np.float32)
    return out, present
