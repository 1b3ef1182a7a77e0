"""Scale and orientation normalisation of scans, batched: centre, scale, PCA-align.

``x' = s R (x - c)``: centre ``c`` (mean or bounding-box centre of the valid points),
rotation ``R`` (principal axes of the points, or a rotation you give: the manual
override) and scale ``s`` (to a target RMS radius or bounding-box diagonal, or a fixed
factor). The :class:`SimilarityTransform` is returned so results can be mapped back.

PCA axes are ambiguous up to sign; the sign of each of the first two axes is chosen so
that the points' third moment along it is positive (the heavier tail points to +),
and the third axis completes a right-handed frame (``det R = +1``, never a mirror).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch

from smilfit.ops.linalg import batched_eigh

Tensor = torch.Tensor

CENTERS = ('mean', 'bbox', 'none')
SCALES = ('rms', 'bbox', 'none')


@dataclass
class SimilarityTransform:
    """``x' = scale * R (x - center)`` per scan.

    Attributes:
        rotation: (B, 3, 3); center: (B, 3); scale: (B,).
    """

    rotation: Tensor
    center: Tensor
    scale: Tensor

    def apply(self, points: Tensor) -> Tensor:
        """(B, P, 3) original -> normalised points."""
        return self.scale[:, None, None] * (points - self.center[:, None]) @ \
            self.rotation.transpose(1, 2)

    def inverse(self, points: Tensor) -> Tensor:
        """(B, P, 3) normalised -> original points."""
        return (points / self.scale[:, None, None]) @ self.rotation + self.center[:, None]

    def apply_normals(self, normals: Tensor) -> Tensor:
        """(B, P, 3) normals rotate with the points (scale does not change them)."""
        return normals @ self.rotation.transpose(1, 2)


def _masked_weights(points: Tensor, mask: Optional[Tensor]) -> Tensor:
    valid = torch.isfinite(points).all(-1)
    if mask is not None:
        if mask.shape != points.shape[:2]:
            raise ValueError(f'mask: expected {tuple(points.shape[:2])}, got '
                             f'{tuple(mask.shape)}')
        valid = valid & mask.to(torch.bool)
    counts = valid.sum(1)
    if bool((counts < 3).any()):
        bad = torch.nonzero(counts < 3).flatten().tolist()
        raise ValueError(f'scan(s) {bad[:10]} have fewer than 3 valid points; cannot '
                         'normalise them')
    return valid.to(points.dtype)


def principal_axes(points: Tensor, weights: Tensor) -> Tensor:
    """Rows = principal axes (largest variance first), sign-fixed, right-handed: (B, 3, 3).

    Args:
        points: (B, P, 3) centred points (zero where invalid); weights: (B, P) 0/1.
    """
    n = weights.sum(1)[:, None, None]
    cov = (points * weights[..., None]).transpose(1, 2) @ points / n
    _, vecs = batched_eigh(cov)  # ascending eigenvalues, vectors in columns
    axes = vecs.flip(-1).transpose(1, 2)  # rows, descending
    proj = points @ axes.transpose(1, 2)  # (B, P, 3)
    third = ((proj ** 3) * weights[..., None]).sum(1)  # (B, 3)
    sign = torch.where(third[:, :2] < 0, -1.0, 1.0).to(points.dtype)
    a0, a1 = axes[:, 0] * sign[:, :1], axes[:, 1] * sign[:, 1:2]
    return torch.stack([a0, a1, torch.cross(a0, a1, dim=-1)], dim=1)


def normalize_scans(points: Tensor, mask: Optional[Tensor] = None, center: str = 'mean',
                    scale: Union[str, float] = 'rms', target_size: float = 1.0,
                    align: bool = True, rotation: Optional[Tensor] = None,
                    axes: Sequence[int] = (0, 1, 2)) -> Tuple[Tensor, SimilarityTransform]:
    """Normalise a batch of scans.

    Args:
        points: (B, P, 3) points (padded; NaN or ``mask`` false = invalid).
        mask: (B, P) validity.
        center: ``'mean'``, ``'bbox'`` (centre of the bounding box in the aligned
            frame) or ``'none'``.
        scale: ``'rms'`` (RMS distance from the centre becomes ``target_size``),
            ``'bbox'`` (the aligned bounding box's diagonal becomes ``target_size``),
            ``'none'`` or a fixed factor.
        align: rotate the principal axes onto the coordinate axes.
        rotation: (3, 3) or (B, 3, 3) manual rotation used instead of PCA (rows: where
            each original axis-combination goes; ``x' = R x``).
        axes: output axis of the 1st, 2nd, 3rd principal direction (a permutation of
            0, 1, 2; an odd permutation flips the third axis so ``det R = +1``).

    Returns:
        ``(normalised points (B, P, 3) with invalid points unchanged, transform)``.
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f'points must be (B, P, 3), got {tuple(points.shape)}')
    if center not in CENTERS:
        raise ValueError(f'center must be one of {CENTERS}, got {center!r}')
    if isinstance(scale, str) and scale not in SCALES:
        raise ValueError(f'scale must be one of {SCALES} or a number, got {scale!r}')
    if sorted(axes) != [0, 1, 2]:
        raise ValueError(f'axes must be a permutation of (0, 1, 2), got {tuple(axes)}')
    w = _masked_weights(points, mask)
    valid = w > 0
    x = torch.where(valid[..., None], points, torch.zeros((), dtype=points.dtype,
                                                          device=points.device))
    B = points.shape[0]
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    mean = (x * w[..., None]).sum(1) / w.sum(1, keepdim=True)
    xm = torch.where(valid[..., None], x - mean[:, None], zero)
    if rotation is not None:
        R = torch.as_tensor(rotation, dtype=points.dtype, device=points.device)
        R = R.expand(B, 3, 3) if R.ndim == 2 else R
        if R.shape != (B, 3, 3):
            raise ValueError(f'rotation must be (3, 3) or ({B}, 3, 3), got {tuple(R.shape)}')
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        if not torch.allclose(R @ R.transpose(1, 2), eye.expand_as(R), atol=1e-5) or \
                bool((torch.linalg.det(R) < 0).any()):
            raise ValueError('rotation must be a proper rotation (orthonormal, det +1)')
    elif align:
        R = principal_axes(xm, w)
        perm = torch.empty(3, dtype=torch.long)
        perm[torch.as_tensor(list(axes))] = torch.arange(3)
        R = R[:, perm]
        if torch.linalg.det(R[:1]).item() < 0:  # an odd permutation mirrors: undo it
            R = torch.cat([R[:, :2], -R[:, 2:]], dim=1)
    else:
        R = torch.eye(3, dtype=points.dtype, device=points.device).expand(B, 3, 3)
    # Bounding boxes are taken in the rotated (output) frame.
    y = xm @ R.transpose(1, 2)
    big = torch.finfo(points.dtype).max
    lo = torch.where(valid[..., None], y, big).amin(1)
    hi = torch.where(valid[..., None], y, -big).amax(1)
    if center == 'mean':
        c = mean
    elif center == 'bbox':
        c = mean + (0.5 * (lo + hi))[:, None] @ R
        c = c[:, 0]
    else:
        c = x.new_zeros(B, 3)
    if isinstance(scale, str):
        if scale == 'rms':
            xc = torch.where(valid[..., None], x - c[:, None], zero)
            size = ((xc ** 2).sum(-1) * w).sum(1).div(w.sum(1)).sqrt()
        elif scale == 'bbox':
            size = (hi - lo).norm(dim=-1)
        else:
            size = None
        s = x.new_ones(B) if size is None else target_size / size.clamp_min(1e-30)
    else:
        if not float(scale) > 0:
            raise ValueError(f'scale factor must be > 0, got {scale}')
        s = x.new_full((B,), float(scale))
    tf = SimilarityTransform(rotation=R.contiguous(), center=c, scale=s)
    out = torch.where(valid[..., None], tf.apply(x), points)
    return out, tf


__all__ = ['SimilarityTransform', 'normalize_scans', 'principal_axes', 'CENTERS', 'SCALES']
