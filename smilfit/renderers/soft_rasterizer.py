"""Soft silhouettes of screen-space triangles (SoftRas-style), in plain PyTorch.

The core of :class:`~smilfit.renderers.SoftSilhouetteRenderer`, working on triangles
that are already projected to pixels. Shapes: N images (samples x views, flattened),
V vertices, F faces, H x W pixels.

**The model** (Liu et al., *Soft Rasterizer*, ICCV 2019, silhouette part). For a pixel
centre ``p`` and a projected triangle ``f`` let ``d_f(p)`` be the Euclidean distance from
``p`` to the triangle's boundary, in pixels, and ``s = +1`` inside the triangle, ``-1``
outside. Then

    x_f(p) = s d_f(p)^2 / sigma,        D_f(p) = sigmoid(x_f(p)),
    silhouette(p) = 1 - prod_f (1 - D_f(p)) = 1 - exp(-sum_f softplus(x_f(p))),

because ``-log(1 - sigmoid(x)) = softplus(x)``. The sum form is what makes the renderer
memory-bounded: contributions of any subset of (face, pixel) pairs simply add, so pairs
are processed in chunks of bounded size and accumulated into one (N, H, W) image.
``sigma`` is in **squared pixels** (SoftRas and pytorch3d state it in squared NDC units:
``sigma_px = sigma_ndc * (min(H, W) / 2)^2``).

**Culling.** Where ``D_f(p) < cutoff`` the pair is dropped (``x < x_cut = -log(1/cutoff -
1)``, i.e. ``d^2 > sigma log(1/cutoff - 1)`` outside the triangle), as pytorch3d's
``blur_radius = log(1/cutoff - 1) sigma`` does. To keep the silhouette continuous at the
cutoff, a pair adds ``softplus(max(x, x_cut)) - softplus(x_cut)`` (less than ``cutoff``
away from ``softplus(x)``, exactly 0 below the cutoff). A face therefore reaches only the pixels
of its screen bounding box grown by ``margin = sqrt(sigma log(1/cutoff - 1))`` pixels and
clipped to the image; invalid faces (behind the near plane, non-finite) reach none.
This is binning at the finest grain: every face visits only its own pixel box, never a
whole tile. Faces are grouped by box size into buckets of fixed window sizes (1, 2, 3,
4, 6, 8, 12, ... pixels per side, so a window wastes less than half of itself), and one
bucket is processed as dense (faces, rows, columns) tensors in which every face's data
broadcasts over its window: no per-pixel gathers. Windows start at their face's box
corner; the (N, H, W) accumulator is padded by the largest overrun past the image and
cropped, so no per-pixel masks are needed (window pixels past a box are beyond the
cutoff and add exactly 0). A bucket is split into chunks of at
most ``max_pairs`` (face, pixel) pairs (a face whose window alone is larger is split
into row bands), which bounds the memory of both passes.

**Geometry per pair.** For edge ``k`` from ``a_k`` with unit direction ``u_k``, length
``L_k`` and unit normal ``n_k`` pointing into the triangle, ``s_k = u_k . (p - a_k)`` and
``l_k = n_k . (p - a_k)`` are affine in the pixel position (so they are built from a
per-face value at the window origin plus a row term and a column term; lengths are
measured in units of ``sqrt(sigma)`` pixels so that ``d^2`` comes out divided by sigma). The squared
distance to the segment is ``l_k^2 + (s_k - clamp(s_k, 0, L_k))^2``; ``d^2`` is the
smallest over the three edges (for a pixel inside, the nearest edge line is touched
within its segment, so this is also the inside distance), and the pixel is inside when
all ``l_k > 0``. A degenerate triangle (zero area) has no inside.

**Gradients** come from a custom ``autograd.Function`` whose backward pass recomputes
each chunk and reduces the analytic per-pair derivative (see
:func:`_window_triangle_grad`) to the chunk's triangles, so no per-pair tensor outlives
its chunk in either pass. The inside/outside switch carries no gradient;
``x`` is continuous across edges because ``d = 0`` there.
"""
from __future__ import annotations

