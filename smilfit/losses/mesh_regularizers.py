"""Regularisers for free-form per-vertex offsets on a fixed mesh topology.

A registration that goes beyond pose and shape adds a per-vertex offset field
``o`` (B, V, 3) to the shaped rest mesh ``x`` (V, 3) or (B, V, 3) before skinning.
These losses keep that field smooth and the deformed mesh ``x + o`` well-formed:

- :class:`EdgeLengthRegularizer`: offsets of neighbouring vertices agree
  (``'offset_difference'``) or edge lengths of ``x + o`` stay those of ``x``
  (``'length_change'``);
- :class:`LaplacianRegularizer`: the uniform Laplacian of the offsets is small
  (offsets are locally linear: fine detail, no spikes);
- :class:`MeshNormalConsistencyRegularizer`: adjacent faces of ``x + o`` stay as
  parallel as in ``x`` (``'relative'``) or as parallel as possible (``'absolute'``,
  PyTorch3D's ``mesh_normal_consistency``).

Topology (edges, face pairs) is precomputed once from the faces, given directly or
through ``model_data`` (a ``BodyModelData``, ``SMILModel`` or model file path). Every
loss returns one value per sample (B,) and averages over edges / vertices / face
pairs, so the weight does not depend on the mesh resolution.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from ..registry import LOSSES
from ..ops.normals import face_normals
from .utils import ArrayLike, BaseLoss, check_choice, resolve_model_data

Tensor = torch.Tensor

EDGE_LENGTH_MODES = ('offset_difference', 'length_change')
NORMAL_CONSISTENCY_MODES = ('relative', 'absolute')


# ------------------------------------------------------------------ topology
def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """(F, 3) faces -> (E, 2) unique undirected edges, smaller index first."""
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e.sort(axis=1)
    return np.unique(e, axis=0)


def adjacent_face_pairs(faces: np.ndarray) -> np.ndarray:
    """(F, 3) faces -> (Q, 2) pairs of faces that share an edge (manifold edges only).

    Edges shared by more than two faces (non-manifold) contribute every pair.
    """
    f = np.asarray(faces, dtype=np.int64)
    F = f.shape[0]
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e.sort(axis=1)
    owner = np.tile(np.arange(F), 3)
    order = np.lexsort((e[:, 1], e[:, 0]))
    e, owner = e[order], owner[order]
    same = np.all(e[1:] == e[:-1], axis=1)
    pairs = [np.stack([owner[:-1][same], owner[1:][same]], axis=1)]
    # Runs of three or more faces on one edge: also pair non-neighbouring entries.
    lag = 2
    while True:
        if e.shape[0] <= lag:
            break
        same_lag = np.all(e[lag:] == e[:-lag], axis=1)
        if not same_lag.any():
            break
        pairs.append(np.stack([owner[:-lag][same_lag], owner[lag:][same_lag]], axis=1))
        lag += 1
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def resolve_faces(faces: Optional[ArrayLike], model_data, name: str) -> np.ndarray:
    """Exactly one of ``faces`` (F, 3) or ``model_data`` -> (F, 3) int64 faces."""
    if (faces is None) == (model_data is None):
        raise ValueError(f'{name}: give exactly one of faces or model_data')
    if faces is None:
        faces = resolve_model_data(model_data).faces
    if isinstance(faces, torch.Tensor):
        faces = faces.detach().cpu().numpy()
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in 'iu':
        raise ValueError(f'{name}: faces must be an integer (F, 3) array, got '
                         f'{f.dtype} {f.shape}')
    if f.size and f.min() < 0:
        raise ValueError(f'{name}: faces hold negative vertex indices')
    return f.astype(np.int64)


def _check_offsets(offsets: Tensor, num_vertices: int, name: str) -> None:
    if offsets.ndim != 3 or offsets.shape[-1] != 3:
        raise ValueError(f'{name}: offsets must be (B, V, 3), got {tuple(offsets.shape)}')
    if offsets.shape[1] < num_vertices:
        raise ValueError(f'{name}: offsets have {offsets.shape[1]} vertices but the faces '
                         f'index up to {num_vertices - 1}')


def _base_like(base: Optional[Tensor], offsets: Tensor, name: str) -> Tensor:
    if base is None:
        raise ValueError(f'{name}: this mode needs base_vertices (V, 3) or (B, V, 3)')
    base = torch.as_tensor(base).to(dtype=offsets.dtype, device=offsets.device)
    if base.ndim == 2:
        base = base[None]
    if base.shape[1:] != offsets.shape[1:] or base.shape[0] not in (1, offsets.shape[0]):
        raise ValueError(f'{name}: base_vertices {tuple(base.shape)} do not match offsets '
                         f'{tuple(offsets.shape)}')
    return base


class _TopologyLoss(BaseLoss):
    def __init__(self, faces: Optional[ArrayLike], model_data, loss_weight: float,
                 reduction: str) -> None:
        super().__init__(loss_weight, reduction)
        f = resolve_faces(faces, model_data, type(self).__name__)
        self.num_vertices = int(f.max()) + 1 if f.size else 0
        self.register_buffer('faces', torch.as_tensor(f), persistent=False)
        self.register_buffer('edges', torch.as_tensor(mesh_edges(f)), persistent=False)


@LOSSES.register_module()
class EdgeLengthRegularizer(_TopologyLoss):
    """Edge-wise smoothness of offsets or preservation of edge lengths.

    With edges ``(i, j)``, ``E`` of them:

    - ``'offset_difference'``: ``loss = E^-1 sum |o_i - o_j|^2`` (a membrane energy on
      the offsets; zero for a rigid translation of the whole mesh);
    - ``'length_change'``: ``loss = E^-1 sum (|y_i - y_j| - |x_i - x_j|)^2`` with
      ``y = x + o`` (needs ``base_vertices`` x; zero for any rigid motion).

    Args:
        faces: (F, 3) mesh faces, or ``model_data`` (model, data or path) to read them.
        mode: ``'offset_difference'`` or ``'length_change'``.
        loss_weight, reduction: see :class:`~.utils.BaseLoss`.
    """

    def __init__(self, faces: Optional[ArrayLike] = None, model_data=None,
                 mode: str = 'offset_difference', loss_weight: float = 1.0,
                 reduction: str = 'none') -> None:
        super().__init__(faces, model_data, loss_weight, reduction)
        check_choice('mode', mode, EDGE_LENGTH_MODES)
        self.mode = mode

    def forward(self, offsets: Tensor, base_vertices: Optional[Tensor] = None) -> Tensor:
        """(B, V, 3) offsets [+ (V, 3) or (B, V, 3) base vertices] -> (B,) loss."""
        _check_offsets(offsets, self.num_vertices, 'EdgeLengthRegularizer')
        i, j = self.edges[:, 0], self.edges[:, 1]
        if self.mode == 'offset_difference':
            d = offsets[:, i] - offsets[:, j]
            return self.finish((d * d).sum(-1).mean(1))
        base = _base_like(base_vertices, offsets, 'EdgeLengthRegularizer')
        y = base + offsets
        rest = (base[:, i] - base[:, j]).norm(dim=-1)
        # sqrt(.. + tiny) keeps the gradient finite for collapsed edges.
        cur = ((y[:, i] - y[:, j]).pow(2).sum(-1) + 1e-20).sqrt()
        return self.finish((cur - rest).pow(2).mean(1))


@LOSSES.register_module()
class LaplacianRegularizer(_TopologyLoss):
    """Uniform-Laplacian smoothness of the offsets.

    ``(L o)_i = o_i - mean_{j ~ i} o_j`` over the mesh neighbours of vertex ``i``;
    ``loss = V^-1 sum_i |(L o)_i|^2`` (vertices without neighbours count 0). Zero for
    constant offsets (a translation) and for offsets linear in the vertex positions on
    a regular grid; penalises spikes and noise.

    Args:
        faces / model_data, loss_weight, reduction: see :class:`EdgeLengthRegularizer`.
    """

    def __init__(self, faces: Optional[ArrayLike] = None, model_data=None,
                 loss_weight: float = 1.0, reduction: str = 'none') -> None:
        super().__init__(faces, model_data, loss_weight, reduction)
        e = self.edges
        deg = torch.bincount(e.reshape(-1), minlength=self.num_vertices).to(torch.float64)
        self.register_buffer('inv_degree', torch.where(deg > 0, 1.0 / deg.clamp_min(1), 0.0),
                             persistent=False)

    def laplacian(self, x: Tensor) -> Tensor:
        """(B, V, 3) -> (B, V, 3) uniform Laplacian ``x_i - mean(neighbours)`` (0 if isolated)."""
        i, j = self.edges[:, 0], self.edges[:, 1]
        nb = torch.zeros_like(x).index_add(1, i, x[:, j]).index_add(1, j, x[:, i])
        inv = self.inv_degree.to(x)[None, :, None]
        V = self.inv_degree.shape[0]
        xs = x[:, :V]
        lap = torch.where(inv > 0, xs - nb[:, :V] * inv, torch.zeros_like(xs))
        return lap

    def forward(self, offsets: Tensor, base_vertices: Optional[Tensor] = None) -> Tensor:
        """(B, V, 3) offsets -> (B,) loss (``base_vertices`` is accepted and unused)."""
        _check_offsets(offsets, self.num_vertices, 'LaplacianRegularizer')
        lap = self.laplacian(offsets)
        return self.finish((lap * lap).sum(-1).mean(1))


@LOSSES.register_module()
class MeshNormalConsistencyRegularizer(_TopologyLoss):
    """Normal consistency of adjacent faces of the offset mesh ``y = x + o``.

    For face pairs ``(f, g)`` sharing an edge, with unit normals ``n``, ``Q`` pairs:

    - ``'relative'`` (default): ``loss = Q^-1 sum (n_f(y).n_g(y) - n_f(x).n_g(x))^2``:
      creases of the template are kept, new ones are penalised;
    - ``'absolute'``: ``loss = Q^-1 sum (1 - n_f(y).n_g(y))`` (PyTorch3D's
      ``mesh_normal_consistency``: flatten every crease).

    Both need ``base_vertices`` x (V, 3) or (B, V, 3).

    Args:
        faces / model_data, loss_weight, reduction: see :class:`EdgeLengthRegularizer`.
        mode: ``'relative'`` or ``'absolute'``.
    """

    def __init__(self, faces: Optional[ArrayLike] = None, model_data=None,
                 mode: str = 'relative', loss_weight: float = 1.0,
                 reduction: str = 'none') -> None:
        super().__init__(faces, model_data, loss_weight, reduction)
        check_choice('mode', mode, NORMAL_CONSISTENCY_MODES)
        self.mode = mode
        self.register_buffer('face_pairs',
                             torch.as_tensor(adjacent_face_pairs(self.faces.numpy())),
                             persistent=False)

    def _cosines(self, vertices: Tensor) -> Tensor:
        n = face_normals(vertices, self.faces)
        return (n[:, self.face_pairs[:, 0]] * n[:, self.face_pairs[:, 1]]).sum(-1)

    def forward(self, offsets: Tensor, base_vertices: Optional[Tensor] = None) -> Tensor:
        """(B, V, 3) offsets and base vertices -> (B,) loss."""
        _check_offsets(offsets, self.num_vertices, 'MeshNormalConsistencyRegularizer')
        base = _base_like(base_vertices, offsets, 'MeshNormalConsistencyRegularizer')
        if self.face_pairs.shape[0] == 0:
            return self.finish(offsets.new_zeros(offsets.shape[0]))
        cos = self._cosines(base + offsets)
        if self.mode == 'absolute':
            return self.finish((1.0 - cos).mean(1))
        cos0 = self._cosines(base).detach()
        return self.finish((cos - cos0).pow(2).mean(1))


def offset_topology(faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Convenience: ``(edges (E, 2), face_pairs (Q, 2))`` of a mesh."""
    return mesh_edges(faces), adjacent_face_pairs(faces)


__all__ = ['EdgeLengthRegularizer', 'LaplacianRegularizer', 'MeshNormalConsistencyRegularizer',
           'mesh_edges', 'adjacent_face_pairs', 'offset_topology', 'resolve_faces',
           'EDGE_LENGTH_MODES', 'NORMAL_CONSISTENCY_MODES']
