"""Initial global pose: weighted Kabsch / Umeyama alignment."""
import torch

from smilfit.registrants.initialization import rigid_align


def test_rigid_align_with_scale_recovers_a_similarity():
    from smilfit.body_models.rotations import axis_angle_to_matrix
    g = torch.Generator().manual_seed(0)
    src = torch.randn(2, 10, 3, generator=g, dtype=torch.float64)
    R = axis_angle_to_matrix(torch.tensor([[0.3, -0.2, 1.0], [2.0, 0.1, 0.0]], dtype=torch.float64))
    s = torch.tensor([40.0, 0.5], dtype=torch.float64)
    t = torch.tensor([[1.0, 2.0, 3.0], [-5.0, 0.0, 1.0]], dtype=torch.float64)
    dst = s[:, None, None] * (src @ R.transpose(1, 2)) + t[:, None]
    dst[0, 3] = float('nan')
    R_, t_, s_ = rigid_align(src, dst, with_scale=True)
    torch.testing.assert_close(R_, R)
    torch.testing.assert_close(s_, s)
    torch.testing.assert_close(t_, t)
