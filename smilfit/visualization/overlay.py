"""Draw fits over images: mesh overlays, keypoints coloured by error, multi-view grids.

Images are (H, W, 3) uint8 RGB numpy arrays; pixel coordinates follow OpenCV (the centre
of the top-left pixel is ``(x, y) = (0, 0)``, x right, y down), as everywhere in smilfit.
Every function returns a new image and leaves its input untouched.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .zbuffer import MeshRender

__all__ = ['overlay_mesh', 'draw_keypoints', 'error_colours', 'view_grid', 'grey_image']

#: Sub-pixel precision of OpenCV's drawing calls (coordinates are scaled by 2**_SHIFT).
_SHIFT = 4


def _check_image(image: np.ndarray, name: str = 'image') -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'{name} must be an (H, W, 3) uint8 RGB image, got shape '
                         f'{image.shape} and dtype {image.dtype}')
    return image


def grey_image(height: int, width: int, level: int = 96) -> np.ndarray:
    """An (H, W, 3) uint8 image of one grey level (the background when there is no video)."""
    return np.full((int(height), int(width), 3), int(level), dtype=np.uint8)


def overlay_mesh(image: np.ndarray, render: Union[MeshRender, Tuple[np.ndarray, np.ndarray]],
                 alpha: float = 0.6) -> np.ndarray:
    """Blend a rendered mesh over an image where the mesh covers it.

    Args:
        image: (H, W, 3) uint8 RGB.
        render: a :class:`~smilfit.visualization.zbuffer.MeshRender` or an
            ``(image (H, W, 3) uint8, mask (H, W) bool)`` pair of the same size.
        alpha: opacity of the mesh in [0, 1] (1: the mesh hides the image).

    Returns:
        (H, W, 3) uint8: ``(1 - alpha) image + alpha mesh`` inside the mask, the image
        elsewhere.
    """
    image = _check_image(image)
    rgb, mask = (render.image, render.mask) if isinstance(render, MeshRender) else render
    rgb = _check_image(rgb, 'render image')
    mask = np.asarray(mask, dtype=bool)
    if rgb.shape != image.shape or mask.shape != image.shape[:2]:
        raise ValueError(f'overlay_mesh: render {rgb.shape} / mask {mask.shape} do not match '
                         f'the image {image.shape}')
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'overlay_mesh: alpha must be in [0, 1], got {alpha}')
    out = image.copy()
    blended = (1.0 - alpha) * image[mask].astype(np.float32) + alpha * rgb[mask]
    out[mask] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


@functools.lru_cache(maxsize=16)
def _colormap_table(cmap: str) -> np.ndarray:
    """(N, 3) uint8 RGB lookup table of a matplotlib colormap (built once per name)."""
    import matplotlib  # the colormaps only: no pyplot, no backend

    colormap = matplotlib.colormaps[cmap]
    table = colormap(np.arange(colormap.N))[:, :3]
    return np.rint(255 * table).astype(np.uint8)


def error_colours(errors: np.ndarray, scale_px: float, cmap: str = 'RdYlGn_r') -> np.ndarray:
    """(N, 3) uint8 RGB colours of pixel errors through a matplotlib colormap.

    ``0`` maps to the colormap's start and ``scale_px`` (and beyond) to its end, exactly
    as ``matplotlib.colormaps[cmap](errors / scale_px)`` would; NaN errors get white.

    Args:
        errors: (N,) errors in pixels.
        scale_px: error (pixels) at the end of the colour scale.
        cmap: a matplotlib colormap name (the default runs green -> yellow -> red).
    """
    if not scale_px > 0:
        raise ValueError(f'error scale must be positive pixels, got {scale_px}')
    errors = np.asarray(errors, dtype=np.float64)
    table = _colormap_table(cmap)
    # matplotlib's own indexing: floor(x N), with x = 1 mapped to the last entry.
    index = np.clip(np.nan_to_num(errors) / scale_px, 0, 1) * len(table)
    out = table[np.minimum(index.astype(np.int64), len(table) - 1)]
    out[~np.isfinite(errors)] = 255
    return out


def _points(x: Optional[np.ndarray], name: str, n: Optional[int] = None) -> Optional[np.ndarray]:
    if x is None:
        return None
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2 or (n is not None and x.shape[0] != n):
        want = '(N, 2)' if n is None else f'({n}, 2)'
        raise ValueError(f'draw_keypoints: {name} must be {want} pixels, got {x.shape}')
    return x


def _fixed(p: np.ndarray) -> Tuple[int, int]:
    """A pixel coordinate in OpenCV's fixed-point drawing units."""
    return int(round(p[0] * (1 << _SHIFT))), int(round(p[1] * (1 << _SHIFT)))


