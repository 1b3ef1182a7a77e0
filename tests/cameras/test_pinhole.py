"""PinholeCameras: construction, registry, learnable parameters, projection, device/dtype."""
import pytest
import torch

from smilfit.cameras import (CameraGroup, PinholeCameras, project_points, projection_matrices,
                             undistort_pixels)
from smilfit.registry import CAMERAS
from smilfit.utils import setup_env

from .helpers import random_points, ring_cameras


@pytest.fixture
def cams():
    K, R, t, dist, (W, H) = ring_cameras(C=3)
    return PinholeCameras(K=K, R=R, t=t, dist=dist, image_size=[W, H]), (K, R, t, dist)


def test_registry_builds_pinhole_cameras_from_a_config():
    cams = CAMERAS.build(dict(type='PinholeCameras', fx=1000.0, fy=1000.0, cx=639.5, cy=511.5,
                              t=[[0.0, 0.0, 500.0], [10.0, 0.0, 500.0]],
                              image_size=[1280, 1024], learnable=['t']))
    assert isinstance(cams, PinholeCameras) and len(cams) == 2
    assert [n for n, _ in cams.named_parameters()] == ['t']
    uv = cams.project(torch.zeros(1, 3))
    torch.testing.assert_close(uv[0, 0], torch.tensor([639.5, 511.5]))
    torch.testing.assert_close(uv[1, 0], torch.tensor([639.5 + 20.0, 511.5]))
    assert cams.image_size.tolist() == [[1280, 1024], [1280, 1024]]


def test_cameras_are_registered_where_smilfit_looks_for_them():
    assert 'smilfit.cameras' in setup_env.REGISTERING_PACKAGES
    assert 'smilfit.cameras' in CAMERAS._locations
    for name in ('PinholeCameras', 'CameraGroup', 'FoVPerspectiveCameras',
                 'WeakPerspectiveCameras', 'AniposeCalibration'):
        assert CAMERAS.get(name) is not None, name


def test_matrices_and_projection_match_pure_functions(cams):
    cam, (K, R, t, dist) = cams
    m = cam.to_matrices()
    torch.testing.assert_close(m.K, K)
    torch.testing.assert_close(m.R, R)
    torch.testing.assert_close(m.t, t)
    torch.testing.assert_close(m.dist, dist)
    X = random_points(2, 7)
    uv = cam.project(X)
    assert uv.shape == (2, 3, 7, 2)
    torch.testing.assert_close(uv, project_points(X[:, None], K, R, t, dist))
    depth = (X[:, None, None, 0] @ R.transpose(-1, -2))[..., 0, 2] + t[:, 2]
    torch.testing.assert_close(cam.depth(X)[:, :, 0], depth)
    torch.testing.assert_close(cam.undistort(uv), undistort_pixels(uv, K, dist))
    torch.testing.assert_close(cam.projection_matrices(), projection_matrices(R, t, K))
    # per_camera: one point set per camera.
    per = cam.project(X[0].expand(3, 7, 3), per_camera=True)
    torch.testing.assert_close(per, uv[0])


def test_learnable_rotation_and_intrinsics_get_gradients(cams):
    cam, (K, R, t, dist) = cams
    fit = PinholeCameras(K=K, R=R, t=t, dist=dist, learnable=('extrinsics', 'focal', 'dist'))
    names = {n for n, _ in fit.named_parameters()}
    assert names == {'rvec', 't', 'fx', 'fy', 'dist'}
    torch.testing.assert_close(fit.R, R)  # axis-angle storage reproduces the rotation
    X = random_points(1, 5)
    loss = fit.project(X).square().sum()
    loss.backward()
    for name, p in fit.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # Buffers stay buffers and do not get gradients.
    assert fit.cx.requires_grad is False


def test_rvec_input_and_validation():
    K, R, t, dist, _ = ring_cameras(C=2)
    rvec = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]], dtype=torch.float64)
    cam = PinholeCameras(K=K, rvec=rvec, t=t)
    assert torch.allclose(cam.R[1], torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match='either R or rvec'):
        PinholeCameras(K=K, R=R, rvec=rvec)
    bad = K.clone()
    bad[0, 2, 2] = 2.0
    with pytest.raises(ValueError, match='K must be'):
        PinholeCameras(K=bad)
    with pytest.raises(ValueError, match='unknown learnable'):
        PinholeCameras(K=K, learnable=['focal_length'])
    with pytest.raises(ValueError, match='cameras'):
        PinholeCameras(K=K, t=torch.zeros(3, 3))
    with pytest.raises(ValueError, match='non-zero'):
        PinholeCameras(fx=0.0, fy=1.0)


def test_single_camera_shapes_and_dtype_inference():
    cam = PinholeCameras(K=torch.eye(3), t=torch.tensor([0.0, 0.0, 2.0]))
    assert len(cam) == 1 and cam.K.dtype == torch.float32
    assert cam.image_size is None
    assert cam.project(torch.tensor([[1.0, 0.5, 0.0]])).shape == (1, 1, 2)


def test_to_dtype_and_state_dict(cams):
    cam, _ = cams
    cam32 = cam.to(torch.float32)
    assert cam32.K.dtype == torch.float32 and cam32.image_size.dtype == torch.long
    state = cam.state_dict()
    assert {'fx', 'fy', 'cx', 'cy', 'skew', 'rotation_matrix', 't', 'dist',
            'image_size'} <= set(state)
    clone = PinholeCameras(K=torch.eye(3, dtype=torch.float64).expand(3, 3, 3), image_size=[1, 1])
    clone.load_state_dict(state)
    X = random_points(1, 4)
    torch.testing.assert_close(clone.project(X), cam.project(X))


def test_camera_group_to_pinhole_is_learnable():
    K, R, t, dist, (W, H) = ring_cameras(C=2)
    group = CameraGroup(['a', 'b'], K, dist, R=R, t=t, image_sizes=[[W, H]] * 2)
    cam = group.to_pinhole(learnable=['R', 't'])
    X = random_points(1, 6)
    torch.testing.assert_close(cam.project(X), group.project(X))
    assert {n for n, _ in cam.named_parameters()} == {'rvec', 't'}
