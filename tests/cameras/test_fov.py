"""FoV perspective and weak-perspective cameras, and their conversions to pinhole cameras."""
import math

import pytest
import torch

from smilfit.cameras import (FoVPerspectiveCameras, PinholeCameras, WeakPerspectiveCameras,
                             fov_to_pinhole, pinhole_to_fov, weak_perspective_to_pinhole,
                             weak_perspective_translation)
from smilfit.registry import CAMERAS

from .helpers import random_points, random_rotations

DT = torch.float64


def fov_cameras(image_size, C=3, learnable=()):
    R = random_rotations(C, seed=5)
    # Objects about 3 units in front of the camera along view +Z.
    T = torch.tensor([0.1, -0.2, 3.0], dtype=DT) + 0.1 * random_points(1, C, seed=6)[0] / 60
    fov = torch.linspace(30.0, 70.0, C, dtype=DT)
    return FoVPerspectiveCameras(fov=fov, R=R, T=T, image_size=image_size, learnable=learnable)


@pytest.mark.parametrize('image_size', [(256, 256), (640, 480), (480, 640)])
def test_fov_geometry_follows_pytorch3d_convention(image_size):
    W, H = image_size
    fov = 50.0
    cam = FoVPerspectiveCameras(fov=fov, image_size=image_size, dtype=DT)  # R = I, T = 0
    z = 4.0
    tan_half = math.tan(math.radians(fov) / 2)
    on_axis = torch.tensor([[0.0, 0.0, z]], dtype=DT)
    torch.testing.assert_close(cam.project(on_axis)[0, 0],
                               torch.tensor([(W - 1) / 2, (H - 1) / 2], dtype=DT))
    # fov spans the shorter side: a ray at fov / 2 hits that side's edge (pixel edge, -0.5).
    S = min(W, H)
    up = torch.tensor([[0.0, z * tan_half, z]], dtype=DT)     # +Y_view is up
    left = torch.tensor([[z * tan_half, 0.0, z]], dtype=DT)   # +X_view is left
    v_up = cam.project(up)[0, 0, 1]
    u_left = cam.project(left)[0, 0, 0]
    torch.testing.assert_close(v_up, torch.tensor(H / 2 - S / 2 - 0.5, dtype=DT))
    torch.testing.assert_close(u_left, torch.tensor(W / 2 - S / 2 - 0.5, dtype=DT))
    if H <= W:  # landscape / square: fov is the vertical field of view
        torch.testing.assert_close(v_up, torch.tensor(-0.5, dtype=DT))
    ndc = cam.project_ndc(torch.cat([up, left]))
    torch.testing.assert_close(ndc[0], torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=DT))
    torch.testing.assert_close(cam.focal_length_pixels(),
                               torch.tensor([S / (2 * tan_half)], dtype=DT))


def test_row_vector_world_to_view():
    cam = fov_cameras((320, 240))
    X = random_points(2, 5, scale=0.3)
    view = cam.world_to_view(X)
    assert view.shape == (2, 3, 5, 3)
    for c in range(3):
        torch.testing.assert_close(view[:, c], X @ cam.R[c] + cam.T[c])
    assert (cam.depth(X) > 0).all()


@pytest.mark.parametrize('image_size', [(256, 256), (640, 480), (480, 640)])
def test_fov_to_pinhole_agrees_and_round_trips(image_size):
    cam = fov_cameras(image_size)
    X = random_points(2, 20, scale=0.3)
    pin = cam.to_pinhole()
    assert isinstance(pin, PinholeCameras)
    torch.testing.assert_close(pin.project(X), cam.project(X), atol=1e-9, rtol=0)
    torch.testing.assert_close(pin.depth(X), cam.depth(X))
    K = pin.K
    torch.testing.assert_close(K[:, 0, 0], K[:, 1, 1])
    assert (K[:, 0, 2] == (image_size[0] - 1) / 2).all()
    back = pinhole_to_fov(pin)
    torch.testing.assert_close(back.fov, cam.fov)
    torch.testing.assert_close(back.R, cam.R)
    torch.testing.assert_close(back.T, cam.T)
    torch.testing.assert_close(back.project(X), cam.project(X), atol=1e-9, rtol=0)
    same = fov_to_pinhole(cam.fov, cam.R, cam.T, image_size)
    torch.testing.assert_close(same.project(X), pin.project(X))


def test_pinhole_to_fov_rejects_what_has_no_fov_form():
    base = dict(fx=500.0, fy=500.0, cx=319.5, cy=239.5, image_size=[640, 480], dtype=DT)
    pinhole_to_fov(PinholeCameras(**base))  # fine
    cases = {'fx != fy': dict(fy=510.0), 'skew': dict(skew=1.0),
             'principal point': dict(cx=320.0), 'distortion': dict(dist=[0.1, 0, 0, 0, 0])}
    for message, change in cases.items():
        with pytest.raises(ValueError, match=message):
            pinhole_to_fov(PinholeCameras(**{**base, **change}))
    with pytest.raises(ValueError, match='image_size'):
        pinhole_to_fov(PinholeCameras(fx=500.0, fy=500.0, dtype=DT))


