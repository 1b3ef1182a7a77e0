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


def test_observed_points_are_the_3d_keypoints_else_the_2d_ones_triangulated():
    """Given 3D keypoints are taken as they are; all-NaN ones are no evidence, and the 2D
    keypoints are triangulated through the views' cameras, unless asked not to or without
    cameras (None)."""
    from smilfit.cameras import project_points
    from smilfit.datasets.synthetic import ring_cameras
    from smilfit.registrants.initialization import observed_points
    g = torch.Generator().manual_seed(1)
    points = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    import numpy as np
    cams = ring_cameras(3, target=np.zeros(3), up=np.array([0.0, 0.0, 1.0]), distance=10.0,
                        elevations_deg=[30, 40, 50], azimuths_deg=[0, 120, 240],
                        focal=1000.0, image_size=(1024, 1024))
    cams = {k: torch.as_tensor(cams[k], dtype=torch.float64) for k in ('K', 'R', 't')}
    uv = project_points(points[:, None].expand(2, 3, 5, 3), cams['K'], cams['R'],
                        cams['t'], None)
    obs = dict(keypoints_2d=uv, **cams)
    torch.testing.assert_close(observed_points(dict(obs, keypoints_3d=points + 1.0)),
                               points + 1.0)
    nan = torch.full_like(points, float('nan'))
    torch.testing.assert_close(observed_points(dict(obs, keypoints_3d=nan)), points)
    assert observed_points(obs, triangulate=False) is None
    assert observed_points(dict(keypoints_2d=uv)) is None
