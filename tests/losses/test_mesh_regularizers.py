"""Offset regularisers: edge length, Laplacian, normal consistency."""
import math

import numpy as np
import pytest
import torch

from smilfit.body_models import demo_model_data
from smilfit.losses import (EdgeLengthRegularizer, LaplacianRegularizer,
                            MeshNormalConsistencyRegularizer)
from smilfit.losses.mesh_regularizers import adjacent_face_pairs, mesh_edges
from smilfit.registry import LOSSES

DT = torch.float64
# Two triangles sharing edge (1, 2): a unit square in the z = 0 plane.
SQUARE_FACES = np.array([[0, 1, 2], [2, 1, 3]])
SQUARE = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=DT)


def rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=DT)


def test_topology():
    assert mesh_edges(SQUARE_FACES).tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]
    assert np.sort(adjacent_face_pairs(SQUARE_FACES), axis=1).tolist() == [[0, 1]]


def test_edge_offset_difference_hand_computed():
    loss = EdgeLengthRegularizer(faces=SQUARE_FACES)
    assert loss(torch.ones(1, 4, 3, dtype=DT) * 3.0).abs().max() == 0  # translation
    off = torch.zeros(1, 4, 3, dtype=DT)
    off[0, 3, 2] = 2.0  # vertex 3 has edges to 1 and 2: 2 of 5 edges differ by 2
    torch.testing.assert_close(loss(off), torch.tensor([2 * 4.0 / 5], dtype=DT))


def test_edge_length_change():
    loss = EdgeLengthRegularizer(faces=SQUARE_FACES, mode='length_change')
    rigid = SQUARE @ rot_z(0.7).T + torch.tensor([1.0, 2.0, 3.0], dtype=DT) - SQUARE
    assert loss(rigid[None], base_vertices=SQUARE).abs().max() < 1e-24
    # scaling by 2 lengthens every edge by its length: 1, 1, 2 (diag), 1, 1 -> mean 6/5
    torch.testing.assert_close(loss(SQUARE[None], base_vertices=SQUARE),
                               torch.tensor([6 / 5], dtype=DT))
    with pytest.raises(ValueError, match='base_vertices'):
        loss(SQUARE[None])


def test_laplacian_hand_computed():
    loss = LaplacianRegularizer(faces=SQUARE_FACES)
    assert loss(torch.full((2, 4, 3), 5.0, dtype=DT)).abs().max() == 0
    off = torch.zeros(1, 4, 3, dtype=DT)
    off[0, 0, 0] = 1.0
    # vertex 0 (neighbours 1, 2): 1 - 0 = 1; vertex 1 (0, 2, 3): -1/3; vertex 2 (0, 1, 3):
    # -1/3; vertex 3 (1, 2): 0 -> mean of squares (1 + 1/9 + 1/9) / 4
    torch.testing.assert_close(loss(off), torch.tensor([(1 + 2 / 9) / 4], dtype=DT))


def test_normal_consistency_modes():
    rel = MeshNormalConsistencyRegularizer(faces=SQUARE_FACES)
    ab = MeshNormalConsistencyRegularizer(faces=SQUARE_FACES, mode='absolute')
    zero = torch.zeros(1, 4, 3, dtype=DT)
    assert rel(zero, base_vertices=SQUARE).abs().max() == 0
    assert ab(zero, base_vertices=SQUARE).abs().max() < 1e-15
    fold = zero.clone()
    # Lift the far corner by 1: it is sqrt(2)/2 from the hinge (the diagonal 1-2), so
    # the second face tilts by atan(sqrt(2)), whose cosine is 1/sqrt(3).
    fold[0, 3, 2] = 1.0
    c = 1 / math.sqrt(3)
    torch.testing.assert_close(ab(fold, base_vertices=SQUARE),
                               torch.tensor([1 - c], dtype=DT))
    torch.testing.assert_close(rel(fold, base_vertices=SQUARE),
                               torch.tensor([(1 - c) ** 2], dtype=DT))
    # rigid motion of the folded mesh keeps the relative term at zero
    folded = SQUARE + fold[0]
    moved = folded @ rot_z(1.1).T - folded
    assert rel(moved[None], base_vertices=folded).abs().max() < 1e-20


def test_model_data_route_and_gradients():
    data = demo_model_data()
    for cfg in (dict(type='LaplacianRegularizer'), dict(type='EdgeLengthRegularizer'),
                dict(type='MeshNormalConsistencyRegularizer')):
        loss = LOSSES.build(dict(cfg, model_data=data))
        off = (1e-2 * torch.randn(2, data.num_vertices, 3, dtype=DT)).requires_grad_()
        value = loss(off, base_vertices=torch.as_tensor(data.v_template))
        assert value.shape == (2,) and (value > 0).all()
        value.sum().backward()
        assert torch.isfinite(off.grad).all()
    with pytest.raises(ValueError, match='exactly one'):
        LaplacianRegularizer()
