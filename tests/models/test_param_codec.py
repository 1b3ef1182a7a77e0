"""BodyParamCodec / CameraCodec: layouts, round trips and hand-computed cameras."""
import math

import pytest
import torch

from smilfit.body_models.rotations import axis_angle_to_matrix
from smilfit.cameras import WeakPerspectiveCameras, project_points
from smilfit.models import BodyParamCodec, CameraCodec, upright_orientation


@pytest.mark.parametrize('rotation', ['6d', 'axis_angle'])
def test_body_codec_round_trip(rotation):
    codec = BodyParamCodec(num_joints=5, num_betas=3, rotation=rotation,
                           per_joint_scale='direct', per_joint_trans='pca',
                           num_trans_weights=2, length_scale=10.0)
    rot = 6 if rotation == '6d' else 3
    assert codec.dim == rot + 4 * rot + 3 + 3 + 15 + 2
    params = dict(global_orient=0.5 * torch.randn(2, 3, dtype=torch.float64),
                  body_pose=0.5 * torch.randn(2, 4, 3, dtype=torch.float64),
                  betas=torch.randn(2, 3, dtype=torch.float64),
                  transl=torch.randn(2, 3, dtype=torch.float64),
                  log_scale=torch.randn(2, 5, 3, dtype=torch.float64),
                  trans_weights=torch.randn(2, 2, dtype=torch.float64))
    vec = codec.encode(params)
    assert vec.shape == (2, codec.dim)
    # transl is stored in units of length_scale.
    assert torch.allclose(codec.split(vec)['transl'], params['transl'] / 10.0)
    out = codec.decode(vec)
    assert torch.allclose(out['global_orient'], axis_angle_to_matrix(params['global_orient']),
                          atol=1e-10)
    assert torch.allclose(out['body_pose'], axis_angle_to_matrix(params['body_pose']),
                          atol=1e-10)
    for key in ('betas', 'transl', 'log_scale', 'trans_weights'):
        assert torch.allclose(out[key], params[key])


def test_body_codec_init_vector_and_errors():
    go = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    codec = BodyParamCodec(num_joints=3, num_betas=2, init_global_orient=go,
                           init_transl=(1.0, 2.0, 3.0), length_scale=2.0)
    out = codec.decode(codec.init_vector[None].double())
    assert torch.allclose(out['global_orient'][0], axis_angle_to_matrix(go), atol=1e-6)
    assert torch.allclose(out['body_pose'][0], torch.eye(3, dtype=torch.float64).expand(2, 3, 3),
                          atol=1e-7)
    assert torch.allclose(out['transl'][0], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert torch.all(out['betas'] == 0)
    with pytest.raises(ValueError, match='body vector must be'):
        codec.decode(torch.zeros(1, codec.dim + 1))
    with pytest.raises(ValueError, match='rotation'):
        BodyParamCodec(3, 2, rotation='quat')
    with pytest.raises(ValueError, match='num_scale_weights'):
        BodyParamCodec(3, 2, per_joint_scale='pca')


@pytest.mark.parametrize('up', ['z', 'y', '-y', 'x'])
def test_upright_orientation_maps_up_to_image_up(up):
    R = axis_angle_to_matrix(upright_orientation(up))
    u = torch.zeros(3, dtype=torch.float64)
    u['xyz'.index(up[-1])] = -1.0 if up.startswith('-') else 1.0
    assert torch.allclose(R @ u, torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64),
                          atol=1e-12)


def test_default_perspective_camera_hand_computed():
    codec = CameraCodec(model='perspective', init='default', fov_deg=90.0, distance=5.0)
    assert codec.dim == 10
    vec = codec.init_vector.expand(1, 2, -1).clone()
    vec[0, 1, 6:10] = torch.tensor([0.1, -0.2, math.log(2.0), math.log(0.5)])
    cams = codec.decode(vec, torch.tensor([80, 60]))
    # fov 90 deg across the shorter side (60 px): f = 30 px; centre ((W-1)/2, (H-1)/2).
    K0 = torch.tensor([[30.0, 0, 39.5], [0, 30.0, 29.5], [0, 0, 1]])
    assert torch.allclose(cams['K'][0, 0], K0)
    assert torch.allclose(cams['R'][0, 0], torch.eye(3))
    assert torch.allclose(cams['t'][0, 0], torch.tensor([0.0, 0.0, 5.0]))
    # View 1: t = d (x, y, exp(z)) = (0.5, -1, 10), f halved.
    assert torch.allclose(cams['t'][0, 1], torch.tensor([0.5, -1.0, 10.0]), atol=1e-6)
    assert torch.allclose(cams['K'][0, 1, 0, 0], torch.tensor(15.0))
    assert torch.all(cams['dist'] == 0)


def test_calibrated_camera_zero_correction_is_exact_and_correction_composes():
    torch.manual_seed(0)
    cal = dict(K=torch.tensor([[[50.0, 0, 31.5], [0, 55.0, 30.0], [0, 0, 1]]]).expand(1, 2, 3, 3),
               R=axis_angle_to_matrix(torch.randn(1, 2, 3)), t=torch.randn(1, 2, 3),
               dist=torch.randn(1, 2, 5) * 0.01)
    fixed = CameraCodec(init='calibrated', predict=False, distance=2.0)
    assert fixed.dim == 0
    cams = fixed.decode(None, torch.tensor([64, 64]), cal, (1, 2))
    for k in ('K', 'R', 't', 'dist'):
        assert torch.allclose(cams[k], cal[k])
    refine = CameraCodec(init='calibrated', predict=True, distance=2.0)
    vec = refine.init_vector.expand(1, 2, -1).clone()
    cams = refine.decode(vec, torch.tensor([64, 64]), cal)
    assert torch.allclose(cams['R'], cal['R'], atol=1e-6)
    vec[..., 6:9] = torch.tensor([0.5, 0.0, 0.0])
    vec[..., 9] = math.log(2.0)
    cams = refine.decode(vec, torch.tensor([64, 64]), cal)
    assert torch.allclose(cams['t'], cal['t'] + torch.tensor([1.0, 0, 0]), atol=1e-6)
    assert torch.allclose(cams['K'][0, 0, 1, 1], torch.tensor(110.0))
    assert torch.allclose(cams['K'][0, 0, :2, 2], cal['K'][0, 0, :2, 2])
    with pytest.raises(ValueError, match='calibrated'):
        refine.decode(vec, torch.tensor([64, 64]), None)
    with pytest.raises(ValueError, match='weak-perspective'):
        CameraCodec(model='weak_perspective', init='calibrated')


def test_weak_perspective_stand_in_matches_weak_projection():
    codec = CameraCodec(model='weak_perspective', predict_rotation=False, fov_deg=40.0,
                        distance=3.0, weak_focal=1e6)
    vec = torch.tensor([[[0.2, 0.1, -0.05]]], dtype=torch.float64)
    size = torch.tensor([64, 48])
    cams = codec.decode(vec, size)
    f0 = 48 / (2 * math.tan(math.radians(20.0)))
    s = 2 * f0 / (3.0 * 64) * math.exp(0.2)
    weak = WeakPerspectiveCameras(s=s, tx=0.3, ty=-0.15, image_size=(64, 48),
                                  dtype=torch.float64)
    pts = torch.tensor([[0.1, -0.2, 0.0], [0.3, 0.25, 0.0]], dtype=torch.float64)
    expected = weak.project(pts)[0]
    got = project_points(pts, cams['K'][0, 0], cams['R'][0, 0], cams['t'][0, 0])
    assert torch.allclose(got, expected, atol=1e-6)
