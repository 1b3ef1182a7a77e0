"""Image and mask codecs of the HDF5 dataset: JPEG images (RGB), PNG masks."""
from __future__ import annotations

from typing import Union

import cv2
import numpy as np


from .schema import DatasetFormatError


# ---------------------------------------------------------------------------- image codecs
def encode_image(image: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB (or grayscale) uint8 image as JPEG bytes.

    Args:
        image: (H, W, 3) RGB or (H, W) / (H, W, 1) grayscale, uint8.
        quality: JPEG quality 1-100.

    Returns:
        JPEG file bytes. Channels are swapped to OpenCV's BGR before encoding, so
        :func:`decode_image` returns the same RGB colours.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise DatasetFormatError(f'encode_image: expected uint8, got {image.dtype}')
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim != 2:
        raise DatasetFormatError(f'encode_image: expected (H, W, 3) or (H, W), got {image.shape}')
    ok, buf = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DatasetFormatError(f'encode_image: JPEG encoding failed for shape {image.shape}')
    return buf.tobytes()


def decode_image(data: Union[bytes, np.ndarray]) -> np.ndarray:
    """Decode JPEG/PNG bytes (as stored in ``views/images``) to an (H, W, 3) uint8 RGB array."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) \
        else np.asarray(data, dtype=np.uint8)
    if buf.size == 0:
        raise DatasetFormatError('decode_image: empty image bytes (no image stored)')
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetFormatError(f'decode_image: {buf.size} bytes are not a decodable image')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_mask(mask: np.ndarray) -> bytes:
    """Encode an (H, W) mask (bool or uint8) as PNG bytes (lossless; bool -> 0/255)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DatasetFormatError(f'encode_mask: expected (H, W), got {mask.shape}')
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8) * 255
    ok, buf = cv2.imencode('.png', mask.astype(np.uint8))
    if not ok:
        raise DatasetFormatError('encode_mask: PNG encoding failed')
    return buf.tobytes()


def decode_mask(data: Union[bytes, np.ndarray]) -> np.ndarray:
    """Decode PNG mask bytes (as stored in ``views/masks``) to an (H, W) uint8 array."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) \
        else np.asarray(data, dtype=np.uint8)
    if buf.size == 0:
        raise DatasetFormatError('decode_mask: empty mask bytes (no mask stored)')
    mask = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DatasetFormatError(f'decode_mask: {buf.size} bytes are not a decodable PNG')
    return mask if mask.ndim == 2 else mask[..., 0]