def test_fov_conversion_is_differentiable_and_learnable():
    fov = torch.tensor([45.0], dtype=DT, requires_grad=True)
    pin = fov_to_pinhole(fov, torch.eye(3, dtype=DT), torch.tensor([0.0, 0.0, 3.0], dtype=DT),
                         (256, 256))
    pin.project(torch.tensor([[0.2, 0.1, 0.0]], dtype=DT)).sum().backward()
    assert fov.grad is not None and fov.grad.abs() > 0
    cam = fov_cameras((256, 256), learnable=('fov', 'R', 'T'))
    assert {n for n, _ in cam.named_parameters()} == {'fov', 'rvec', 'T'}
    cam.project(random_points(1, 4, scale=0.3)).sum().backward()
    assert all(p.grad is not None for p in cam.parameters())
    with pytest.raises(ValueError, match='fov'):
        FoVPerspectiveCameras(fov=180.0)


def test_registry_builds_regressor_cameras():
    cam = CAMERAS.build(dict(type='FoVPerspectiveCameras', fov=60.0, T=[0.0, 0.0, 3.0],
                             image_size=[256, 256]))
    assert isinstance(cam, FoVPerspectiveCameras)
    weak = CAMERAS.build(dict(type='WeakPerspectiveCameras', s=0.9, image_size=[224, 224]))
    assert isinstance(weak, WeakPerspectiveCameras)


# ----------------------------------------------------------------- weak perspective
def test_weak_perspective_pixel_mapping():
    W, H = 200, 100
    cam = WeakPerspectiveCameras(s=1.0, tx=0.0, ty=0.0, image_size=(W, H), dtype=DT)
    corners = torch.tensor([[-1.0, -1.0, 5.0], [1.0, 1.0, -5.0], [0.0, 0.0, 0.0]], dtype=DT)
    uv = cam.project(corners)[0]
    expected = torch.tensor([[-0.5, -0.5], [W - 0.5, H - 0.5], [(W - 1) / 2, (H - 1) / 2]],
                            dtype=DT)
    torch.testing.assert_close(uv, expected)
    cam2 = WeakPerspectiveCameras(s=2.0, tx=0.1, ty=-0.2, image_size=(W, H), dtype=DT)
    torch.testing.assert_close(cam2.project_normalized(corners)[0, 0],
                               torch.tensor([2.0 * (-0.9), 2.0 * (-1.2)], dtype=DT))


def test_weak_perspective_translation_formula():
    t = weak_perspective_translation(torch.tensor([0.8, 1.2]), torch.tensor([0.1, 0.0]),
                                     torch.tensor([-0.1, 0.3]), 224, 5000.0)
    torch.testing.assert_close(t[:, 2], 2 * 5000.0 / (224 * torch.tensor([0.8, 1.2])))
    torch.testing.assert_close(t[:, :2], torch.tensor([[0.1, -0.1], [0.0, 0.3]]))


@pytest.mark.parametrize('image_size', [(224, 224), (256, 192)])
def test_weak_perspective_to_pinhole_agrees(image_size):
    g = torch.Generator().manual_seed(0)
    cam_vec = torch.tensor([[0.9, 0.05, -0.1], [1.3, -0.2, 0.15]], dtype=DT)
    weak = WeakPerspectiveCameras.from_vector(cam_vec, image_size)
    flat = torch.rand(1, 30, 3, generator=g, dtype=DT) - 0.5
    flat[..., 2] = 0.0
    pin = weak.to_pinhole(focal_length=5000.0)
    # Exact for points at Z = 0.
    torch.testing.assert_close(pin.project(flat), weak.project(flat), atol=1e-9, rtol=0)
    # Approximate for a body of depth ~1 unit; the gap shrinks with the focal length.
    body = torch.rand(1, 30, 3, generator=g, dtype=DT) - 0.5
    gap_5k = (pin.project(body) - weak.project(body)).abs().max()
    gap_1m = (weak_perspective_to_pinhole(cam_vec[:, 0], cam_vec[:, 1], cam_vec[:, 2],
                                          image_size, 1e6).project(body)
              - weak.project(body)).abs().max()
    assert gap_5k < 2.0 and gap_1m < 1e-2 and gap_1m < gap_5k / 50
    K = pin.K
    W, H = image_size
    torch.testing.assert_close(K[:, 1, 1] / K[:, 0, 0], torch.full((2,), H / W, dtype=DT))


def test_weak_perspective_gradients_reach_the_regressor_output():
    cam_vec = torch.tensor([[0.9, 0.05, -0.1]], dtype=DT, requires_grad=True)
    weak = WeakPerspectiveCameras.from_vector(cam_vec, (224, 224))
    X = random_points(1, 5, scale=0.3)
    weak.project(X, per_camera=True).sum().backward()
    assert torch.isfinite(cam_vec.grad).all() and cam_vec.grad.abs().sum() > 0
    cam_vec.grad = None
    weak.to_pinhole().project(X, per_camera=True).sum().backward()
    assert cam_vec.grad.abs().sum() > 0
    learn = WeakPerspectiveCameras(s=1.0, learnable=['s', 'tx'])
    assert {n for n, _ in learn.named_parameters()} == {'s', 'tx'}