def _draw_scale_bar(image: np.ndarray, scale_px: float, cmap: str) -> None:
    """A small colour bar ``0 px .. scale px`` in the image's bottom-left corner."""
    H, W = image.shape[:2]
    bar_w, bar_h = max(min(W // 4, 120), 20), max(min(H // 40, 8), 3)
    x0, y0 = 6, H - bar_h - 18
    if y0 < 0:
        return
    ramp = error_colours(np.linspace(0, scale_px, bar_w), scale_px, cmap)
    image[y0:y0 + bar_h, x0:x0 + bar_w] = ramp[None]
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    cv2.putText(image, '0', (x0, y0 + bar_h + 12), font, size, (255, 255, 255), 1, cv2.LINE_AA)
    label = f'{scale_px:g} px'
    (tw, _), _ = cv2.getTextSize(label, font, size, 1)
    cv2.putText(image, label, (x0 + bar_w - tw, y0 + bar_h + 12), font, size,
                (255, 255, 255), 1, cv2.LINE_AA)


def draw_keypoints(image: np.ndarray, observed: Optional[np.ndarray] = None,
                   fitted: Optional[np.ndarray] = None, *, error_scale_px: float = 10.0,
                   cmap: str = 'RdYlGn_r', radius: int = 3,
                   skeleton: Optional[Sequence[Tuple[int, int]]] = None,
                   observed_colour: Tuple[int, int, int] = (255, 255, 255),
                   fitted_colour: Tuple[int, int, int] = (80, 160, 255),
                   error_lines: bool = True, scale_bar: bool = True) -> np.ndarray:
    """Draw observed and fitted 2D keypoints, fitted ones coloured by their error.

    Observed points are rings (``observed_colour``); fitted points are filled discs whose
    colour encodes the pixel distance to their observed point (``0 .. error_scale_px``
    through ``cmap``), joined to it by a thin line. A fitted point without an observation
    is drawn in ``fitted_colour``. NaN points are skipped.

    Args:
        image: (H, W, 3) uint8 RGB.
        observed: (N, 2) observed pixels ``(x, y)``, NaN where missing; or None.
        fitted: (N, 2) fitted (reprojected) pixels in the same order; or None.
        error_scale_px: error in pixels at the end of the colour scale.
        cmap: matplotlib colormap name for the error.
        radius: disc radius in pixels.
        skeleton: optional (E, 2) keypoint index pairs drawn as lines between the fitted
            points (or the observed ones when there are no fitted points).
        observed_colour, fitted_colour: RGB.
        error_lines: join each fitted point to its observation.
        scale_bar: draw the error colour scale in the bottom-left corner (when both
            observed and fitted points are given).

    Returns:
        (H, W, 3) uint8 RGB. The pixel at ``(row round(y), column round(x))`` of every
        finite fitted point (of every observed point when ``fitted`` is None) gets the
        point's colour.
    """
    out = _check_image(image).copy()
    obs = _points(observed, 'observed')
    fit = _points(fitted, 'fitted', None if obs is None else obs.shape[0])
    if obs is None and fit is None:
        return out
    n = (obs if obs is not None else fit).shape[0]
    ok_obs = np.isfinite(obs).all(1) if obs is not None else np.zeros(n, bool)
    ok_fit = np.isfinite(fit).all(1) if fit is not None else np.zeros(n, bool)
    errors = (np.linalg.norm(fit - obs, axis=1) if obs is not None and fit is not None
              else np.full(n, np.nan))
    colours = error_colours(errors, error_scale_px, cmap)
    colours[~np.isfinite(errors)] = fitted_colour
    base = fit if fit is not None else obs
    ok_base = ok_fit if fit is not None else ok_obs
    line = cv2.LINE_AA
    if skeleton is not None:
        edges = np.asarray(skeleton, dtype=np.int64).reshape(-1, 2)
        if edges.size and (edges.min() < 0 or edges.max() >= n):
            raise ValueError(f'draw_keypoints: skeleton indices must be in 0..{n - 1}, got '
                             f'{edges.min()}..{edges.max()}')
        for i, j in edges:                      # a handful of bones: drawing calls, not math
            if ok_base[i] and ok_base[j]:
                cv2.line(out, _fixed(base[i]), _fixed(base[j]), (200, 200, 200), 1, line,
                         _SHIFT)
    r = int(radius) << _SHIFT
    # One OpenCV drawing call per point: tens of points, not a numeric hot path.
    for k in range(n):
        if error_lines and ok_obs[k] and ok_fit[k]:
            cv2.line(out, _fixed(obs[k]), _fixed(fit[k]), tuple(int(c) for c in colours[k]), 1,
                     line, _SHIFT)
    for k in np.nonzero(ok_obs)[0]:
        cv2.circle(out, _fixed(obs[k]), r, observed_colour, 1, line, _SHIFT)
    for k in np.nonzero(ok_fit)[0]:
        cv2.circle(out, _fixed(fit[k]), r, tuple(int(c) for c in colours[k]), -1, line, _SHIFT)
    if fit is None:                             # observations alone: filled, not rings
        for k in np.nonzero(ok_obs)[0]:
            cv2.circle(out, _fixed(obs[k]), max(r // 2, 1 << _SHIFT), observed_colour, -1,
                       line, _SHIFT)
    if scale_bar and obs is not None and fit is not None:
        _draw_scale_bar(out, error_scale_px, cmap)
    return out


def _label_banner(width: int, text: str, height: int = 18) -> np.ndarray:
    banner = np.zeros((height, width, 3), dtype=np.uint8)
    if text:
        cv2.putText(banner, str(text), (4, height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return banner


def view_grid(images: Sequence[Optional[np.ndarray]], labels: Optional[Sequence[str]] = None,
              ncols: Optional[int] = None, pad: int = 4,
              background: Tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Tile several views into one image, each with a label banner above it.

    Views of different sizes are placed top-left in cells of the largest view's size;
    a ``None`` view leaves its cell empty.

    Args:
        images: C images (H_c, W_c, 3) uint8 RGB, or None.
        labels: C labels (e.g. camera names); none when omitted.
        ncols: columns of the grid (default ``ceil(sqrt(C))``).
        pad: pixels between cells.
        background: RGB of the padding and empty cells.

    Returns:
        One (H, W, 3) uint8 RGB image.
    """
    images = list(images)
    if not images:
        raise ValueError('view_grid: no images given')
    if labels is not None and len(labels) != len(images):
        raise ValueError(f'view_grid: {len(labels)} labels for {len(images)} images')
    checked = [None if im is None else _check_image(im, f'images[{i}]')
               for i, im in enumerate(images)]
    sizes = [im.shape[:2] for im in checked if im is not None]
    if not sizes:
        raise ValueError('view_grid: every image is None')
    cell_h = max(s[0] for s in sizes)
    cell_w = max(s[1] for s in sizes)
    banner_h = 18 if labels is not None else 0
    C = len(checked)
    ncols = int(ncols) if ncols else int(np.ceil(np.sqrt(C)))
    nrows = int(np.ceil(C / ncols))
    H = nrows * (cell_h + banner_h) + (nrows - 1) * pad
    W = ncols * cell_w + (ncols - 1) * pad
    out = np.empty((H, W, 3), dtype=np.uint8)
    out[:] = np.asarray(background, dtype=np.uint8)
    for c, im in enumerate(checked):
        r, q = divmod(c, ncols)
        y = r * (cell_h + banner_h + pad)
        x = q * (cell_w + pad)
        if labels is not None:
            out[y:y + banner_h, x:x + cell_w] = _label_banner(cell_w, labels[c], banner_h)
        if im is not None:
            out[y + banner_h:y + banner_h + im.shape[0], x:x + im.shape[1]] = im
    return out
