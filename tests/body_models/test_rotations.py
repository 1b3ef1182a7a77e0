"""Rotation conversions: round trips, edge angles, the 6D convention, gradients at zero."""
import math

import pytest
import torch

from smilfit.body_models.rotations import (axis_angle_to_matrix, matrix_to_axis_angle,
                                           matrix_to_quaternion, matrix_to_rotation_6d,
                                           rotation_6d_to_matrix, to_rotation_matrix)


def random_axis_angle(n, max_angle=math.pi - 1e-3, seed=0):
    g = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64),
                                         dim=-1)
    angle = torch.rand(n, 1, generator=g, dtype=torch.float64) * max_angle
    return axis * angle


def test_axis_angle_matches_roma_and_is_orthonormal():
    roma = pytest.importorskip('roma')
    aa = random_axis_angle(500)
    R = axis_angle_to_matrix(aa)
    torch.testing.assert_close(R, roma.rotvec_to_rotmat(aa))
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye)
    assert torch.allclose(torch.linalg.det(R), torch.ones(500, dtype=torch.float64))


def test_column_vector_convention():
    """A +90 degree turn about z maps x to y (x' = R x)."""
    R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    torch.testing.assert_close(R @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                               torch.tensor([0.0, 1, 0], dtype=torch.float64))


@pytest.mark.parametrize('max_angle', [1e-6, 1.0, math.pi - 1e-6])
def test_axis_angle_round_trip(max_angle):
    aa = random_axis_angle(200, max_angle)
    back = matrix_to_axis_angle(axis_angle_to_matrix(aa))
    torch.testing.assert_close(axis_angle_to_matrix(back), axis_angle_to_matrix(aa))
    if max_angle < 3:
        torch.testing.assert_close(back, aa, atol=1e-9, rtol=1e-7)


def test_quaternion_at_pi_is_stable():
    R = axis_angle_to_matrix(torch.tensor([[math.pi, 0, 0], [0, math.pi, 0],
                                           [0, 0, math.pi]], dtype=torch.float64))
    q = matrix_to_quaternion(R)
    assert torch.allclose(q[:, 0], torch.zeros(3, dtype=torch.float64), atol=1e-7)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(3, dtype=torch.float64))


def test_6d_is_first_two_columns_and_round_trips():
    R = axis_angle_to_matrix(random_axis_angle(50))
    d6 = matrix_to_rotation_6d(R)
    torch.testing.assert_close(d6[:, :3], R[:, :, 0])
    torch.testing.assert_close(d6[:, 3:], R[:, :, 1])
    torch.testing.assert_close(rotation_6d_to_matrix(d6), R)
    # Gram-Schmidt repairs non-orthonormal input.
    noisy = rotation_6d_to_matrix(d6 * 3.0 + 0.01)
    torch.testing.assert_close(noisy @ noisy.transpose(-1, -2),
                               torch.eye(3, dtype=torch.float64).expand_as(noisy))


def test_gradient_finite_at_identity():
    aa = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa,))
    small = (torch.randn(4, 3, dtype=torch.float64) * 1e-5).requires_grad_(True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (small,))


def test_to_rotation_matrix_uses_rank_not_trailing_shape():
    three_aa = torch.zeros(3, 3)  # a batch of three axis-angles, not one matrix
    assert to_rotation_matrix(three_aa, 1).shape == (3, 3, 3)
    assert to_rotation_matrix(torch.eye(3).expand(3, 3, 3), 1).shape == (3, 3, 3)
    assert to_rotation_matrix(torch.zeros(2, 5, 6), 2).shape == (2, 5, 3, 3)
    with pytest.raises(ValueError, match='pose'):
        to_rotation_matrix(torch.zeros(2, 4), 1, 'pose')