import math
from typing import List, NamedTuple, Optional

import torch

__all__ = ['cutoff_logit', 'cutoff_margin', 'window_sizes', 'FaceBoxes', 'face_boxes',
           'soft_silhouette_logsum', 'rasterize_soft_silhouettes']


def cutoff_logit(cutoff: float) -> float:
    """``x`` below which ``sigmoid(x) < cutoff``: ``-log(1 / cutoff - 1)``."""
    if not 0.0 < cutoff < 0.5:
        raise ValueError(f'cutoff must be in (0, 0.5), got {cutoff!r}')
    return -math.log(1.0 / cutoff - 1.0)


def cutoff_margin(sigma: float, cutoff: float) -> float:
    """Pixels beyond a triangle's edge where its probability ``D`` falls to ``cutoff``:
    ``sqrt(sigma log(1 / cutoff - 1))``."""
    return math.sqrt(sigma * -cutoff_logit(cutoff))


def window_sizes(limit: int) -> List[int]:
    """Window side lengths 1, 2, 3, 4, 6, 8, 12, 16, ... (ratio <= 1.5) up to ``limit``."""
    sizes, power = [1, 2, 3], 4
    while sizes[-1] < limit:
        sizes += [power, power * 3 // 2]
        power *= 2
    cut = next(i for i, s in enumerate(sizes) if s >= limit)
    return sizes[:cut + 1]


class FaceBoxes(NamedTuple):
    """Pixel boxes of every (image, face) row: columns ``col0 .. col0 + width - 1``."""

    col0: torch.Tensor  #: (N * F,) long, first column.
    row0: torch.Tensor  #: (N * F,) long, first row.
    width: torch.Tensor  #: (N * F,) long, box width (0 = reaches no pixel).
    height: torch.Tensor  #: (N * F,) long, box height.


def face_boxes(tri: torch.Tensor, face_valid: torch.Tensor, height: int, width: int,
               margin: float) -> FaceBoxes:
    """The pixel box each face can reach: its bounding box grown by ``margin``, clipped.

    Args:
        tri: (R, 3, 2) triangles in pixels (R = N * F rows).
        face_valid: (R,) bool; invalid faces get empty boxes.
        height, width: image size (pixels).
        margin: growth (pixels), see :func:`cutoff_margin`.
    """
    low, high = tri.amin(1), tri.amax(1)  # (R, 2) each
    # Clamp in floating point before converting, so huge or off-screen coordinates
    # become empty boxes instead of overflowing the integer conversion.
    c0 = torch.ceil(low[:, 0] - margin).clamp(0, width).long()
    c1 = torch.floor(high[:, 0] + margin).clamp(-1, width - 1).long()
    r0 = torch.ceil(low[:, 1] - margin).clamp(0, height).long()
    r1 = torch.floor(high[:, 1] + margin).clamp(-1, height - 1).long()
    zero = torch.zeros_like(c0)
    box_w = torch.where(face_valid, (c1 - c0 + 1).clamp(min=0), zero)
    box_h = torch.where(face_valid, (r1 - r0 + 1).clamp(min=0), zero)
    empty = (box_w == 0) | (box_h == 0)
    return FaceBoxes(c0, r0, torch.where(empty, zero, box_w), torch.where(empty, zero, box_h))


class _Chunk(NamedTuple):
    """Faces ``rows`` (R,) drawn in windows of ``band`` rows from ``row_offset``, ``width``
    columns."""

    rows: torch.Tensor
    row_offset: int
    band: int
    width: int


class _Plan(NamedTuple):
    """How to draw all faces: the chunks and the padding of the accumulator image."""

    chunks: List[_Chunk]
    pad_rows: int  #: rows below the image that windows may reach.
    pad_cols: int  #: columns right of the image that windows may reach.


def _plan(boxes: FaceBoxes, height: int, width: int, max_pairs: int) -> _Plan:
    """Bucket faces by window size and cut the buckets into chunks of <= max_pairs pairs.

    A window starts at its face's box corner and may run past the box (it is rounded up
    to a bucket size); pixels past the box are beyond the cutoff distance and add 0, so
    only windows running off the image need room: the accumulator is padded by the
    largest such overrun and cropped afterwards.
    """
    sizes = torch.tensor(window_sizes(max(height, width)), device=boxes.width.device)
    n = sizes.numel()
    iw = torch.searchsorted(sizes, boxes.width)
    ih = torch.searchsorted(sizes, boxes.height)
    key = torch.where(boxes.width > 0, ih * n + iw, torch.full_like(iw, n * n))
    present = torch.nonzero(torch.bincount(key, minlength=n * n + 1)[:n * n]).flatten()
    chunks, pad_rows, pad_cols = [], 0, 0
    for k in present.tolist():
        h, w = int(sizes[k // n]), int(sizes[k % n])
        rows = torch.nonzero(key == k).flatten()
        pad_rows = max(pad_rows, int(boxes.row0[rows].max()) + h - height)
        pad_cols = max(pad_cols, int(boxes.col0[rows].max()) + w - width)
        band = max(1, min(h, max_pairs // w))
        per_chunk = max(1, max_pairs // (band * w))
        for start in range(0, rows.numel(), per_chunk):
            for offset in range(0, h, band):
                chunks.append(_Chunk(rows[start:start + per_chunk], offset,
                                     min(band, h - offset), w))
    return _Plan(chunks, pad_rows, pad_cols)


class _EdgeFrames(NamedTuple):
    """Per face and edge (all (R, 3), lengths in units of ``sqrt(sigma)`` pixels): unit
    direction ``u``, unit normal ``n`` into the triangle, edge length, and the along-edge
    and normal coordinates ``s0``, ``l0`` of the window's first pixel."""

    ux: torch.Tensor
    uy: torch.Tensor
    nx: torch.Tensor
    ny: torch.Tensor
    length: torch.Tensor
    s0: torch.Tensor
    l0: torch.Tensor
    solid: torch.Tensor  #: (R,) bool: non-zero area (degenerate triangles have no inside).


def _doubled_area(edges: torch.Tensor) -> torch.Tensor:
    """(R,) twice the signed area from (R, 3, 2) edge vectors: ``e_0 x e_1``."""
    return edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]


def _edge_frames(tri: torch.Tensor, col0: torch.Tensor, row0: torch.Tensor,
                 unit: float) -> _EdgeFrames:
    """Edge frames of (R, 3, 2) pixel triangles, distances scaled by ``unit``
    (``1 / sqrt(sigma)``, so that squared distances come out divided by sigma)."""
    dtype = tri.dtype
    e = tri.roll(-1, dims=1) - tri
    len2 = (e * e).sum(-1)  # (R, 3)
    ok = len2 > 0
    length = torch.sqrt(torch.where(ok, len2, torch.ones_like(len2)))
    # A zero-length edge gets an arbitrary direction: its distance is then |p - a|.
    ux = torch.where(ok, e[..., 0] / length, torch.ones_like(length))
    uy = torch.where(ok, e[..., 1] / length, torch.zeros_like(length))
    length = torch.where(ok, length, torch.zeros_like(length))
    orient = torch.sign(_doubled_area(e))
    flip = torch.where(orient == 0, torch.ones_like(orient), orient)[:, None]
    # With y pointing down, u turned by +90 degrees points into a triangle of positive
    # signed area; flip for the other winding.
    nx, ny = -uy * flip, ux * flip
    ox = (col0.to(dtype)[:, None] - tri[..., 0]) * unit  # p - a at the window's first pixel
    oy = (row0.to(dtype)[:, None] - tri[..., 1]) * unit
    return _EdgeFrames(ux, uy, nx, ny, length * unit, ux * ox + uy * oy, nx * ox + ny * oy,
                       orient != 0)


def _window_offsets(chunk: _Chunk, device, dtype, unit: float):
    """Column offsets (W,) and row offsets (band, 1), scaled by ``unit``."""
    dx = torch.arange(chunk.width, device=device, dtype=dtype) * unit
    dy = torch.arange(chunk.row_offset, chunk.row_offset + chunk.band, device=device,
                      dtype=dtype)[:, None] * unit
    return dx, dy


class _Edge(NamedTuple):
    """One edge's (R, band, W) coordinates over the windows (units of sqrt(sigma))."""

    l: torch.Tensor  #: signed distance to the edge's line, positive inside.
    clamped: torch.Tensor  #: along-edge coordinate of the nearest segment point, [0, L].
    excess: torch.Tensor  #: along-edge coordinate minus ``clamped``.
    d2: torch.Tensor  #: squared distance to the segment, ``l^2 + excess^2``.


def _edge(frames: _EdgeFrames, k: int, dx: torch.Tensor, dy: torch.Tensor) -> _Edge:
    def affine(base, cx, cy):
        # (R, 1, 1) + (R, 1, W) column term -> (R, 1, W); + (R, band, 1) row term.
        return (base[:, k, None, None] + cx[:, k, None, None] * dx) + cy[:, k, None, None] * dy
    s = affine(frames.s0, frames.ux, frames.uy)
    lk = affine(frames.l0, frames.nx, frames.ny)
    clamped = torch.clamp(s, min=torch.zeros_like(frames.length[:, k, None, None]),
                          max=frames.length[:, k, None, None])
    excess = s - clamped
    return _Edge(lk, clamped, excess, torch.addcmul(lk * lk, excess, excess))


def _window_logits(frames: _EdgeFrames, dx: torch.Tensor, dy: torch.Tensor,
                   degenerate: bool):
    """``x = s d^2 / sigma`` over the windows (R, band, W), the per-edge data and the
    smallest ``l`` (positive exactly inside). ``degenerate``: some triangle of the image
    batch has zero area (decided once per render, not per chunk)."""
    edges = [_edge(frames, k, dx, dy) for k in range(3)]
    d2 = torch.minimum(torch.minimum(edges[0].d2, edges[1].d2), edges[2].d2)
    l_min = torch.minimum(torch.minimum(edges[0].l, edges[1].l), edges[2].l)
    x = torch.copysign(d2, l_min)  # inside (all l > 0): +d^2, outside: -d^2
    if degenerate:
        x = torch.where(frames.solid[:, None, None], x, -d2)
    return x, edges, d2, l_min


def _window_values(tri: torch.Tensor, col0: torch.Tensor, row0: torch.Tensor, chunk: _Chunk,
                   unit: float, x_cut: float, degenerate: bool) -> torch.Tensor:
    """(R, band, W) ``softplus(max(x, x_cut)) - softplus(x_cut)``: a face's share of
    ``-log(1 - silhouette)``, exactly 0 below the cutoff and continuous at it."""
    dx, dy = _window_offsets(chunk, tri.device, tri.dtype, unit)
    x = _window_logits(_edge_frames(tri, col0, row0, unit), dx, dy, degenerate)[0]
    return torch.nn.functional.softplus(x.clamp(min=x_cut)) - math.log1p(math.exp(x_cut))


def _window_triangle_grad(tri: torch.Tensor, col0: torch.Tensor, row0: torch.Tensor,
                          chunk: _Chunk, unit: float, x_cut: float, degenerate: bool,
                          grad_value: torch.Tensor) -> torch.Tensor:
    """(R, 3, 2) gradient w.r.t. the triangles of ``sum(grad_value * values)``.

    Per pair, ``dL / d(d^2 / sigma) = grad * sigmoid(x) * sign`` above the cutoff. Only
    the nearest edge ``(a_k, a_{k+1})`` moves ``d^2``: with ``r = p - q = excess u + l n``
    the vector from the nearest point ``q = a_k + t (a_{k+1} - a_k)``,
    ``d d^2 / d a_k = -2 (1 - t) r`` and ``d d^2 / d a_{k+1} = -2 t r`` (``t`` minimises
    the distance, so its own derivative drops out; ``t excess`` is the positive part of
    ``excess`` because ``t`` is 1 where the nearest point is the segment's end). Summing
    over a window leaves four sums per edge.
    """
    dx, dy = _window_offsets(chunk, tri.device, tri.dtype, unit)
    frames = _edge_frames(tri, col0, row0, unit)
    x, edges, d2, l_min = _window_logits(frames, dx, dy, degenerate)
    sign = torch.sign(l_min)  # dx / d(d^2 / sigma); 0 only on an edge, where r = 0
    if degenerate:
        sign = torch.where(frames.solid[:, None, None], sign, -torch.ones_like(sign))
    w = grad_value * torch.sigmoid(x)
    w = torch.where(x > x_cut, w, torch.zeros_like(w)) * sign
    grad = torch.zeros_like(tri)
    remaining = w
    inv_length = torch.where(frames.length > 0, 1.0 / torch.where(
        frames.length > 0, frames.length, torch.ones_like(frames.length)),
        torch.zeros_like(frames.length))
    for k, edge in enumerate(edges):
        # Each pixel's weight goes to its nearest edge only (the first one on ties).
        wk = torch.where(edge.d2 == d2, remaining, torch.zeros_like(remaining))
        if k < 2:
            remaining = remaining - wk
        wl = wk * edge.l
        sum_ex = (wk * edge.excess).sum((1, 2))
        sum_ex_t = (wk * edge.excess.clamp(min=0.0)).sum((1, 2))
        sum_l = wl.sum((1, 2))
        sum_l_t = (wl * edge.clamped).sum((1, 2)) * inv_length[:, k]
        u = torch.stack([frames.ux[:, k], frames.uy[:, k]], -1)
        n = torch.stack([frames.nx[:, k], frames.ny[:, k]], -1)
        grad[:, k] -= (sum_ex - sum_ex_t)[:, None] * u + (sum_l - sum_l_t)[:, None] * n
        grad[:, (k + 1) % 3] -= sum_ex_t[:, None] * u + sum_l_t[:, None] * n
    # d(d^2 / sigma) / d(pixels) = 2 r unit (r in units of sqrt(sigma)).
    return grad * (2.0 * unit)


def _pixel_index(image: torch.Tensor, col0: torch.Tensor, row0: torch.Tensor, chunk: _Chunk,
                 height: int, width: int) -> torch.Tensor:
    """(R, band, W) flat indices into the padded (N, height, width) accumulator."""
    base = (image * height + row0 + chunk.row_offset) * width + col0  # (R,)
    dy = torch.arange(chunk.band, device=col0.device)[:, None] * width
    dx = torch.arange(chunk.width, device=col0.device)
    return (base[:, None, None] + dy) + dx


class _SoftSilhouetteLogSum(torch.autograd.Function):
    """``sum_f`` of every face's share of ``-log(1 - silhouette)`` per pixel,
    differentiable in the screen vertices."""

    @staticmethod
    def forward(ctx, points, faces, face_valid, height, width, sigma, cutoff, max_pairs):
        N, V, _ = points.shape
        F = faces.shape[0]
        x_cut = cutoff_logit(cutoff)
        unit = 1.0 / math.sqrt(sigma)
        tri = points.detach()[:, faces].reshape(N * F, 3, 2)
        boxes = face_boxes(tri, face_valid.reshape(-1), height, width,
                           cutoff_margin(sigma, cutoff))
        plan = _plan(boxes, height, width, max_pairs)
        degenerate = bool((_doubled_area(tri.roll(-1, dims=1) - tri) == 0).any())
        Hp, Wp = height + plan.pad_rows, width + plan.pad_cols
        image = torch.div(torch.arange(N * F, device=points.device), F, rounding_mode='floor')
        logsum = points.new_zeros(N * Hp * Wp)
        for chunk in plan.chunks:
            col0, row0 = boxes.col0[chunk.rows], boxes.row0[chunk.rows]
            value = _window_values(tri[chunk.rows], col0, row0, chunk, unit, x_cut,
                                   degenerate)
            index = _pixel_index(image[chunk.rows], col0, row0, chunk, Hp, Wp)
            logsum.index_add_(0, index.reshape(-1), value.reshape(-1))
        ctx.save_for_backward(tri, faces, image, boxes.col0, boxes.row0)
        ctx.plan = plan
        ctx.meta = (N, V, F, height, width, unit, x_cut, degenerate)
        return logsum.view(N, Hp, Wp)[:, :height, :width]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logsum):
        tri, faces, image, col0_all, row0_all = ctx.saved_tensors
        N, V, F, height, width, unit, x_cut, degenerate = ctx.meta
        plan = ctx.plan
        Hp, Wp = height + plan.pad_rows, width + plan.pad_cols
        # Zero gradient on the padding, so windows running off the image read zeros.
        grad_flat = torch.nn.functional.pad(grad_logsum, (0, plan.pad_cols, 0, plan.pad_rows))
        grad_flat = grad_flat.reshape(-1)
        grad_tri = torch.zeros_like(tri)  # (N * F, 3, 2)
        for chunk in plan.chunks:
            col0, row0 = col0_all[chunk.rows], row0_all[chunk.rows]
            index = _pixel_index(image[chunk.rows], col0, row0, chunk, Hp, Wp)
            grad_c = _window_triangle_grad(tri[chunk.rows], col0, row0, chunk, unit, x_cut,
                                           degenerate, grad_flat[index])
            grad_tri.index_add_(0, chunk.rows, grad_c)
        grad_points = grad_tri.new_zeros(N, V, 2)
        grad_points.index_add_(1, faces.reshape(-1), grad_tri.view(N, F * 3, 2))
        return grad_points, None, None, None, None, None, None, None


def soft_silhouette_logsum(points: torch.Tensor, faces: torch.Tensor, face_valid: torch.Tensor,
                           height: int, width: int, sigma: float, cutoff: float = 1e-4,
                           max_pairs: int = 1 << 16) -> torch.Tensor:
    """``sum_f softplus(s d^2 / sigma)`` per pixel (the negative log of ``1 - silhouette``).

    Args:
        points: (N, V, 2) projected vertices, pixels (OpenCV convention: pixel centres at
            integer ``(column, row)``), finite wherever a valid face uses them.
        faces: (F, 3) long.
        face_valid: (N, F) bool, faces to draw per image.
        height, width: output size in pixels.
        sigma: sharpness, squared pixels.
        cutoff: probability below which a (face, pixel) pair is dropped.
        max_pairs: (face, pixel) pairs per chunk; bounds the working memory of both
            passes (about 100 bytes per pair in float32).

    Returns:
        (N, H, W) non-negative sums, differentiable in ``points``.
    """
    return _SoftSilhouetteLogSum.apply(points, faces, face_valid, int(height), int(width),
                                       float(sigma), float(cutoff), int(max_pairs))


def rasterize_soft_silhouettes(points: torch.Tensor, faces: torch.Tensor, height: int,
                               width: int, sigma: float = 1.0, cutoff: float = 1e-4,
                               face_valid: Optional[torch.Tensor] = None,
                               max_pairs: int = 1 << 16) -> torch.Tensor:
    """Soft silhouettes of screen-space meshes: ``1 - exp(-sum_f softplus(x_f))``.

    Args:
        points: (N, V, 2) projected vertices in pixels.
        faces: (F, 3) long vertex indices.
        height, width: image size in pixels.
        sigma: sharpness in squared pixels (> 0).
        cutoff: see :func:`soft_silhouette_logsum`.
        face_valid: (N, F) bool or None (all faces).
        max_pairs: chunk size, see :func:`soft_silhouette_logsum`.

    Returns:
        (N, H, W) soft silhouettes in [0, 1].
    """
    if face_valid is None:
        face_valid = torch.ones(points.shape[0], faces.shape[0], dtype=torch.bool,
                                device=points.device)
    logsum = soft_silhouette_logsum(points, faces, face_valid, height, width, sigma, cutoff,
                                    max_pairs)
    return -torch.expm1(-logsum)
