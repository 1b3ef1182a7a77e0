"""smilfit's z-buffer triangle rasteriser (torch, vectorised, no GPU needed): the one
hard-edged rasteriser behind the synthetic data generator (silhouettes, depth, shaded
images; :mod:`smilfit.datasets.synthetic`) and the fit visuals (overlays, videos;
:func:`smilfit.visualization.render_mesh`).

Not differentiable (the differentiable silhouettes are :mod:`.soft_rasterizer`). A 6.5k-face
mouse renders in a few milliseconds at 256 x 256 and a few tens of ms at 512 x 512 on one
CPU thread; the same code runs on CUDA tensors.

Conventions, the same as :func:`smilfit.cameras.project_points` (OpenCV):

- world -> camera ``x_cam = R @ X + t``; the camera looks along +z, x right, y down;
- pixel ``(row i, column j)`` has its centre at pixel coordinates ``(u, v) = (j, i)``;
- a pixel is covered by a triangle when its centre lies inside the projected triangle or
  on its boundary (all three screen-space barycentrics ``>= -eps``);
- among the triangles covering a pixel, the one with the smallest camera depth ``z`` at
  the pixel centre wins (depth interpolated perspective-correctly: ``1/z`` is affine in
  the image); the depth test compares float32 depths (surfaces closer than about 1e-7
  relative depth tie), ties go to the lower face index, so the result never depends on
  timing; the returned depth and barycentrics are float64.

Geometry the camera cannot see sensibly is handled, never drawn wrong:

- triangles crossing the ``near`` plane are **clipped** against it (into one or two
  triangles, whose barycentrics still refer to the original face); triangles entirely
  behind it are dropped;
- with lens distortion, vertices are projected through OpenCV's distortion model and
  each triangle is drawn with straight edges between its distorted vertices (exact at
  the vertices, a good approximation for the small triangles of a body mesh). Triangles
  with a vertex beyond the radius where the radial distortion polynomial folds back
  (``d r_d / d r <= 0``; there, far-away points would land inside the image) are dropped;
- degenerate triangles (zero projected area, non-finite vertices) are skipped.

How it is vectorised: every triangle's pixel bounding box is enumerated as flat candidate
arrays (no Python loop over triangles or pixels), in chunks of at most ``chunk_size``
candidates. The depth test is one ``scatter_reduce(amin)`` of a 64-bit key per candidate
whose high 32 bits are the float32 depth (positive floats order like their bit patterns)
and whose low 32 bits are the triangle index, so depth and winner are resolved together.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..cameras.projection import distort_normalized

__all__ = ['Rasterization', 'rasterize', 'distortion_fold_radius2', 'as_detached_tensor']

ArrayLike = Union[Tensor, np.ndarray, Sequence]
_INT64_MAX = torch.iinfo(torch.int64).max
_LOW32 = (1 << 32) - 1


@dataclass
class Rasterization:
    """What :func:`rasterize` returns (torch tensors on the input's device).

    Attributes:
        face_index: (H, W) int64 index into ``faces`` of the visible face, -1 for background.
        depth: (H, W) float64 camera depth ``z`` of the visible surface (model units),
            ``inf`` for background.
        bary: (H, W, 3) float64 perspective-correct barycentric coordinates of the pixel
            centre's surface point with respect to the visible face's three vertices
            (zeros on the background). ``(bary[..., None] * vertices[faces[face_index]]).sum(-2)``
            is the 3D point seen at each pixel.
    """

    face_index: Tensor
    depth: Tensor
    bary: Tensor

    @property
    def mask(self) -> Tensor:
        """(H, W) bool: pixels covered by any face."""
        return self.face_index >= 0


def as_detached_tensor(x: ArrayLike, name: str, dtype=torch.float64, device=None) -> Tensor:
    """``x`` (tensor or array-like) as a detached tensor of ``dtype`` on ``device``; a
    ``TypeError`` naming ``name`` where it is neither (renders never carry gradients)."""
    if isinstance(x, Tensor):
        return x.detach().to(device=device, dtype=dtype)
    try:
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
    except (TypeError, ValueError) as err:
        raise TypeError(f'{name} must be a tensor or array, got {type(x).__name__}') from err


def distortion_fold_radius2(dist: Optional[Tensor]) -> float:
    """Squared normalised radius up to which OpenCV's radial distortion is monotonic.

    ``r_d = r (1 + k1 r^2 + k2 r^4 + k3 r^6)`` turns back (``d r_d / d r <= 0``) beyond
    this radius; points further out would be drawn folded back into the image. Tangential
    terms are ignored (they are small where calibrations are valid).

    Args:
        dist: (4,) or (5,) ``(k1, k2, p1, p2[, k3])`` or None.

    Returns:
        The squared radius (``inf`` when the polynomial does not fold for ``r^2 <= 1e4``).
    """
    if dist is None:
        return float('inf')
    d = torch.as_tensor(dist, dtype=torch.float64).flatten().cpu()
    k1, k2 = float(d[0]), float(d[1])
    k3 = float(d[4]) if d.numel() > 4 else 0.0
    r2 = torch.logspace(-4, 4, 4001, dtype=torch.float64)
    slope = 1.0 + r2 * (3.0 * k1 + r2 * (5.0 * k2 + r2 * 7.0 * k3))
    bad = torch.nonzero(slope <= 0)
    if bad.numel() == 0:
        return float('inf')
    first = int(bad[0])
    return float(r2[first - 1]) if first > 0 else 0.0


def _clip_near(tri: Tensor, near: float) -> Tuple[Tensor, Tensor, Tensor, int]:
    """Clip camera-space triangles against the plane ``z = near``.

    Args:
        tri: (F, 3, 3) vertices in camera coordinates.
        near: the plane's depth.

    Returns:
        ``(tris (T, 3, 3), corner_bary (T, 3, 3), source (T,), n_whole)``: the kept or
        clipped triangles, the barycentric coordinates of each of their corners with
        respect to the source face's vertices, the source face index, and the number of
        leading triangles that were not clipped (their corner barycentrics are the
        identity).
    """
    dev, dt = tri.device, tri.dtype
    eye = torch.eye(3, dtype=dt, device=dev)
    d = tri[..., 2] - near                            # (F, 3) signed distance to the plane
    inside = d > 0
    n_in = inside.sum(1)
    whole = n_in == 3
    out_tris = [tri[whole]]
    out_bary = [eye.expand(int(whole.sum()), 3, 3)]
    out_src = [torch.nonzero(whole).flatten()]
    for count in (1, 2):
        sel = torch.nonzero(n_in == count).flatten()
        if sel.numel() == 0:
            continue
        # Roll each face so that its odd one out (the single inside vertex, or the single
        # outside one) comes first; a cyclic roll keeps the winding.
        odd = inside[sel] if count == 1 else ~inside[sel]
        first = odd.float().argmax(1)                 # (S,)
        order = (first[:, None] + torch.arange(3, device=dev)) % 3
        p = tri[sel].gather(1, order[..., None].expand(-1, -1, 3))   # (S, 3, 3)
        b = eye[order]                                                # (S, 3, 3) corners
        dd = d[sel].gather(1, order)                                  # (S, 3)

        def cut(i: int, j: int) -> Tuple[Tensor, Tensor]:
            """Point where edge i -> j crosses the plane, and its barycentrics."""
            s = (dd[:, i] / (dd[:, i] - dd[:, j]))[:, None]
            return p[:, i] + s * (p[:, j] - p[:, i]), b[:, i] + s * (b[:, j] - b[:, i])

        p01, b01 = cut(0, 1)
        p02, b02 = cut(0, 2)
        if count == 1:                                # keep the corner at vertex 0
            out_tris.append(torch.stack([p[:, 0], p01, p02], 1))
            out_bary.append(torch.stack([b[:, 0], b01, b02], 1))
            out_src.append(sel)
        else:                                         # a quad 1, 2, cut(2->0), cut(0->1)
            out_tris += [torch.stack([p[:, 1], p[:, 2], p02], 1),
                         torch.stack([p[:, 1], p02, p01], 1)]
            out_bary += [torch.stack([b[:, 1], b[:, 2], b02], 1),
                         torch.stack([b[:, 1], b02, b01], 1)]
            out_src += [sel, sel]
    return torch.cat(out_tris), torch.cat(out_bary), torch.cat(out_src), int(whole.sum())


def _edge_coefficients(x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Screen-space barycentrics as affine functions ``b_k(u, v) = a_k u + b_k v + c_k``.

    Args:
        x, y: (T, 3) pixel coordinates of the triangles' corners.

    Returns:
        ``(ca, cb, cc)`` each (T, 3), and the doubled signed area (T,).
    """
    x0, x1, x2 = x.unbind(1)
    y0, y1, y2 = y.unbind(1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    # b_k is opposite corner k: columns (1, 2, 0) and (2, 0, 1) of x and y (stacked, not
    # fancy-indexed, which torch does several times slower).
    xa, ya = torch.stack([x1, x2, x0], 1), torch.stack([y1, y2, y0], 1)
    xb, yb = torch.stack([x2, x0, x1], 1), torch.stack([y2, y0, y1], 1)
    a = area[:, None]
    return (ya - yb) / a, (xb - xa) / a, (xa * yb - xb * ya) / a, area


def rasterize(vertices: ArrayLike, faces: ArrayLike, K: ArrayLike, R: ArrayLike,
              t: ArrayLike, dist: Optional[ArrayLike] = None, *, height: int, width: int,
              near: float = 1e-6, eps: float = 1e-9,
              chunk_size: int = 1 << 15) -> Rasterization:
    """Rasterise a triangle mesh seen by one OpenCV camera, with a z-buffer.

    Args:
        vertices: (V, 3) world coordinates (model units).
        faces: (F, 3) vertex indices per triangle (any winding; nothing is culled).
        K: (3, 3) intrinsics in pixels.
        R: (3, 3) world -> camera rotation.
        t: (3,) world -> camera translation.
        dist: optional (5,) ``(k1, k2, p1, p2, k3)`` (or 4 values), OpenCV order.
        height, width: image size in pixels.
        near: clipping plane depth (camera z, model units); geometry in front of it is
            drawn, geometry behind it is clipped away.
        eps: tolerance of the inside test, in barycentric units (pixels exactly on a
            shared edge belong to both triangles; the depth test picks one).
        chunk_size: most candidate pixels held at once (memory is about
            ``chunk_size * 200`` bytes; small chunks stay in the CPU caches).

    Returns:
        :class:`Rasterization` (tensors on the vertices' device).

    Raises:
        ValueError: a shape is wrong or a face index is out of range (the message names
            the argument).
    """
    H, W = int(height), int(width)
    if H <= 0 or W <= 0:
        raise ValueError(f'rasterize: height and width must be positive, got {H} x {W}')
    device = vertices.device if isinstance(vertices, Tensor) else None
    v = as_detached_tensor(vertices, 'vertices', device=device)
    f = as_detached_tensor(faces, 'faces', dtype=torch.int64, device=device)
    K = as_detached_tensor(K, 'K', device=device)
    R = as_detached_tensor(R, 'R', device=device)
    t = as_detached_tensor(t, 't', device=device).reshape(-1)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f'rasterize: vertices must be (V, 3), got {tuple(v.shape)}')
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f'rasterize: faces must be (F, 3), got {tuple(f.shape)}')
    if f.numel() and (int(f.min()) < 0 or int(f.max()) >= v.shape[0]):
        raise ValueError(f'rasterize: faces index vertices 0..{v.shape[0] - 1}, got indices '
                         f'{int(f.min())}..{int(f.max())}')
    if K.shape != (3, 3) or R.shape != (3, 3) or t.shape != (3,):
        raise ValueError(f'rasterize: K and R must be (3, 3) and t (3,), got '
                         f'{tuple(K.shape)}, {tuple(R.shape)}, {tuple(t.shape)}')
    d = None if dist is None else as_detached_tensor(dist, 'dist', device=device).reshape(-1)
    if d is not None and d.numel() not in (4, 5):
        raise ValueError(f'rasterize: dist must have 4 or 5 coefficients, got {d.numel()}')
    if d is not None and not bool((d != 0).any()):
        d = None                     # all-zero coefficients: the same pixels, no fold test

    cam = v @ R.T + t                                                 # (V, 3)
    tri, corner_bary, source, n_whole = _clip_near(cam[f], float(near))   # (T, 3, 3)
    xy = tri[..., :2] / tri[..., 2:]                                  # normalised
    keep = torch.isfinite(tri).all(dim=(1, 2))
    if d is not None:
        keep &= ((xy * xy).sum(-1) <= distortion_fold_radius2(d)).all(1)
        xy = distort_normalized(xy, d)
    u = K[0, 0] * xy[..., 0] + K[0, 1] * xy[..., 1] + K[0, 2]         # (T, 3) pixels
    w = K[1, 1] * xy[..., 1] + K[1, 2]
    ca, cb, cc, area = _edge_coefficients(u, w)
    # Bounding boxes of pixel centres, clamped to the image before the integer cast (a
    # vertex close to the near plane projects very far out).
    # (Element-wise minimum/maximum of the three columns: torch's reductions over a
    # dimension of size 3 are several times slower.)
    x0 = torch.minimum(torch.minimum(u[:, 0], u[:, 1]), u[:, 2]).clamp(-1, W).ceil()
    x1 = torch.maximum(torch.maximum(u[:, 0], u[:, 1]), u[:, 2]).clamp(-1, W).floor() \
        .clamp(max=W - 1)
    y0 = torch.minimum(torch.minimum(w[:, 0], w[:, 1]), w[:, 2]).clamp(-1, H).ceil()
    y1 = torch.maximum(torch.maximum(w[:, 0], w[:, 1]), w[:, 2]).clamp(-1, H).floor() \
        .clamp(max=H - 1)
    x0, y0 = x0.clamp(min=0), y0.clamp(min=0)
    keep &= torch.isfinite(area) & (area.abs() > 1e-12) & (x1 >= x0) & (y1 >= y0)
    ids = torch.nonzero(keep).flatten()

    key = torch.full((H * W,), _INT64_MAX, dtype=torch.int64, device=v.device)
    if ids.numel():
        # Per kept triangle, one row each of: the screen-space barycentrics b0, b1 at the
        # bounding box's first pixel and their steps along u and v (b2 = 1 - b0 - b1),
        # 1/z at corner 2 and its steps along b0 and b1 (1/z is affine in b), the box
        # width and the flat index of its first pixel. Separate contiguous rows, gathered
        # with index_select: torch is several times slower on (N, k) columns.
        bx0, by0 = x0[ids], y0[ids]
        bw = x1[ids] - bx0 + 1
        counts = (bw * (y1[ids] - by0 + 1)).long()
        ca, cb, cc = ca[ids], cb[ids], cc[ids]
        at_origin = ca * bx0[:, None] + cb * by0[:, None] + cc
        inv_z = 1.0 / tri[ids, :, 2]
        table = torch.stack([at_origin[:, 0], at_origin[:, 1], ca[:, 0], ca[:, 1], cb[:, 0],
                             cb[:, 1], inv_z[:, 2], inv_z[:, 0] - inv_z[:, 2],
                             inv_z[:, 1] - inv_z[:, 2], bw, by0 * W + bx0])
        ends = torch.cumsum(counts, 0)
        firsts = ends - counts
        total = int(ends[-1])
        for lo in range(0, total, chunk_size):
            # Candidates [lo, hi) of the concatenated boxes, whichever triangles they
            # belong to (a huge triangle's box is spread over several chunks).
            hi = min(lo + chunk_size, total)
            first = int(torch.searchsorted(ends, lo, right=True))
            last = int(torch.searchsorted(ends, hi - 1, right=True))
            span = torch.arange(first, last + 1, device=v.device)
            local = torch.repeat_interleave(
                span, ends[first:last + 1].clamp(max=hi) - firsts[first:last + 1].clamp(min=lo))
            o0, o1, a0, a1, c0, c1, iz, dz0, dz1, width_, origin = (
                row.index_select(0, local) for row in table)
            # Candidate k of triangle f is pixel (k mod width, k div width) of f's box.
            offs = (torch.arange(lo, hi, device=v.device)
                    - firsts.index_select(0, local)).double()
            dy = torch.floor(offs / width_)  # exact: integers well below 2**53
            dx = offs - dy * width_
            b0 = o0 + a0 * dx + c0 * dy
            b1 = o1 + a1 * dx + c1 * dy
            inside = (b0 >= -eps) & (b1 >= -eps) & (b0 + b1 <= 1.0 + eps)
            depth = 1.0 / (iz + b0 * dz0 + b1 * dz1)
            # float32 depth bits (monotonic for positive floats) above the triangle number;
            # candidates outside their triangle get the "empty" key, which never wins.
            bits = depth.float().view(torch.int32).long()
            cand = ((bits << 32) | local).masked_fill_(~inside, _INT64_MAX)
            key.scatter_reduce_(0, (origin + dy * W + dx).long(), cand, reduce='amin')

    covered = key != _INT64_MAX
    face_index = torch.full((H * W,), -1, dtype=torch.int64, device=v.device)
    depth_img = torch.full((H * W,), float('inf'), dtype=torch.float64, device=v.device)
    bary_img = torch.zeros((H * W, 3), dtype=torch.float64, device=v.device)
    pix = torch.nonzero(covered).flatten()
    if pix.numel():
        win = key.index_select(0, pix) & _LOW32                      # kept-triangle number
        px, py = (pix % W).double(), (pix // W).double()
        # The winners' barycentrics again, in full precision, perspective-correct.
        b = (ca.index_select(0, win) * px[:, None] + cb.index_select(0, win) * py[:, None]
             + cc.index_select(0, win)) * inv_z.index_select(0, win)
        total = b[:, 0] + b[:, 1] + b[:, 2]
        b = b / total[:, None]
        full = ids.index_select(0, win)                               # clipped-triangle index
        if tri.shape[0] > n_whole:              # something was clipped: map its corners
            b = torch.bmm(b[:, None], corner_bary.index_select(0, full))[:, 0]
        # pix lists the covered pixels in order: masked_scatter_ fills them in that order.
        depth_img.masked_scatter_(covered, 1.0 / total)
        bary_img.masked_scatter_(covered[:, None], b)
        face_index.masked_scatter_(covered, source.index_select(0, full))
    return Rasterization(face_index=face_index.view(H, W), depth=depth_img.view(H, W),
                         bary=bary_img.view(H, W, 3))
